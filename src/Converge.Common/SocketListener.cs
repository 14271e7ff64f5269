using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Common;

/// <summary>
/// A TCP port served on raw sockets: bind, an accept loop, one session per connection, and an orderly stop (stop
/// accepting and reading, let every session answer what it started, cut the ones still running when the caller's time
/// is up). The peer and NBD ports use it instead of Kestrel, whose socket transport receives into 4 KiB pool blocks and
/// hops between its I/O queue and the thread pool on every receive and send. <see cref="Limits"/> caps the connections
/// served at once, in total and per client address: one over either is closed (with a reset) as soon as it is accepted,
/// so a flood costs the accept loop an accept and a close each and never a session, and refusals are logged at most
/// once per <see cref="RefusalLogInterval"/>.
/// </summary>
public abstract class SocketListener : IAsyncDisposable
{
    private readonly EndPoint _endPoint;
    private readonly string _purpose;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Socket, Task> _sessions = new();
    private Socket? _socket;
    private Task _acceptLoop = Task.CompletedTask;

    // Connection counts, touched by the accept loop and by ending sessions.
    private readonly Lock _countGate = new();
    private readonly Dictionary<IPAddress, int> _perAddress = [];
    private int _connections;

    // Refusals since the last log line (the accept loop only).
    private long _refusedUnlogged;
    private long _lastRefusalLog;
    private long _refused;

    /// <param name="purpose">Who connects, for the bind error: "peers", "NBD clients".</param>
    protected SocketListener(EndPoint endPoint, string purpose)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        _endPoint = endPoint;
        _purpose = purpose;
    }

    /// <summary>A refusal is logged at most this often, with the count since the last line.</summary>
    public static readonly TimeSpan RefusalLogInterval = TimeSpan.FromSeconds(10);

    /// <summary>Connections served at once, in total and per client address.</summary>
    public ConnectionLimits Limits { get; init; } = ConnectionLimits.Default;

    /// <summary>Where refused connections are reported (rate-limited).</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Connections closed at accept because a limit was reached, since the start.</summary>
    public long RefusedConnections => Interlocked.Read(ref _refused);

    /// <summary>The bound address (with the actual port when the end point asked for port 0).</summary>
    public EndPoint LocalEndPoint => _socket?.LocalEndPoint ?? _endPoint;

    /// <summary>Fires when the listener stops: sessions stop reading new requests.</summary>
    protected CancellationToken Stopping => _stop.Token;

    /// <summary>Binds and starts accepting.</summary>
    /// <exception cref="IOException">The port cannot be bound; the message names the address and the reason.</exception>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        Limits.Validate();
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

            var address = ClientAddress(connection);
            if (Admit(address) is { } refusal)
            {
                Refuse(connection, address, refusal);
                continue;
            }

            connection.NoDelay = true;

            // Registered before it starts, so a session that ends at once cannot be removed before it was added.
            var session = new Task<Task>(() => RunAsync(connection, address));
            _sessions[connection] = session.Unwrap();
            session.Start(TaskScheduler.Default);
        }
    }

    private async Task RunAsync(Socket connection, IPAddress? address)
    {
        try
        {
            await ServeAsync(connection).ConfigureAwait(false);
        }
        finally
        {
            _sessions.TryRemove(connection, out _);
            Leave(address);
        }
    }

    /// <summary>The client's IP address, an IPv4 one as such even on a dual-mode socket (so both forms count as one).</summary>
    private static IPAddress? ClientAddress(Socket connection)
    {
        try
        {
            return connection.RemoteEndPoint is IPEndPoint { Address: var address }
                ? address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address
                : null;
        }
        catch (SocketException)
        {
            // The client is already gone; it is counted under no address and its session ends at once.
            return null;
        }
    }

    /// <summary>Counts the connection in, or says which limit it is over (counting nothing).</summary>
    private string? Admit(IPAddress? address)
    {
        var limits = Limits;
        lock (_countGate)
        {
            if (_connections >= limits.MaxConnections)
            {
                return $"{_connections} connections are open, the maximum per listener";
            }

            var fromAddress = 0;
            if (address is not null && _perAddress.TryGetValue(address, out fromAddress) && fromAddress >= limits.MaxConnectionsPerAddress)
            {
                return $"{fromAddress} connections are open from this address, the maximum per client address";
            }

            _connections++;
            if (address is not null)
            {
                _perAddress[address] = fromAddress + 1;
            }

            return null;
        }
    }

    private void Leave(IPAddress? address)
    {
        lock (_countGate)
        {
            _connections--;
            if (address is not null && _perAddress.TryGetValue(address, out var count))
            {
                if (count <= 1)
                {
                    _perAddress.Remove(address);
                }
                else
                {
                    _perAddress[address] = count - 1;
                }
            }
        }
    }

    /// <summary>
    /// Closes a connection over a limit with a reset: nothing is sent, and no TIME_WAIT is left behind on this side, so a
    /// flood of them costs no more than the accept. Logged at most once per <see cref="RefusalLogInterval"/>.
    /// </summary>
    private void Refuse(Socket connection, IPAddress? address, string reason)
    {
        try
        {
            connection.LingerState = new LingerOption(true, 0);
        }
        catch (SocketException)
        {
            // Already reset by the client; closing is all that is left.
        }

        connection.Dispose();
        Interlocked.Increment(ref _refused);
        _refusedUnlogged++;
        var now = Time.GetTimestamp();
        if (_lastRefusalLog != 0 && Time.GetElapsedTime(_lastRefusalLog, now) < RefusalLogInterval)
        {
            return;
        }

        Log.ConnectionsRefused(Logger, _refusedUnlogged, _purpose, address?.ToString() ?? "?", reason);
        _refusedUnlogged = 0;
        _lastRefusalLog = now;
    }
}
