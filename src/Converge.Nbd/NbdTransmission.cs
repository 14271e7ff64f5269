using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Converge.Common;
using Converge.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>
/// The transmission phase of one connection. A single reader loop parses requests (copying WRITE payloads into
/// pooled buffers as they arrive) and starts each one without waiting for it; replies go through
/// <see cref="NbdReplyWriter"/>. <see cref="InFlightLimiter"/> stops the reader when too much is outstanding.
/// </summary>
internal sealed class NbdTransmission
{
    private readonly PipeReader _reader;
    private readonly NbdReplyWriter _replies;
    private readonly NegotiatedExport _export;
    private readonly IBlockVolume _volume;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private readonly InFlightLimiter _limiter;
    private readonly CommandFlags _commonFlags;

    public NbdTransmission(IDuplexPipe transport, NegotiatedExport export, NbdServerOptions options, ILogger logger)
    {
        _reader = transport.Input;
        _replies = new NbdReplyWriter(transport.Output, export.StructuredReplies);
        _export = export;
        _volume = export.Volume;
        _options = options;
        _logger = logger;
        _limiter = new InFlightLimiter(options.MaxInFlightRequests, options.MaxInFlightBytes);
        _commonFlags = Has(TransmissionFlags.SendFua) ? CommandFlags.Fua : CommandFlags.None;
    }

    /// <summary>
    /// Serves requests until the client disconnects (softly or not) or <paramref name="cancellationToken"/> fires,
    /// then waits for every started request to finish so no buffer or task outlives the session.
    /// </summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            await ReadLoopAsync(cancellationToken);
        }
        finally
        {
            // Spec (NBD_CMD_DISC): outstanding requests MUST be handled before the connection closes.
            await _limiter.WaitIdleAsync();
        }
    }

    private async Task ReadLoopAsync(CancellationToken cancellationToken)
    {
        var header = new byte[NbdConstants.RequestHeaderSize];
        while (true)
        {
            if (!await PipeReading.ReadExactAsync(_reader, header, cancellationToken))
            {
                LogVanished();
                return;
            }

            var request = NbdRequest.Parse(header);
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
                    // The client broke the advertised maximum payload. The payload is still consumed (streamed
                    // and discarded, never buffered) so framing survives, and the request fails with EINVAL.
                    Log.OversizedWrite(_logger, request.Length, _options.MaxRequestBytes);
                    if (!await PipeReading.SkipAsync(_reader, request.Length, cancellationToken))
                    {
                        LogVanished();
                        return;
                    }

                    await _limiter.AcquireAsync(0, cancellationToken);
                    _ = ExecuteAsync(request, null, _options.Time.GetTimestamp());
                    break;

                case NbdCommand.Write:
                    var length = (int)request.Length;
                    await _limiter.AcquireAsync(length, cancellationToken);
                    var payload = length == 0 ? null : ArrayPool<byte>.Shared.Rent(length);
                    bool complete;
                    try
                    {
                        complete = payload is null || await PipeReading.ReadExactAsync(_reader, payload.AsMemory(0, length), cancellationToken);
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

                    _ = ExecuteAsync(request, payload, _options.Time.GetTimestamp());
                    break;

                default:
                    await _limiter.AcquireAsync(AccountedBytes(request), cancellationToken);
                    _ = ExecuteAsync(request, null, _options.Time.GetTimestamp());
                    break;
            }
        }
    }

    private long AccountedBytes(in NbdRequest request) => request.Command switch
    {
        NbdCommand.Read => Math.Min(request.Length, (uint)_options.MaxRequestBytes),
        NbdCommand.Write => request.Length <= (uint)_options.MaxRequestBytes ? request.Length : 0,
        _ => 0,
    };

    /// <summary>Runs one request to completion, replies, and releases everything it holds. Never throws.</summary>
    private async Task ExecuteAsync(NbdRequest request, byte[]? payload, long startTimestamp)
    {
        var accounted = AccountedBytes(request);
        var error = NbdError.None;
        long bytes = 0;
        try
        {
            string? message;
            (error, message) = Validate(request);
            if (error != NbdError.None)
            {
                Log.RequestRejected(_logger, NbdMetrics.OpName(request.Command), request.Offset, request.Length, NbdMetrics.ErrorName(error), message!);
                await _replies.SendErrorAsync(request.Handle, error, message!);
                return;
            }

            try
            {
                bytes = await PerformAsync(request, payload);
            }
            catch (VolumeException ex)
            {
                error = Map(ex.Error, request.Command);
                Log.VolumeFailed(_logger, NbdMetrics.OpName(request.Command), request.Offset, request.Length, NbdMetrics.ErrorName(error), ex.Message);
                await _replies.SendErrorAsync(request.Handle, error, ex.Message);
            }
            catch (OperationCanceledException ex)
            {
                error = NbdError.ESHUTDOWN;
                Log.VolumeFailed(_logger, NbdMetrics.OpName(request.Command), request.Offset, request.Length, NbdMetrics.ErrorName(error), ex.Message);
                await _replies.SendErrorAsync(request.Handle, error, "the server is shutting down");
            }
            catch (Exception ex) when (ex is not IOException)
            {
                error = NbdError.EIO;
                Log.VolumeBug(_logger, ex, NbdMetrics.OpName(request.Command), request.Offset, request.Length);
                await _replies.SendErrorAsync(request.Handle, error, "internal server error");
            }
        }
        catch (Exception ex)
        {
            // Sending the reply failed: the connection is gone. The reader loop will notice on its own.
            Log.ReplyFailed(_logger, ex, NbdMetrics.OpName(request.Command));
        }
        finally
        {
            Return(payload);
            _limiter.Release(accounted);
            NbdMetrics.RequestCompleted(request.Command, bytes, error, _options.Time.GetElapsedTime(startTimestamp));
        }
    }

    /// <summary>Does the work and sends the success reply; returns the bytes moved for metrics.</summary>
    private async ValueTask<long> PerformAsync(NbdRequest request, byte[]? payload)
    {
        var offset = (long)request.Offset;
        var length = (int)Math.Min(request.Length, int.MaxValue);
        switch (request.Command)
        {
            case NbdCommand.Read:
                var buffer = ArrayPool<byte>.Shared.Rent(length);
                try
                {
                    var memory = buffer.AsMemory(0, length);
                    await _volume.ReadAsync(offset, memory, CancellationToken.None);
                    await _replies.SendReadDataAsync(request.Handle, request.Offset, memory);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }

                return length;

            case NbdCommand.Write:
                await _volume.WriteAsync(offset, payload.AsMemory(0, length), WriteFlagsOf(request.Flags), CancellationToken.None);
                await _replies.SendOkAsync(request.Handle);
                return length;

            case NbdCommand.Flush:
                await _volume.FlushAsync(CancellationToken.None);
                await _replies.SendOkAsync(request.Handle);
                return 0;

            case NbdCommand.Trim:
                await _volume.TrimAsync(offset, request.Length, WriteFlagsOf(request.Flags), CancellationToken.None);
                await _replies.SendOkAsync(request.Handle);
                return request.Length;

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
                await _replies.SendOkAsync(request.Handle);
                return request.Length;

            case NbdCommand.Cache:
                // A hint; validated above, nothing to do (the volume has no read-ahead cache to warm).
                await _replies.SendOkAsync(request.Handle);
                return 0;

            case NbdCommand.BlockStatus:
                await BlockStatusAsync(request);
                return 0;

            default:
                throw new InvalidOperationException($"unvalidated command {request.Command}");
        }
    }

    private async ValueTask BlockStatusAsync(NbdRequest request)
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

            await _replies.SendBlockStatusAsync(request.Handle, buffer.AsMemory(0, 4 + (8 * count)));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
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
}
