using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Threading.Tasks.Sources;
using Converge.Common;
using Converge.Common.Transport;

namespace Converge.Coordinator.Peer;

/// <summary>
/// One multiplexed connection to a peer host: many requests in flight, replies matched by request id.
/// When the connection fails every pending request fails with <see cref="VolumeError.Unavailable"/> and the next
/// request reconnects. Thread-safe.
/// </summary>
public sealed class PeerClient : IAsyncDisposable
{
    /// <summary>A frame that cannot be sent within this (the peer stopped acknowledging) fails the connection.</summary>
    private static readonly TimeSpan SendTimeout = TimeSpan.FromSeconds(5);

    private readonly EndPoint _endPoint;
    private readonly TimeSpan _connectTimeout;
    private readonly SslClientAuthenticationOptions? _tls;
    private readonly SemaphoreSlim _connectLock = new(1, 1);
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<ulong, PendingRequest> _pending = new();
    private readonly ConcurrentBag<PendingRequest> _pool = [];
    private readonly CancellationTokenSource _disposed = new();
    private Connection? _connection;
    private long _nextId;

    /// <param name="tls">
    /// Mutual TLS: the client certificate, the server's expected name (<c>TargetHost</c>) and the chain policy or
    /// validation callback, supplied by the caller; each connection completes its handshake (within the connect
    /// timeout) before its first request. Null: plain TCP.
    /// </param>
    public PeerClient(EndPoint endPoint, TimeSpan? connectTimeout = null, SslClientAuthenticationOptions? tls = null)
    {
        _endPoint = endPoint;
        _connectTimeout = connectTimeout ?? TimeSpan.FromSeconds(2);
        _tls = tls;
    }

    public EndPoint EndPoint => _endPoint;

    /// <summary>
    /// Sends one request (with <paramref name="payload"/> for WRITE/ENSURE) and waits for its reply; reply data is
    /// copied into <paramref name="destination"/>. Returns the number of reply bytes. Non-zero statuses throw
    /// <see cref="VolumeException"/>. <paramref name="payloadCrc"/>: the payload's CRC-32C when the caller has it
    /// already (a write's block checksums, folded); otherwise it is computed here.
    /// </summary>
    public async ValueTask<int> SendAsync(
        PeerRequestHeader header, ReadOnlyMemory<byte> payload, Memory<byte> destination, CancellationToken cancellationToken, uint? payloadCrc = null)
    {
        var connection = await ConnectAsync(cancellationToken);
        var id = (ulong)Interlocked.Increment(ref _nextId);
        payload = payload[..header.PayloadLength];
        header = header with { RequestId = id, PayloadCrc = payloadCrc ?? (payload.IsEmpty ? 0 : Checksums.Crc32C(payload.Span)) };
        if (!_pool.TryTake(out var pending))
        {
            pending = new PendingRequest();
        }

        pending.Prepare(id, destination);
        _pending[id] = pending;
        try
        {
            await _writeLock.WaitAsync(cancellationToken);
            try
            {
                // Never cancelled part-way: a torn frame would desynchronise every later request on the connection.
                // A send that cannot finish (the peer is cut off and stopped acknowledging) fails the connection
                // instead, which fails every request on it; the next request reconnects.
                var send = connection.SendAsync(header, payload);
                if (!send.IsCompletedSuccessfully)
                {
                    try
                    {
                        await send.AsTask().WaitAsync(SendTimeout);
                    }
                    catch (TimeoutException ex)
                    {
                        Fail(connection, $"a send to {_endPoint} made no progress for {SendTimeout.TotalSeconds:0} s");
                        throw Unavailable($"peer {_endPoint} stopped taking data", ex);
                    }
                }
            }
            catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException)
            {
                Fail(connection, ex.Message);
                throw Unavailable(ex.Message, ex);
            }
            finally
            {
                _writeLock.Release();
            }

            using var registration = cancellationToken.Register(static p => ((PendingRequest)p!).TryCancel(), pending);
            var (status, length, crc) = await pending.AsValueTask();
            if (status != 0)
            {
                var error = (VolumeError)(status - 1);
                throw new VolumeException(error, $"peer {_endPoint} refused {header.Op}: {error}");
            }

            // Checked in the caller's buffer, which holds the whole reply now (a reply longer than it fails here too).
            if (length > 0 && Checksums.Crc32C(destination.Span[..length]) != crc)
            {
                throw new PeerTransitException($"the reply of peer {_endPoint} to {header.Op} at offset {header.Offset} arrived damaged (checksum mismatch)");
            }

            return length;
        }
        finally
        {
            _pending.TryRemove(id, out _);
            if (pending.Reset())
            {
                _pool.Add(pending);
            }
        }
    }

    private async ValueTask<Connection> ConnectAsync(CancellationToken cancellationToken)
    {
        var current = Volatile.Read(ref _connection);
        if (current is { Failed: false })
        {
            return current;
        }

        await _connectLock.WaitAsync(cancellationToken);
        try
        {
            current = _connection;
            if (current is { Failed: false })
            {
                return current;
            }

            var socket = new Socket(_endPoint.AddressFamily == AddressFamily.Unspecified ? AddressFamily.InterNetwork : _endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
            {
                NoDelay = true,
            };
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposed.Token);
            timeout.CancelAfter(_connectTimeout);
            try
            {
                await socket.ConnectAsync(_endPoint, timeout.Token);
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                throw Unavailable($"cannot connect: {ex.Message}", ex);
            }

            var transport = new SocketTransport(socket);
            if (_tls is not null)
            {
                try
                {
                    await transport.AuthenticateAsClientAsync(_tls, _connectTimeout, TimeProvider.System, timeout.Token);
                }
                catch (Exception ex) when (ex is AuthenticationException or IOException or SocketException or TimeoutException
                    or OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    transport.Dispose();
                    throw Unavailable($"TLS handshake failed: {ex.Message}", ex);
                }
                catch
                {
                    transport.Dispose();
                    throw;
                }
            }

            var connection = new Connection(transport);
            connection.ReadLoop = Task.Run(() => ReadLoopAsync(connection), CancellationToken.None);
            Volatile.Write(ref _connection, connection);
            return connection;
        }
        finally
        {
            _connectLock.Release();
        }
    }

    /// <summary>
    /// Receives replies straight from the socket into one buffer and copies each reply's payload into its request's
    /// destination as it arrives (a large reply streams through in buffer-sized pieces).
    /// </summary>
    private async Task ReadLoopAsync(Connection connection)
    {
        var transport = connection.Transport;
        var buffer = connection.ReceiveBuffer;
        int start = 0, end = 0;
        var reason = "connection closed by peer";
        try
        {
            while (true)
            {
                while (end - start < PeerReplyHeader.Size)
                {
                    if (buffer.Length - start < PeerReplyHeader.Size)
                    {
                        buffer.AsSpan(start, end - start).CopyTo(buffer);
                        end -= start;
                        start = 0;
                    }

                    var n = await transport.ReceiveAsync(buffer.AsMemory(end), _disposed.Token);
                    if (n == 0)
                    {
                        return;
                    }

                    end += n;
                }

                if (!PeerReplyHeader.TryRead(buffer.AsSpan(start, PeerReplyHeader.Size), out var header))
                {
                    reason = "malformed reply";
                    return;
                }

                start += PeerReplyHeader.Size;
                _pending.TryGetValue(header.RequestId, out var pending);
                pending?.Begin(header.RequestId, header.Status, header.PayloadCrc);
                var copied = 0;
                while (true)
                {
                    var take = Math.Min(end - start, header.Length - copied);
                    pending?.Append(header.RequestId, buffer.AsSpan(start, take), copied);
                    start += take;
                    copied += take;
                    if (copied == header.Length)
                    {
                        break;
                    }

                    start = end = 0;
                    var n = await transport.ReceiveAsync(buffer.AsMemory(0, Math.Min(buffer.Length, Math.Max(header.Length - copied, PeerReplyHeader.Size))), _disposed.Token);
                    if (n == 0)
                    {
                        return;
                    }

                    end = n;
                }

                if (start == end)
                {
                    start = end = 0;
                }

                // Runs the waiting caller's continuation on this thread (no hop through the thread pool).
                pending?.Finish(header.RequestId, copied);
            }
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
            reason = ex.Message;
        }
        finally
        {
            Fail(connection, reason);
        }
    }

    private void Fail(Connection connection, string reason)
    {
        if (!connection.MarkFailed())
        {
            return;
        }

        Interlocked.CompareExchange(ref _connection, null, connection);
        foreach (var pending in _pending.Values)
        {
            pending.TryFail(Unavailable(reason));
        }

        connection.Dispose();
    }

    private VolumeException Unavailable(string reason, Exception? inner = null) =>
        new(VolumeError.Unavailable, $"peer {_endPoint} unavailable: {reason}", inner);

    public async ValueTask DisposeAsync()
    {
        await _disposed.CancelAsync();
        var connection = Volatile.Read(ref _connection);
        if (connection is not null)
        {
            Fail(connection, "client disposed");
            await connection.ReadLoop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        _disposed.Dispose();
        _connectLock.Dispose();
        _writeLock.Dispose();
    }

    private sealed class Connection(SocketTransport transport) : IDisposable
    {
        /// <summary>Small payloads go out in one send with their header; larger ones follow it in a second send.</summary>
        private const int CoalesceBytes = 64 * 1024;
        private readonly byte[] _send = new byte[PeerRequestHeader.Size + CoalesceBytes];
        private int _failed;

        public SocketTransport Transport { get; } = transport;

        public byte[] ReceiveBuffer { get; } = new byte[256 * 1024];

        public Task ReadLoop { get; set; } = Task.CompletedTask;

        public bool Failed => Volatile.Read(ref _failed) != 0;

        public bool MarkFailed() => Interlocked.Exchange(ref _failed, 1) == 0;

        /// <summary>One frame; the caller holds the write lock.</summary>
        public async ValueTask SendAsync(PeerRequestHeader header, ReadOnlyMemory<byte> payload)
        {
            header.Write(_send);
            var inline = payload.Length <= CoalesceBytes ? payload.Length : 0;
            payload.Span[..inline].CopyTo(_send.AsSpan(PeerRequestHeader.Size));
            await SendAllAsync(_send.AsMemory(0, PeerRequestHeader.Size + inline));
            if (inline < payload.Length)
            {
                await SendAllAsync(payload);
            }
        }

        public void Dispose() => Transport.Dispose();

        private ValueTask SendAllAsync(ReadOnlyMemory<byte> data) => Transport.SendAllAsync(data, CancellationToken.None);
    }

    /// <summary>
    /// A reusable completion for one request at a time. The request id guards against a late reply (read loop)
    /// completing a later use of the same pooled object; the lock makes check-and-copy atomic against cancellation,
    /// so nothing is copied into a destination its owner may already have given back. Completion runs the waiting
    /// continuation on the completing thread, outside the lock.
    /// </summary>
    private sealed class PendingRequest : IValueTaskSource<(int Status, int Length, uint Crc)>
    {
        private readonly Lock _gate = new();
        private ManualResetValueTaskSourceCore<(int, int, uint)> _core = new() { RunContinuationsAsynchronously = false };
        private Memory<byte> _destination;
        private ulong _id;
        private int _status;
        private uint _crc;
        private bool _completed;

        public void Prepare(ulong id, Memory<byte> destination)
        {
            lock (_gate)
            {
                _id = id;
                _destination = destination;
                _completed = false;
            }
        }

        public ValueTask<(int Status, int Length, uint Crc)> AsValueTask() => new(this, _core.Version);

        public void Begin(ulong id, int status, uint crc)
        {
            lock (_gate)
            {
                if (!_completed && _id == id)
                {
                    _status = status;
                    _crc = crc;
                }
            }
        }

        /// <summary>Copies one piece of the reply payload, at <paramref name="offset"/> within it.</summary>
        public void Append(ulong id, ReadOnlySpan<byte> data, int offset)
        {
            lock (_gate)
            {
                if (!_completed && _id == id && offset < _destination.Length)
                {
                    data[..Math.Min(data.Length, _destination.Length - offset)].CopyTo(_destination.Span[offset..]);
                }
            }
        }

        public void Finish(ulong id, int length)
        {
            lock (_gate)
            {
                if (_completed || _id != id)
                {
                    return;
                }

                _completed = true;

                // A reply longer than the destination was cut to it: the checksum check then fails, as it should.
                length = Math.Min(length, _destination.Length);
            }

            _core.SetResult((_status, length, _crc));
        }

        public void TryFail(Exception error)
        {
            lock (_gate)
            {
                if (_completed)
                {
                    return;
                }

                _completed = true;
            }

            _core.SetException(error);
        }

        public void TryCancel() => TryFail(new OperationCanceledException());

        /// <summary>Readies the source for reuse; false if it must not be reused (never completed).</summary>
        public bool Reset()
        {
            lock (_gate)
            {
                if (!_completed)
                {
                    return false;
                }

                _id = 0;
                _status = 0;
                _crc = 0;
                _destination = default;
                _core.Reset();
                return true;
            }
        }

        public (int Status, int Length, uint Crc) GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
