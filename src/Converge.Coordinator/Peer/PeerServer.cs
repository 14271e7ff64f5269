using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Converge.Common;
using Converge.Common.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Converge.Coordinator.Peer;

/// <summary>Outcome of one peer request: <see cref="Status"/> 0 or a VolumeError + 1, and reply payload bytes.</summary>
public readonly record struct PeerResult(int Status, int Length)
{
    public static readonly PeerResult Ok = new(0, 0);

    public static PeerResult Error(VolumeError error) => new((int)error + 1, 0);
}

/// <summary>What a host does with requests from its peers (component I/O, component lifecycle, stats).</summary>
public interface IPeerRequestHandler
{
    /// <summary>Bytes of reply payload a request may produce (READ: its length; stats: a bound).</summary>
    int ReplyCapacity(in PeerRequestHeader header);

    /// <summary>
    /// Serves one request whose payload matched its checksum. <paramref name="blockCrcs"/>: for a WRITE of whole 4 KiB
    /// blocks, the CRC-32C of each block, computed while checking the payload (a store takes them instead of computing
    /// them again); empty otherwise.
    /// </summary>
    ValueTask<PeerResult> HandleAsync(
        PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken);
}

/// <summary>
/// The peer data port: one <see cref="PeerSession"/> per connection on the raw socket (<see cref="SocketListener"/>;
/// not Kestrel, which made a 1 MiB write cost ~1 ms of server CPU and every round trip two extra thread hops).
/// Stopping ends every session's reading; requests already running still finish and are answered.
/// With <paramref name="tls"/> (mutual TLS: it must require a client certificate; the caller supplies the certificate
/// and the chain policy or validation callback), the TLS handshake completes, within <paramref name="handshakeTimeout"/>
/// (default 10 s), before any request byte is read; a client that fails it never reaches <paramref name="handler"/>.
/// Null: plain TCP, the raw-socket fast path unchanged.
/// </summary>
public sealed class PeerListener(
    EndPoint endPoint,
    IPeerRequestHandler handler,
    ILogger<PeerListener> logger,
    SslServerAuthenticationOptions? tls = null,
    TimeSpan? handshakeTimeout = null,
    TimeProvider? time = null)
    : SocketListener(endPoint, "peers"), IHostedService
{
    private readonly SslServerAuthenticationOptions? _tls = tls is null || tls.ClientCertificateRequired
        ? tls
        : throw new ArgumentException("peer TLS must require a client certificate (mutual TLS)", nameof(tls));

    private readonly TimeSpan _handshakeTimeout = handshakeTimeout ?? TimeSpan.FromSeconds(10);

    protected override void OnAcceptFailed(SocketException exception) => Log.PeerConnectionFailed(logger, exception.Message);

    protected override Task ServeAsync(Socket connection) =>
        _tls is null ? new PeerSession(connection, handler, logger).RunAsync(Stopping) : ServeTlsAsync(connection, _tls);

    private async Task ServeTlsAsync(Socket connection, SslServerAuthenticationOptions options)
    {
        var transport = new SocketTransport(connection);
        var remote = connection.RemoteEndPoint?.ToString() ?? "?";
        try
        {
            await transport.AuthenticateAsServerAsync(options, _handshakeTimeout, time ?? TimeProvider.System, Stopping);
            if (transport.RemoteCertificate is null)
            {
                // A validation callback that accepts a missing certificate must not open the port.
                throw new AuthenticationException("the client presented no certificate");
            }
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException or TimeoutException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            Log.PeerTlsRefused(logger, remote, ex.Message);
            transport.Dispose();
            return;
        }

        await new PeerSession(transport, handler, logger).RunAsync(Stopping);
    }
}

/// <summary>
/// One peer connection. The reader parses requests straight from the socket (a WRITE payload is received directly
/// into its pooled buffer) and starts each handler at once; many are in flight. A handler that completes
/// synchronously (a page-cache pread/pwrite) is answered in the reader's batch: replies queue up and go out in one
/// send when the reader has consumed everything that arrived, so a burst of requests costs one reply syscall.
/// Replies of handlers that complete later are sent by whichever thread finishes them. A malformed frame closes the
/// connection; handler errors become statuses.
/// </summary>
public sealed class PeerSession
{
    private const int MaxInFlight = 128;
    private const int MaxPayload = BlockGeometry.MaxRequestBytes + (1 << 20);

    /// <summary>
    /// Payload and reply bytes one connection may hold before its reader stops reading (TCP then holds the sender
    /// back). Without it, 128 requests of 33 MiB could pin 4 GiB per connection.
    /// </summary>
    public const long MaxInFlightBytes = 64L << 20;

    /// <summary>Replies (with payloads) up to this size are copied into one send buffer; larger payloads are sent from their own buffer.</summary>
    private const int CoalesceBytes = 64 * 1024;

    private readonly SocketTransport _transport;
    private readonly IPeerRequestHandler _handler;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _slots = new(MaxInFlight, MaxInFlight);
    private readonly PeerByteBudget _budget = new(MaxInFlightBytes);
    private readonly byte[] _receive = new byte[256 * 1024];
    private readonly Lock _gate = new();
    private readonly byte[] _send = new byte[CoalesceBytes + PeerReplyHeader.Size];
    private List<QueuedReply> _queued = [];
    private List<QueuedReply> _sending = [];
    private bool _sendRunning;
    private bool _sendFailed;
    private int _inFlight;
    private TaskCompletionSource? _idle;
    private int _start;
    private int _end;

    public PeerSession(Socket socket, IPeerRequestHandler handler, ILogger logger)
        : this(new SocketTransport(socket), handler, logger)
    {
    }

    /// <summary>A session on a connection whose TLS handshake (if any) is done: requests are read from its first byte.</summary>
    public PeerSession(SocketTransport transport, IPeerRequestHandler handler, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(transport);
        _transport = transport;
        _handler = handler;
        _logger = logger;
    }

    /// <summary>Cuts the connection (requests still running then fail to send their replies).</summary>
    public void Abort() => _transport.Dispose();

    /// <summary>Serves until the peer disconnects, a frame is malformed, or <paramref name="cancellationToken"/> fires; then waits for running requests and closes.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        try
        {
            while (true)
            {
                if (!await FillAsync(PeerRequestHeader.Size, stop.Token))
                {
                    return;
                }

                if (!PeerRequestHeader.TryRead(_receive.AsSpan(_start, PeerRequestHeader.Size), out var header) ||
                    header.PayloadLength > MaxPayload || header.Length > MaxPayload)
                {
                    Log.MalformedPeerFrame(_logger);
                    return;
                }

                _start += PeerRequestHeader.Size;
                var payloadLength = header.PayloadLength;
                var capacity = Math.Clamp(_handler.ReplyCapacity(header), 0, MaxPayload);

                // Charged before the payload is read, so a full budget leaves the payload in the socket.
                var charge = _budget.Charge((long)payloadLength + capacity);
                if (!_budget.TryAcquire(charge))
                {
                    await SendQueuedAsync();
                    await _budget.AcquireAsync(charge, stop.Token);
                }

                var payload = payloadLength == 0 ? null : ArrayPool<byte>.Shared.Rent(payloadLength);
                if (payload is not null && !await ReceivePayloadAsync(payload.AsMemory(0, payloadLength), stop.Token))
                {
                    ArrayPool<byte>.Shared.Return(payload);
                    _budget.Release(charge);
                    return;
                }

                var (intact, crcs) = CheckPayload(header, payload.AsSpan(0, payloadLength));
                if (!_slots.Wait(0))
                {
                    await SendQueuedAsync();
                    await _slots.WaitAsync(stop.Token);
                }

                Start(header, payload, payloadLength, capacity, charge, intact, crcs, stop.Token);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException)
        {
            Log.PeerConnectionFailed(_logger, ex.Message);
        }
        finally
        {
            await WaitIdleAsync();
            await stop.CancelAsync();
            await SendQueuedAsync();
            _transport.Shutdown();
            _transport.Dispose();
            _slots.Dispose();
        }
    }

    /// <summary>
    /// Ensures <paramref name="count"/> unparsed bytes are buffered. Before blocking on the socket it sends the replies
    /// queued so far (everything that arrived has been parsed by then). False on a clean end of stream.
    /// </summary>
    private async ValueTask<bool> FillAsync(int count, CancellationToken cancellationToken)
    {
        while (_end - _start < count)
        {
            if (_start == _end)
            {
                _start = _end = 0;
            }
            else if (_receive.Length - _start < count)
            {
                _receive.AsSpan(_start, _end - _start).CopyTo(_receive);
                _end -= _start;
                _start = 0;
            }

            await SendQueuedAsync();
            var n = await _transport.ReceiveAsync(_receive.AsMemory(_end), cancellationToken);
            if (n == 0)
            {
                if (_end != _start)
                {
                    Log.PeerConnectionFailed(_logger, "connection closed inside a frame");
                }

                return false;
            }

            _end += n;
        }

        return true;
    }

    /// <summary>Buffered bytes first, then the rest straight from the socket into the payload buffer.</summary>
    private async ValueTask<bool> ReceivePayloadAsync(Memory<byte> payload, CancellationToken cancellationToken)
    {
        var take = Math.Min(_end - _start, payload.Length);
        _receive.AsSpan(_start, take).CopyTo(payload.Span);
        _start += take;
        payload = payload[take..];
        while (!payload.IsEmpty)
        {
            await SendQueuedAsync();
            var n = await _transport.ReceiveAsync(payload, cancellationToken);
            if (n == 0)
            {
                Log.PeerConnectionFailed(_logger, "connection closed inside a frame");
                return false;
            }

            payload = payload[n..];
        }

        return true;
    }

    /// <summary>
    /// Whether the payload matches the CRC-32C its header carries. A WRITE of whole blocks is checked through the CRCs
    /// of its blocks (returned, pooled, for the store), so checking costs no pass over the data beyond the one the
    /// store would make anyway.
    /// </summary>
    private (bool Intact, uint[]? BlockCrcs) CheckPayload(in PeerRequestHeader header, ReadOnlySpan<byte> payload)
    {
        if (payload.IsEmpty)
        {
            return (header.PayloadCrc == 0, null);
        }

        uint[]? crcs = null;
        uint crc;
        if (header.Op == PeerOp.Write && ((header.Offset | (long)payload.Length) & (BlockGeometry.BlockSize - 1)) == 0)
        {
            var blocks = payload.Length >> BlockGeometry.BlockShift;
            crcs = ArrayPool<uint>.Shared.Rent(blocks);
            Checksums.Crc32CBlocks(payload, crcs);
            crc = Checksums.Crc32COfBlocks(crcs.AsSpan(0, blocks));
        }
        else
        {
            crc = Checksums.Crc32C(payload);
        }

        if (crc == header.PayloadCrc)
        {
            return (true, crcs);
        }

        Log.PeerPayloadCorrupt(_logger, header.Op.ToString(), header.Offset, payload.Length);
        if (crcs is not null)
        {
            ArrayPool<uint>.Shared.Return(crcs);
        }

        return (false, null);
    }

    private void Start(
        PeerRequestHeader header, byte[]? payload, int payloadLength, int capacity, long charge, bool intact, uint[]? crcs, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _inFlight++;
        }

        var reply = capacity == 0 ? null : ArrayPool<byte>.Shared.Rent(capacity);
        ValueTask<PeerResult> handling;
        try
        {
            // A damaged payload is refused before it reaches the handler: nothing is written; the sender sends it again.
            handling = intact
                ? _handler.HandleAsync(
                    header, payload.AsMemory(0, payloadLength), crcs.AsMemory(0, crcs is null ? 0 : payloadLength >> BlockGeometry.BlockShift),
                    reply.AsMemory(0, capacity), cancellationToken)
                : ValueTask.FromResult(PeerResult.Error(VolumeError.ChecksumMismatch));
        }
#pragma warning disable CA1031 // Becomes the request's status, like an exception from the awaited handler.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            handling = ValueTask.FromException<PeerResult>(ex);
        }

        if (handling.IsCompletedSuccessfully)
        {
            // The common case (page-cache I/O): answered in the reader's batch, no task, no hop.
            Finish(header, payload, crcs, reply, capacity, charge, handling.Result, send: false);
            return;
        }

        _ = CompleteAsync(header, payload, crcs, reply, capacity, charge, handling, cancellationToken);
    }

    private async Task CompleteAsync(
        PeerRequestHeader header, byte[]? payload, uint[]? crcs, byte[]? reply, int capacity, long charge, ValueTask<PeerResult> handling, CancellationToken cancellationToken)
    {
        PeerResult result;
        try
        {
            result = await handling;
        }
        catch (VolumeException ex)
        {
            result = PeerResult.Error(ex.Error);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The connection is going away: no reply.
            Finish(header, payload, crcs, reply, capacity, charge, null, send: false);
            return;
        }
#pragma warning disable CA1031 // A bug in one request must not take down the connection's other requests.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.PeerRequestFailed(_logger, header.Op.ToString(), ex);
            result = PeerResult.Error(VolumeError.IO);
        }

        Finish(header, payload, crcs, reply, capacity, charge, result, send: true);
    }

    /// <summary>Queues the reply (handing <paramref name="reply"/> over to the send queue) and releases the request's slot.</summary>
    private void Finish(PeerRequestHeader header, byte[]? payload, uint[]? crcs, byte[]? reply, int capacity, long charge, PeerResult? result, bool send)
    {
        if (payload is not null)
        {
            ArrayPool<byte>.Shared.Return(payload);
        }

        if (crcs is not null)
        {
            ArrayPool<uint>.Shared.Return(crcs);
        }

        TaskCompletionSource? idle = null;
        lock (_gate)
        {
            if (result is { } r && !_sendFailed)
            {
                var length = r.Status == 0 ? Math.Clamp(r.Length, 0, capacity) : 0;
                var crc = length == 0 ? 0 : Checksums.Crc32C(reply.AsSpan(0, length));
                _queued.Add(new QueuedReply(new PeerReplyHeader(header.RequestId, r.Status, length) { PayloadCrc = crc }, reply, charge));
                reply = null;
                charge = 0;
            }

            if (--_inFlight == 0)
            {
                idle = _idle;
                _idle = null;
            }
        }

        if (reply is not null)
        {
            ArrayPool<byte>.Shared.Return(reply);
        }

        // A queued reply keeps its charge until it has been sent.
        _budget.Release(charge);
        try
        {
            _slots.Release();
        }
        catch (ObjectDisposedException)
        {
        }

        if (send)
        {
            _ = SendQueuedAsync();
        }

        idle?.TrySetResult();
    }

    private Task WaitIdleAsync()
    {
        lock (_gate)
        {
            if (_inFlight == 0)
            {
                return Task.CompletedTask;
            }

            _idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _idle.Task;
        }
    }

    /// <summary>
    /// Sends every queued reply; one sender at a time, and a caller that finds a send running leaves its replies to it
    /// (the running sender looks again before it stops). Never throws: a failed send closes the connection.
    /// </summary>
    private async ValueTask SendQueuedAsync()
    {
        List<QueuedReply> batch;
        lock (_gate)
        {
            if (_sendRunning || _queued.Count == 0)
            {
                return;
            }

            _sendRunning = true;
            batch = _queued;
            _queued = _sending;
            _sending = batch;
        }

        while (true)
        {
            try
            {
                if (!_sendFailed)
                {
                    await SendBatchAsync(batch);
                }
            }
            catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException)
            {
                Log.PeerConnectionFailed(_logger, ex.Message);
                lock (_gate)
                {
                    _sendFailed = true;
                }

                _transport.Dispose();
            }

            foreach (var queued in batch)
            {
                if (queued.Payload is not null)
                {
                    ArrayPool<byte>.Shared.Return(queued.Payload);
                }

                _budget.Release(queued.Charge);
            }

            batch.Clear();
            lock (_gate)
            {
                if (_queued.Count == 0)
                {
                    _sendRunning = false;
                    return;
                }

                batch = _queued;
                _queued = _sending;
                _sending = batch;
            }
        }
    }

    /// <summary>Headers and small payloads coalesced into one buffer; a large payload is sent from its own buffer.</summary>
    private async ValueTask SendBatchAsync(List<QueuedReply> batch)
    {
        var used = 0;
        foreach (var queued in batch)
        {
            var length = queued.Header.Length;
            if (used + PeerReplyHeader.Size + Math.Min(length, CoalesceBytes) > _send.Length)
            {
                await SendAllAsync(_send.AsMemory(0, used));
                used = 0;
            }

            queued.Header.Write(_send.AsSpan(used));
            used += PeerReplyHeader.Size;
            if (length <= CoalesceBytes)
            {
                queued.Payload.AsSpan(0, length).CopyTo(_send.AsSpan(used));
                used += length;
            }
            else
            {
                await SendAllAsync(_send.AsMemory(0, used));
                used = 0;
                await SendAllAsync(queued.Payload.AsMemory(0, length));
            }
        }

        if (used > 0)
        {
            await SendAllAsync(_send.AsMemory(0, used));
        }
    }

    private ValueTask SendAllAsync(ReadOnlyMemory<byte> data) => _transport.SendAllAsync(data, CancellationToken.None);

    private readonly record struct QueuedReply(PeerReplyHeader Header, byte[]? Payload, long Charge);
}
