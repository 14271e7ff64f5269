using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Converge.Common;
using Converge.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>
/// The transmission phase of one connection, on the raw socket (the design of the peer port's <c>PeerSession</c>).
/// One reader loop parses requests straight from the connection's receive buffer (a WRITE payload is received
/// directly into its pooled buffer) and starts each one without waiting for it. A request whose volume call completes
/// synchronously (page-cache I/O) is answered in the reader's batch: its reply is queued, and the queue goes out in
/// one send when the reader has parsed everything that arrived, just before it blocks on the socket again. Replies of
/// requests that complete later are sent by the thread that completes them. <see cref="InFlightLimiter"/> stops the
/// reader when too much is outstanding: a request holds its slot and bytes until its reply has been sent (not merely
/// queued), so a client that sends requests but never reads the replies stops being read instead of growing the queue.
/// </summary>
internal sealed class NbdTransmission
{
    /// <summary>Reply payloads up to this size are copied into the send buffer with their headers; larger ones are sent from their own buffer.</summary>
    private const int CoalesceBytes = 64 * 1024;

    /// <summary>Largest reply header: a structured ERROR chunk with its message.</summary>
    private const int MaxHeaderBytes = NbdConstants.StructuredReplyHeaderSize + 6 + NbdConstants.MaxStringLength;

    private readonly NbdConnection _connection;
    private readonly NegotiatedExport _export;
    private readonly IBlockVolume _volume;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly InFlightLimiter _limiter;
    private readonly CommandFlags _commonFlags;
    private readonly bool _structured;

    private readonly Lock _gate = new();
    private readonly ArraySegment<byte>[] _sendPair = new ArraySegment<byte>[2];
    private byte[]? _send;
    private List<QueuedReply> _queued = [];
    private List<QueuedReply> _sending = [];
    private bool _sendRunning;
    private bool _sendFailed;
    private TaskCompletionSource? _senderStopped;

    public NbdTransmission(NbdConnection connection, NegotiatedExport export, NbdServerOptions options, ILogger logger)
    {
        _connection = connection;
        _export = export;
        _volume = export.Volume;
        _options = options;
        _logger = logger;
        _structured = export.StructuredReplies;
        _limiter = new InFlightLimiter(options.MaxInFlightRequests, options.MaxInFlightBytes);
        _commonFlags = Has(TransmissionFlags.SendFua) ? CommandFlags.Fua : CommandFlags.None;
    }

    /// <summary>
    /// Serves requests until the client disconnects (softly or not) or <paramref name="cancellationToken"/> fires,
    /// then waits for every started request to finish and its reply to be sent, so no buffer or task outlives the
    /// session.
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        _send = ArrayPool<byte>.Shared.Rent(CoalesceBytes + MaxHeaderBytes);
        try
        {
            await ReadLoopAsync(cancellationToken);
        }
        finally
        {
            // Spec (NBD_CMD_DISC): outstanding requests MUST be handled before the connection closes. Replies the reader
            // queued go out first: their requests hold their slots until sent.
            await SendQueuedAsync();
            await _limiter.WaitIdleAsync();
            await DrainAsync();
            ArrayPool<byte>.Shared.Return(_send);
            _send = null;
        }
    }

    private async Task ReadLoopAsync(CancellationToken cancellationToken)
    {
        var connection = _connection;
        while (true)
        {
            while (connection.Buffered < NbdConstants.RequestHeaderSize)
            {
                // Everything that arrived is parsed: answer the batch before blocking on the socket.
                await SendQueuedAsync();
                if (await connection.ReceiveMoreAsync(NbdConstants.RequestHeaderSize, cancellationToken) == 0)
                {
                    LogVanished();
                    return;
                }
            }

            var request = NbdRequest.Parse(connection.Buffer.AsSpan(connection.Start, NbdConstants.RequestHeaderSize));
            connection.Start += NbdConstants.RequestHeaderSize;
            if (request.Magic != NbdConstants.RequestMagic)
            {
                // Framing is lost; the only safe reaction is a hard disconnect.
                Log.BadRequestMagic(_logger, request.Magic);
                return;
            }

            switch (request.Command)
            {
                case NbdCommand.Disconnect:
                    Log.ClientDisconnectRequested(_logger);
                    return;

                case NbdCommand.Write when request.Length > (uint)_options.MaxRequestBytes:
                    // The client broke the advertised maximum payload. The payload is still consumed (received
                    // and discarded, never buffered whole) so framing survives, and the request fails with EINVAL.
                    Log.OversizedWrite(_logger, request.Length, _options.MaxRequestBytes);
                    await SendQueuedAsync();
                    if (!await connection.SkipAsync(request.Length, cancellationToken))
                    {
                        LogVanished();
                        return;
                    }

                    await AcquireAsync(0, cancellationToken);
                    Start(request, null);
                    break;

                case NbdCommand.Write:
                    var length = (int)request.Length;
                    await AcquireAsync(length, cancellationToken);
                    var payload = length == 0 ? null : ArrayPool<byte>.Shared.Rent(length);
                    bool complete;
                    try
                    {
                        complete = payload is null || await ReceivePayloadAsync(payload.AsMemory(0, length), cancellationToken);
                    }
                    catch
                    {
                        Return(payload);
                        _limiter.Release(length);
                        throw;
                    }

                    if (!complete)
                    {
                        Return(payload);
                        _limiter.Release(length);
                        LogVanished();
                        return;
                    }

                    Start(request, payload);
                    break;

                default:
                    await AcquireAsync(AccountedBytes(request), cancellationToken);
                    Start(request, null);
                    break;
            }

            if (_queued.Count >= _options.MaxInFlightRequests)
            {
                // A client that pipelines without pause still gets its answers (and their buffers go back) in bounded batches.
                await SendQueuedAsync();
            }
        }
    }

    /// <summary>Takes an in-flight slot; when it has to wait, the queued replies go out first.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask AcquireAsync(long bytes, CancellationToken cancellationToken)
    {
        var acquiring = _limiter.AcquireAsync(bytes, cancellationToken);
        if (!acquiring.IsCompleted)
        {
            await SendQueuedAsync();
        }

        await acquiring;
    }

    /// <summary>The buffered part of a WRITE payload, then the rest straight from the socket into the payload's buffer.</summary>
    private ValueTask<bool> ReceivePayloadAsync(Memory<byte> payload, CancellationToken cancellationToken)
    {
        var connection = _connection;
        if (connection.Buffered >= payload.Length)
        {
            connection.Buffer.AsSpan(connection.Start, payload.Length).CopyTo(payload.Span);
            connection.Start += payload.Length;
            return new ValueTask<bool>(true);
        }

        return ReceivePayloadSlowAsync(payload, cancellationToken);
    }

    private async ValueTask<bool> ReceivePayloadSlowAsync(Memory<byte> payload, CancellationToken cancellationToken)
    {
        await SendQueuedAsync();
        return await _connection.ReadExactAsync(payload, cancellationToken);
    }

    private long AccountedBytes(in NbdRequest request) => request.Command switch
    {
        NbdCommand.Read => Math.Min(request.Length, (uint)_options.MaxRequestBytes),
        NbdCommand.Write => request.Length <= (uint)_options.MaxRequestBytes ? request.Length : 0,
        _ => 0,
    };

    /// <summary>Starts one request; answered in the reader's batch when it completes at once, else by its completing thread.</summary>
    private void Start(NbdRequest request, byte[]? payload)
    {
        var startTimestamp = _options.Time.GetTimestamp();
        if (_options.OffloadBytes > 0 && request.Length >= (uint)_options.OffloadBytes && request.Command is NbdCommand.Read)
        {
            // Page-cache I/O completes synchronously, so a large read started here would hold the reader (on the
            // socket's event thread) for its whole copy and checksum: the connection's requests would use one core.
            // Writes stay: their payload is hot in this core's cache, and their receive is serial on the reader anyway.
            ThreadPool.UnsafeQueueUserWorkItem(
                static state => _ = state.Self.CompleteAsync(state.Request, state.Payload, state.Self.ExecuteAsync(state.Request, state.Payload), state.Started),
                (Self: this, Request: request, Payload: payload, Started: startTimestamp),
                preferLocal: false);
            return;
        }

        var executing = ExecuteAsync(request, payload);
        if (executing.IsCompletedSuccessfully)
        {
            Finish(request, payload, executing.Result, startTimestamp, send: false);
            return;
        }

        _ = CompleteAsync(request, payload, executing, startTimestamp);
    }

    private async Task CompleteAsync(NbdRequest request, byte[]? payload, ValueTask<Outcome> executing, long startTimestamp)
    {
        Outcome outcome;
        try
        {
            outcome = await executing;
        }
#pragma warning disable CA1031 // ExecuteAsync catches everything itself; this is a last line so the slot is always released.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.VolumeBug(_logger, ex, NbdMetrics.OpName(request.Command), request.Offset, request.Length);
            outcome = Outcome.Error(ErrorReply(request.Handle, NbdError.EIO, "internal server error"));
        }

        Finish(request, payload, outcome, startTimestamp, send: true);
    }

    /// <summary>
    /// Queues the reply (handing its buffer and the request's in-flight slot to the send queue, which releases them once
    /// it is sent), and returns the WRITE payload.
    /// </summary>
    private void Finish(NbdRequest request, byte[]? payload, Outcome outcome, long startTimestamp, bool send)
    {
        Return(payload);
        var held = AccountedBytes(request);
        var reply = outcome.Reply with { Held = held };
        bool queued;
        lock (_gate)
        {
            queued = !_sendFailed;
            if (queued)
            {
                _queued.Add(reply);
            }
        }

        if (!queued)
        {
            // The connection is gone; the reply is dropped.
            Return(reply.Payload);
            _limiter.Release(held);
        }

        NbdMetrics.RequestCompleted(request.Command, outcome.Bytes, outcome.Reply.Error, _options.Time.GetElapsedTime(startTimestamp));
        if (send)
        {
            _ = SendQueuedAsync();
        }
    }

    /// <summary>Validates and performs one request, and builds its reply (not sent here). Never throws.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<Outcome> ExecuteAsync(NbdRequest request, byte[]? payload)
    {
        var (error, message) = Validate(request);
        if (error != NbdError.None)
        {
            Log.RequestRejected(_logger, NbdMetrics.OpName(request.Command), request.Offset, request.Length, NbdMetrics.ErrorName(error), message!);
            return Outcome.Error(ErrorReply(request.Handle, error, message!));
        }

        try
        {
            return await PerformAsync(request, payload);
        }
        catch (VolumeException ex)
        {
            error = Map(ex.Error, request.Command);
            Log.VolumeFailed(_logger, NbdMetrics.OpName(request.Command), request.Offset, request.Length, NbdMetrics.ErrorName(error), ex.Message);
            return Outcome.Error(ErrorReply(request.Handle, error, ex.Message));
        }
        catch (OperationCanceledException ex)
        {
            error = NbdError.ESHUTDOWN;
            Log.VolumeFailed(_logger, NbdMetrics.OpName(request.Command), request.Offset, request.Length, NbdMetrics.ErrorName(error), ex.Message);
            return Outcome.Error(ErrorReply(request.Handle, error, "the server is shutting down"));
        }
#pragma warning disable CA1031 // A bug in one request becomes EIO for that request, not the end of the connection.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.VolumeBug(_logger, ex, NbdMetrics.OpName(request.Command), request.Offset, request.Length);
            return Outcome.Error(ErrorReply(request.Handle, NbdError.EIO, "internal server error"));
        }
    }

    /// <summary>Does the work; returns the success reply and the bytes moved for metrics.</summary>
    private async ValueTask<Outcome> PerformAsync(NbdRequest request, byte[]? payload)
    {
        var offset = (long)request.Offset;
        var length = (int)Math.Min(request.Length, int.MaxValue);
        switch (request.Command)
        {
            case NbdCommand.Read:
                var buffer = ArrayPool<byte>.Shared.Rent(length);
                try
                {
                    await _volume.ReadAsync(offset, buffer.AsMemory(0, length), CancellationToken.None);
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    throw;
                }

                // The buffer goes to the send queue with the reply.
                var kind = _structured ? ReplyKind.OffsetData : ReplyKind.SimpleData;
                return new Outcome(new QueuedReply(request.Handle, kind, NbdError.None, request.Offset, buffer, length, null), length);

            case NbdCommand.Write:
                await _volume.WriteAsync(offset, payload.AsMemory(0, length), WriteFlagsOf(request.Flags), CancellationToken.None);
                return Outcome.Ok(request.Handle, length);

            case NbdCommand.Flush:
                await _volume.FlushAsync(CancellationToken.None);
                return Outcome.Ok(request.Handle, 0);

            case NbdCommand.Trim:
                await _volume.TrimAsync(offset, request.Length, WriteFlagsOf(request.Flags), CancellationToken.None);
                return Outcome.Ok(request.Handle, request.Length);

            case NbdCommand.WriteZeroes:
                var zeroFlags = ZeroFlags.None;
                if ((request.Flags & CommandFlags.Fua) != 0)
                {
                    zeroFlags |= ZeroFlags.Fua;
                }

                if ((request.Flags & CommandFlags.NoHole) != 0)
                {
                    zeroFlags |= ZeroFlags.NoHole;
                }

                if ((request.Flags & CommandFlags.FastZero) != 0)
                {
                    zeroFlags |= ZeroFlags.FastZero;
                }

                await _volume.WriteZeroesAsync(offset, request.Length, zeroFlags, CancellationToken.None);
                return Outcome.Ok(request.Handle, request.Length);

            case NbdCommand.Cache:
                // A hint; validated above, nothing to do (the volume has no read-ahead cache to warm).
                return Outcome.Ok(request.Handle, 0);

            case NbdCommand.BlockStatus:
                return new Outcome(await BlockStatusAsync(request), 0);

            default:
                throw new InvalidOperationException($"unvalidated command {request.Command}");
        }
    }

    private async ValueTask<QueuedReply> BlockStatusAsync(NbdRequest request)
    {
        var extents = await _volume.GetAllocationAsync((long)request.Offset, request.Length, CancellationToken.None);
        var reqOne = (request.Flags & CommandFlags.ReqOne) != 0;
        var maxDescriptors = reqOne ? 1 : Math.Min(extents.Count, NbdConstants.MaxExtentsPerChunk);
        maxDescriptors = Math.Max(maxDescriptors, 1);
        var size = 4 + (8 * maxDescriptors);
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            var span = buffer.AsSpan();
            BinaryPrimitives.WriteUInt32BigEndian(span, NbdConstants.BaseAllocationContextId);
            var count = 0;
            long remaining = request.Length;
            uint lastFlags = uint.MaxValue;
            foreach (var extent in extents)
            {
                if (remaining <= 0)
                {
                    break;
                }

                if (extent.Length <= 0)
                {
                    continue;
                }

                var length = (uint)Math.Min(extent.Length, remaining);
                var flags = (uint)extent.Flags & (uint)(AllocationFlags.Hole | AllocationFlags.Zero);
                remaining -= length;
                if (count > 0 && flags == lastFlags)
                {
                    // Merge runs the volume split; the sum still fits in 32 bits because it is bounded by the request.
                    var at = 4 + (8 * (count - 1));
                    BinaryPrimitives.WriteUInt32BigEndian(span[at..], BinaryPrimitives.ReadUInt32BigEndian(span[at..]) + length);
                    continue;
                }

                if (count == maxDescriptors)
                {
                    break;
                }

                BinaryPrimitives.WriteUInt32BigEndian(span[(4 + (8 * count))..], length);
                BinaryPrimitives.WriteUInt32BigEndian(span[(8 + (8 * count))..], flags);
                lastFlags = flags;
                count++;
            }

            if (count == 0)
            {
                // The spec requires at least one descriptor; status 0 ("allocated, contents unknown") is always safe.
                BinaryPrimitives.WriteUInt32BigEndian(span[4..], request.Length);
                BinaryPrimitives.WriteUInt32BigEndian(span[8..], 0);
                count = 1;
            }

            // The buffer goes to the send queue with the reply.
            return new QueuedReply(request.Handle, ReplyKind.BlockStatus, NbdError.None, 0, buffer, 4 + (8 * count), null);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    /// <summary>Server-side checks done before the volume is touched.</summary>
    private (NbdError Error, string? Message) Validate(in NbdRequest request)
    {
        var allowed = _commonFlags;
        var needsRange = true;
        var isWrite = false;
        switch (request.Command)
        {
            case NbdCommand.Read:
                if (Has(TransmissionFlags.SendDf))
                {
                    allowed |= CommandFlags.DontFragment;
                }

                if (request.Length > (uint)_options.MaxRequestBytes)
                {
                    return (NbdError.EINVAL, $"read of {request.Length} bytes exceeds the maximum payload of {_options.MaxRequestBytes}");
                }

                break;

            case NbdCommand.Write:
                isWrite = true;
                if (request.Length > (uint)_options.MaxRequestBytes)
                {
                    return (NbdError.EINVAL, $"write of {request.Length} bytes exceeds the maximum payload of {_options.MaxRequestBytes}");
                }

                break;

            case NbdCommand.Flush:
                needsRange = false;
                if (!Has(TransmissionFlags.SendFlush))
                {
                    return (NbdError.EINVAL, "flush is not supported by this export");
                }

                if (request.Offset != 0 || request.Length != 0)
                {
                    return (NbdError.EINVAL, "flush requires offset and length 0");
                }

                break;

            case NbdCommand.Trim:
                isWrite = true;
                if (!Has(TransmissionFlags.SendTrim) && !Has(TransmissionFlags.ReadOnly))
                {
                    return (NbdError.EINVAL, "trim is not supported by this export");
                }

                break;

            case NbdCommand.WriteZeroes:
                isWrite = true;
                if (!Has(TransmissionFlags.SendWriteZeroes) && !Has(TransmissionFlags.ReadOnly))
                {
                    return (NbdError.EINVAL, "write zeroes is not supported by this export");
                }

                allowed |= CommandFlags.NoHole;
                if (Has(TransmissionFlags.SendFastZero))
                {
                    allowed |= CommandFlags.FastZero;
                }

                break;

            case NbdCommand.Cache:
                break;

            case NbdCommand.BlockStatus:
                if (!_export.BaseAllocation)
                {
                    return (NbdError.EINVAL, "no metadata context was negotiated for this export");
                }

                allowed |= CommandFlags.ReqOne;
                break;

            default:
                return (NbdError.EINVAL, $"unknown command {(ushort)request.Command}");
        }

        if ((request.Flags & ~allowed) != 0)
        {
            return (NbdError.EINVAL, $"command flags 0x{(ushort)request.Flags:x4} are not valid for this command");
        }

        if (isWrite && Has(TransmissionFlags.ReadOnly))
        {
            return (NbdError.EPERM, "the export is read-only");
        }

        if (needsRange)
        {
            if (request.Length == 0)
            {
                return (NbdError.EINVAL, "length must not be zero");
            }

            var size = (ulong)_export.Size;
            if (request.Offset > size || request.Length > size - request.Offset)
            {
                // Spec: ENOSPC for writes past the end, EINVAL for everything else.
                var error = request.Command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdError.ENOSPC : NbdError.EINVAL;
                return (error, $"offset {request.Offset} + length {request.Length} is beyond the export size {size}");
            }
        }

        return (NbdError.None, null);
    }

    private static NbdError Map(VolumeError error, NbdCommand command) => error switch
    {
        VolumeError.NoSpace => NbdError.ENOSPC,
        VolumeError.OutOfRange => NbdError.EINVAL,
        VolumeError.ReadOnly => NbdError.EPERM,

        // Spec: ENOTSUP only for WRITE_ZEROES (fast zero); elsewhere an unsupported request is EINVAL.
        VolumeError.NotSupported => command == NbdCommand.WriteZeroes ? NbdError.ENOTSUP : NbdError.EINVAL,
        _ => NbdError.EIO,
    };

    private static WriteFlags WriteFlagsOf(CommandFlags flags) =>
        (flags & CommandFlags.Fua) != 0 ? WriteFlags.Fua : WriteFlags.None;

    private bool Has(TransmissionFlags flag) => (_export.Flags & flag) != 0;

    private static void Return(byte[]? buffer)
    {
        if (buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void LogVanished()
    {
        Log.ClientVanished(_logger, _limiter.Count);
    }

    private QueuedReply ErrorReply(ulong handle, NbdError error, string message) =>
        new(handle, _structured ? ReplyKind.Error : ReplyKind.Simple, error, 0, null, 0, message);

    /// <summary>
    /// Waits until no send is running and nothing is queued; the session closes the socket only after this, so a reply
    /// being sent by a completing thread is not cut off.
    /// </summary>
    private async Task DrainAsync()
    {
        while (true)
        {
            Task stopped;
            lock (_gate)
            {
                if (!_sendRunning)
                {
                    if (_queued.Count == 0)
                    {
                        return;
                    }

                    stopped = Task.CompletedTask;
                }
                else
                {
                    _senderStopped ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    stopped = _senderStopped.Task;
                }
            }

            await stopped;
            await SendQueuedAsync();
        }
    }

    /// <summary>
    /// Sends every queued reply; one sender at a time, and a caller that finds a send running leaves its replies to it
    /// (the running sender looks again before it stops). Never throws: a failed send closes the connection's sending
    /// side, and later replies are dropped (the reader notices the dead connection on its own).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
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
            var failed = false;
            try
            {
                await SendBatchAsync(batch);
            }
            catch (Exception ex) when (ex is SocketException or IOException or ObjectDisposedException)
            {
                Log.ReplyFailed(_logger, ex, "reply batch");
                failed = true;
            }

            foreach (var queued in batch)
            {
                Return(queued.Payload);
                _limiter.Release(queued.Held);
            }

            batch.Clear();
            TaskCompletionSource? stopped;
            lock (_gate)
            {
                if (failed)
                {
                    _sendFailed = true;
                    foreach (var queued in _queued)
                    {
                        Return(queued.Payload);
                        _limiter.Release(queued.Held);
                    }

                    _queued.Clear();
                }

                if (_queued.Count != 0)
                {
                    batch = _queued;
                    _queued = _sending;
                    _sending = batch;
                    continue;
                }

                _sendRunning = false;
                stopped = _senderStopped;
                _senderStopped = null;
            }

            if (failed)
            {
                // Wake the reader: the connection is unusable.
                _connection.Shutdown();
            }

            stopped?.TrySetResult();
            return;
        }
    }

    /// <summary>
    /// Headers and small payloads are coalesced into the send buffer; a large payload goes out behind the coalesced
    /// bytes in the same send (a two-buffer gather), straight from its own buffer.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendBatchAsync(List<QueuedReply> batch)
    {
        var send = _send!;
        var used = 0;
        foreach (var reply in batch)
        {
            var data = reply.Kind is ReplyKind.SimpleData or ReplyKind.OffsetData or ReplyKind.BlockStatus ? reply.Length : 0;
            var inline = data <= CoalesceBytes;
            if (used + MaxHeaderBytes + (inline ? data : 0) > send.Length)
            {
                await _connection.SendAllAsync(send.AsMemory(0, used), CancellationToken.None);
                used = 0;
            }

            used += WriteHeader(reply, send.AsSpan(used));
            if (inline)
            {
                reply.Payload.AsSpan(0, data).CopyTo(send.AsSpan(used));
                used += data;
                continue;
            }

            _sendPair[0] = new ArraySegment<byte>(send, 0, used);
            _sendPair[1] = new ArraySegment<byte>(reply.Payload!, 0, data);
            await _connection.Transport.SendPairAsync(_sendPair, CancellationToken.None);
            _sendPair[0] = _sendPair[1] = default;
            used = 0;
        }

        if (used > 0)
        {
            await _connection.SendAllAsync(send.AsMemory(0, used), CancellationToken.None);
        }
    }

    /// <summary>Writes the reply's header (and an error's message) into <paramref name="span"/>; returns its length.</summary>
    private static int WriteHeader(in QueuedReply reply, Span<byte> span)
    {
        switch (reply.Kind)
        {
            case ReplyKind.Simple:
            case ReplyKind.SimpleData:
                BinaryPrimitives.WriteUInt32BigEndian(span, NbdConstants.SimpleReplyMagic);
                BinaryPrimitives.WriteUInt32BigEndian(span[4..], (uint)reply.Error);
                BinaryPrimitives.WriteUInt64BigEndian(span[8..], reply.Handle);
                return NbdConstants.SimpleReplyHeaderSize;

            case ReplyKind.OffsetData:
                WriteChunkHeader(span, ReplyFlags.Done, ReplyType.OffsetData, reply.Handle, (uint)(8 + reply.Length));
                BinaryPrimitives.WriteUInt64BigEndian(span[NbdConstants.StructuredReplyHeaderSize..], reply.Offset);
                return NbdConstants.StructuredReplyHeaderSize + 8;

            case ReplyKind.BlockStatus:
                WriteChunkHeader(span, ReplyFlags.Done, ReplyType.BlockStatus, reply.Handle, (uint)reply.Length);
                return NbdConstants.StructuredReplyHeaderSize;

            default:
                var message = reply.Message ?? "";
                var maxMessage = Math.Min(Encoding.UTF8.GetMaxByteCount(message.Length), NbdConstants.MaxStringLength);
                var messageLength = EncodeTruncated(message, span.Slice(NbdConstants.StructuredReplyHeaderSize + 6, maxMessage));
                WriteChunkHeader(span, ReplyFlags.Done, ReplyType.Error, reply.Handle, (uint)(6 + messageLength));
                BinaryPrimitives.WriteUInt32BigEndian(span[NbdConstants.StructuredReplyHeaderSize..], (uint)reply.Error);
                BinaryPrimitives.WriteUInt16BigEndian(span[(NbdConstants.StructuredReplyHeaderSize + 4)..], (ushort)messageLength);
                return NbdConstants.StructuredReplyHeaderSize + 6 + messageLength;
        }
    }

    private static void WriteChunkHeader(Span<byte> span, ReplyFlags flags, ReplyType type, ulong handle, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(span, NbdConstants.StructuredReplyMagic);
        BinaryPrimitives.WriteUInt16BigEndian(span[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(span[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(span[8..], handle);
        BinaryPrimitives.WriteUInt32BigEndian(span[16..], length);
    }

    private static int EncodeTruncated(string message, Span<byte> destination)
    {
        var encoder = Encoding.UTF8.GetEncoder();
        encoder.Convert(message, destination, flush: true, out _, out var bytesUsed, out _);
        return bytesUsed;
    }

    private enum ReplyKind : byte
    {
        /// <summary>Simple reply without payload: success of a non-read command (allowed even with structured replies), or an error without structured replies.</summary>
        Simple,

        /// <summary>Simple reply followed by READ data.</summary>
        SimpleData,

        /// <summary>Structured <c>OFFSET_DATA</c> chunk flagged done.</summary>
        OffsetData,

        /// <summary>Structured <c>BLOCK_STATUS</c> chunk flagged done; the payload is the context id and descriptors.</summary>
        BlockStatus,

        /// <summary>Structured <c>ERROR</c> chunk flagged done, carrying <see cref="QueuedReply.Message"/>.</summary>
        Error,
    }

    /// <summary>
    /// A reply waiting to be sent; owns <see cref="Payload"/> (pooled) and its request's in-flight slot of
    /// <see cref="Held"/> bytes until it has gone out.
    /// </summary>
    private readonly record struct QueuedReply(ulong Handle, ReplyKind Kind, NbdError Error, ulong Offset, byte[]? Payload, int Length, string? Message)
    {
        public long Held { get; init; }
    }

    /// <summary>What a request produced: its reply, and the bytes it moved (for metrics).</summary>
    private readonly record struct Outcome(QueuedReply Reply, long Bytes)
    {
        public static Outcome Ok(ulong handle, long bytes) => new(new QueuedReply(handle, ReplyKind.Simple, NbdError.None, 0, null, 0, null), bytes);

        public static Outcome Error(QueuedReply reply) => new(reply, 0);
    }
}
