using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Converge.Common;

/// <summary>
/// A TCP port served on raw sockets: bind, an accept loop, one session per connection, and an orderly stop (stop
/// accepting and reading, let every session answer what it started, cut the ones still running when the caller's time
/// is up). The peer and NBD ports use it instead of Kestrel, whose socket transport receives into 4 KiB pool blocks and
/// hops between its I/O queue and the thread pool on every receive and send.
/// </summary>
public abstract class SocketListener : IAsyncDisposable
{
    private readonly EndPoint _endPoint;
    private readonly string _purpose;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Socket, Task> _sessions = new();
    private Socket? _socket;
    private Task _acceptLoop = Task.CompletedTask;

    /// <param name="purpose">Who connects, for the bind error: "peers", "NBD clients".</param>
    protected SocketListener(EndPoint endPoint, string purpose)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        _endPoint = endPoint;
        _purpose = purpose;
    }

    /// <summary>The bound address (with the actual port when the end point asked for port 0).</summary>
    public EndPoint LocalEndPoint => _socket?.LocalEndPoint ?? _endPoint;

    /// <summary>Fires when the listener stops: sessions stop reading new requests.</summary>
    protected CancellationToken Stopping => _stop.Token;

    /// <summary>Binds and starts accepting.</summary>
    /// <exception cref="IOException">The port cannot be bound; the message names the address and the reason.</exception>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        var socket = new Socket(_endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (_endPoint is IPEndPoint { Address: var address } && address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(_endPoint);
            socket.Listen(512);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new IOException($"cannot listen for {_purpose} on {_endPoint}: {e.Message}.", e);
        }

        _socket = socket;
        _acceptLoop = Task.Run(AcceptLoopAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    /// <summary>
    /// Stops accepting and reading requests, and waits for the requests in flight to be answered; when
    /// <paramref name="cancellationToken"/> fires first, cuts the connections that are still answering.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }

        await _stop.CancelAsync().ConfigureAwait(false);
        _socket?.Dispose();
        await _acceptLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        try
        {
            await Task.WhenAll(_sessions.Values).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Out of time: cut the connections that are still answering.
            foreach (var connection in _sessions.Keys)
            {
                connection.Dispose();
            }

            await Task.WhenAll(_sessions.Values).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stop.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Serves one accepted connection until it ends or <see cref="Stopping"/> fires; owns the socket.</summary>
    protected abstract Task ServeAsync(Socket connection);

    /// <summary>An accept that failed (the loop goes on).</summary>
    protected abstract void OnAcceptFailed(SocketException exception);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _socket!.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                OnAcceptFailed(e);
                continue;
            }

            connection.NoDelay = true;

            // Registered before it starts, so a session that ends at once cannot be removed before it was added.
            var session = new Task<Task>(() => RunAsync(connection));
            _sessions[connection] = session.Unwrap();
            session.Start(TaskScheduler.Default);
        }
    }

    private async Task RunAsync(Socket connection)
    {
        try
        {
            await ServeAsync(connection).ConfigureAwait(false);
        }
        finally
        {
            _sessions.TryRemove(connection, out _);
        }
    }
}
