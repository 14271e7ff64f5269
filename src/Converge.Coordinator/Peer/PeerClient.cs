using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;
using Converge.Common;

namespace Converge.Coordinator.Peer;

/// <summary>
/// One multiplexed connection to a peer host: many requests in flight, replies matched by request id.
/// When the connection fails every pending request fails with <see cref="VolumeError.Unavailable"/> and the next
/// request reconnects. Thread-safe.
/// </summary>
public sealed class PeerClient : IAsyncDisposable
{
    private readonly EndPoint _endPoint;
    private readonly TimeSpan _connectTimeout;
    private readonly SemaphoreSlim _connectLock = new(1, 1);
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<ulong, PendingRequest> _pending = new();
    private readonly ConcurrentBag<PendingRequest> _pool = [];
    private readonly CancellationTokenSource _disposed = new();
    private Connection? _connection;
    private long _nextId;

    public PeerClient(EndPoint endPoint, TimeSpan? connectTimeout = null)
    {
        _endPoint = endPoint;
        _connectTimeout = connectTimeout ?? TimeSpan.FromSeconds(2);
    }

    public EndPoint EndPoint => _endPoint;

    /// <summary>
    /// Sends one request (with <paramref name="payload"/> for WRITE/ENSURE) and waits for its reply; reply data is
    /// copied into <paramref name="destination"/>. Returns the number of reply bytes. Non-zero statuses throw
    /// <see cref="VolumeException"/>.
    /// </summary>
    public async ValueTask<int> SendAsync(
        PeerRequestHeader header, ReadOnlyMemory<byte> payload, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var connection = await ConnectAsync(cancellationToken);
        var id = (ulong)Interlocked.Increment(ref _nextId);
        header = header with { RequestId = id };
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
                var output = connection.Output;
                header.Write(output.GetSpan(PeerRequestHeader.Size));
                output.Advance(PeerRequestHeader.Size);
                if (header.PayloadLength > 0)
                {
                    output.Write(payload.Span[..header.PayloadLength]);
                }

                var flush = await output.FlushAsync(cancellationToken);
                if (flush.IsCompleted)
                {
                    throw Unavailable("connection closed");
                }
            }
            catch (Exception ex) when (ex is IOException or SocketException or InvalidOperationException)
            {
                Fail(connection, ex.Message);
                throw Unavailable(ex.Message, ex);
            }
            finally
            {
                _writeLock.Release();
            }

            using var registration = cancellationToken.Register(static p => ((PendingRequest)p!).TryCancel(), pending);
            var (status, length) = await pending.AsValueTask();
            if (status != 0)
            {
                var error = (VolumeError)(status - 1);
                throw new VolumeException(error, $"peer {_endPoint} refused {header.Op}: {error}");
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

            var stream = new NetworkStream(socket, ownsSocket: true);
            var connection = new Connection(stream);
            connection.ReadLoop = Task.Run(() => ReadLoopAsync(connection), CancellationToken.None);
            Volatile.Write(ref _connection, connection);
            return connection;
        }
        finally
        {
            _connectLock.Release();
        }
    }

    private async Task ReadLoopAsync(Connection connection)
    {
        var reader = connection.Input;
        var reason = "connection closed by peer";
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(_disposed.Token);
                var buffer = result.Buffer;
                while (true)
                {
                    var probe = buffer;
                    if (!PeerReplyHeader.TryRead(ref probe, out var header, out var malformed))
                    {
                        if (malformed)
                        {
                            reason = "malformed reply";
                            return;
                        }

                        break;
                    }

                    if (probe.Length < header.Length)
                    {
                        break;
                    }

                    if (_pending.TryGetValue(header.RequestId, out var pending))
                    {
                        pending.Complete(header.RequestId, header.Status, probe.Slice(0, header.Length));
                    }

                    buffer = probe.Slice(header.Length);
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or InvalidOperationException)
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

    private sealed class Connection(NetworkStream stream) : IDisposable
    {
        private int _failed;

        public PipeReader Input { get; } = PipeReader.Create(stream);

        public PipeWriter Output { get; } = PipeWriter.Create(stream);

        public Task ReadLoop { get; set; } = Task.CompletedTask;

        public bool Failed => Volatile.Read(ref _failed) != 0;

        public bool MarkFailed() => Interlocked.Exchange(ref _failed, 1) == 0;

        public void Dispose() => stream.Dispose();
    }

    /// <summary>
    /// A reusable completion for one request at a time. The request id guards against a late reply (read loop)
    /// completing a later use of the same pooled object; the lock makes check-and-complete atomic.
    /// </summary>
    private sealed class PendingRequest : IValueTaskSource<(int Status, int Length)>
    {
        private readonly Lock _gate = new();
        private ManualResetValueTaskSourceCore<(int, int)> _core = new() { RunContinuationsAsynchronously = true };
        private Memory<byte> _destination;
        private ulong _id;
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

        public ValueTask<(int Status, int Length)> AsValueTask() => new(this, _core.Version);

        public void Complete(ulong id, int status, ReadOnlySequence<byte> data)
        {
            lock (_gate)
            {
                if (_completed || _id != id)
                {
                    return;
                }

                _completed = true;
                var length = (int)Math.Min(data.Length, _destination.Length);
                data.Slice(0, length).CopyTo(_destination.Span);
                _core.SetResult((status, length));
            }
        }

        public void TryFail(Exception error)
        {
            lock (_gate)
            {
                if (!_completed)
                {
                    _completed = true;
                    _core.SetException(error);
                }
            }
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
                _destination = default;
                _core.Reset();
                return true;
            }
        }

        public (int Status, int Length) GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
