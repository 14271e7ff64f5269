using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>
/// The NBD port: its own accept loop and one <see cref="NbdSession"/> per connection on the raw socket. Not hosted in
/// Kestrel, for the reasons the peer port left it: Kestrel's socket transport receives into 4 KiB pool blocks and
/// hops between its I/O queue and the thread pool on every receive and send. Stopping ends every session's reading;
/// requests already running still finish and are answered, then the connections close.
/// </summary>
public sealed class NbdListener : IAsyncDisposable
{
    private readonly EndPoint _endPoint;
    private readonly INbdExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Socket, Task> _sessions = new();
    private Socket? _socket;
    private Task _acceptLoop = Task.CompletedTask;
    private long _connectionIds;

    public NbdListener(EndPoint endPoint, INbdExportCatalog catalog, NbdServerOptions options, ILogger<NbdListener> logger)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        options.Validate();
        _endPoint = endPoint;
        _catalog = catalog;
        _options = options;
        _logger = logger;
    }

    /// <summary>The bound address (with the actual port when the end point asked for port 0).</summary>
    public EndPoint LocalEndPoint => _socket?.LocalEndPoint ?? _endPoint;

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
            throw new IOException($"cannot listen for NBD clients on {_endPoint}: {e.Message}.", e);
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

        await _stop.CancelAsync();
        _socket?.Dispose();
        await _acceptLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        try
        {
            await Task.WhenAll(_sessions.Values).WaitAsync(cancellationToken);
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
        await StopAsync(CancellationToken.None);
        _stop.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket connection;
            try
            {
                connection = await _socket!.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                Log.AcceptFailed(_logger, e.Message);
                continue;
            }

            connection.NoDelay = true;
            var id = "nbd-" + Interlocked.Increment(ref _connectionIds).ToString(CultureInfo.InvariantCulture);
            // Registered before it starts, so a session that ends at once cannot be removed before it was added.
            var session = new Task<Task>(() => ServeAsync(connection, id));
            _sessions[connection] = session.Unwrap();
            session.Start(TaskScheduler.Default);
        }
    }

    private async Task ServeAsync(Socket connection, string id)
    {
        var remote = connection.RemoteEndPoint?.ToString() ?? "?";
        using var scope = _logger.BeginScope("nbd connection {ConnectionId} from {RemoteEndPoint}", id, remote);
        Log.ConnectionOpened(_logger, id, remote);
        try
        {
            await NbdSession.RunAsync(connection, _catalog, _options, _logger, _stop.Token);
        }
        finally
        {
            _sessions.TryRemove(connection, out _);
            Log.ConnectionClosed(_logger, id);
        }
    }
}
