using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Text;

namespace Converge.Nbd.Protocol;

/// <summary>
/// Serialises replies from concurrently executing requests onto the connection's <see cref="PipeWriter"/>.
/// Each reply (header and payload) is written and flushed under one lock, so replies never interleave mid-message.
/// </summary>
internal sealed class NbdReplyWriter
{
    private readonly PipeWriter _writer;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly bool _structured;

    public NbdReplyWriter(PipeWriter writer, bool structured)
    {
        _writer = writer;
        _structured = structured;
    }

    /// <summary>Success reply without payload (a simple reply is allowed for these even with structured replies).</summary>
    public ValueTask SendOkAsync(ulong handle) => SendSimpleAsync(handle, NbdError.None, default);

    /// <summary>Successful read: one simple reply with data, or one <c>OFFSET_DATA</c> chunk flagged done.</summary>
    public async ValueTask SendReadDataAsync(ulong handle, ulong offset, ReadOnlyMemory<byte> data)
    {
        if (!_structured)
        {
            await SendSimpleAsync(handle, NbdError.None, data);
            return;
        }

        await _lock.WaitAsync();
        try
        {
            var header = _writer.GetSpan(NbdConstants.StructuredReplyHeaderSize + 8);
            WriteChunkHeader(header, ReplyFlags.Done, ReplyType.OffsetData, handle, (uint)(8 + data.Length));
            BinaryPrimitives.WriteUInt64BigEndian(header[NbdConstants.StructuredReplyHeaderSize..], offset);
            _writer.Advance(NbdConstants.StructuredReplyHeaderSize + 8);
            _writer.Write(data.Span);
            await _writer.FlushAsync();
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Block status: one <c>BLOCK_STATUS</c> chunk flagged done; <paramref name="payload"/> is context id + descriptors.</summary>
    public async ValueTask SendBlockStatusAsync(ulong handle, ReadOnlyMemory<byte> payload)
    {
        await _lock.WaitAsync();
        try
        {
            var header = _writer.GetSpan(NbdConstants.StructuredReplyHeaderSize);
            WriteChunkHeader(header, ReplyFlags.Done, ReplyType.BlockStatus, handle, (uint)payload.Length);
            _writer.Advance(NbdConstants.StructuredReplyHeaderSize);
            _writer.Write(payload.Span);
            await _writer.FlushAsync();
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>Error: a structured <c>ERROR</c> chunk carrying <paramref name="message"/> when negotiated, else a simple reply.</summary>
    public async ValueTask SendErrorAsync(ulong handle, NbdError error, string message)
    {
        if (!_structured)
        {
            await SendSimpleAsync(handle, error, default);
            return;
        }

        var maxMessage = Math.Min(Encoding.UTF8.GetMaxByteCount(message.Length), NbdConstants.MaxStringLength);
        await _lock.WaitAsync();
        try
        {
            var span = _writer.GetSpan(NbdConstants.StructuredReplyHeaderSize + 6 + maxMessage);
            var messageLength = EncodeTruncated(message, span.Slice(NbdConstants.StructuredReplyHeaderSize + 6, maxMessage));
            WriteChunkHeader(span, ReplyFlags.Done, ReplyType.Error, handle, (uint)(6 + messageLength));
            BinaryPrimitives.WriteUInt32BigEndian(span[NbdConstants.StructuredReplyHeaderSize..], (uint)error);
            BinaryPrimitives.WriteUInt16BigEndian(span[(NbdConstants.StructuredReplyHeaderSize + 4)..], (ushort)messageLength);
            _writer.Advance(NbdConstants.StructuredReplyHeaderSize + 6 + messageLength);
            await _writer.FlushAsync();
        }
        finally
        {
            _lock.Release();
        }
    }

    private async ValueTask SendSimpleAsync(ulong handle, NbdError error, ReadOnlyMemory<byte> data)
    {
        await _lock.WaitAsync();
        try
        {
            var header = _writer.GetSpan(NbdConstants.SimpleReplyHeaderSize);
            BinaryPrimitives.WriteUInt32BigEndian(header, NbdConstants.SimpleReplyMagic);
            BinaryPrimitives.WriteUInt32BigEndian(header[4..], (uint)error);
            BinaryPrimitives.WriteUInt64BigEndian(header[8..], handle);
            _writer.Advance(NbdConstants.SimpleReplyHeaderSize);
            if (!data.IsEmpty)
            {
                _writer.Write(data.Span);
            }

            await _writer.FlushAsync();
        }
        finally
        {
            _lock.Release();
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
}
