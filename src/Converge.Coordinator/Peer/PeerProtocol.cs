using System.Buffers.Binary;

namespace Converge.Coordinator.Peer;

public enum PeerOp : byte
{
    Ping = 0,
    Read = 1,
    Write = 2,
    Flush = 3,
    Trim = 4,
    WriteZeroes = 5,
    EnsureComponent = 6,
    DeleteComponent = 7,
    DiskStats = 8,
    BlockStatus = 9,

    /// <summary>Reads a component's change map: Offset = where to start, Length = <c>ChangeKinds</c>; replies (offset, length) pairs.</summary>
    ReadChanges = 10,

    /// <summary>Clears change-map bits: Offset = start; payload = kinds (u64), length (u64).</summary>
    ClearChanges = 11,
}

[Flags]
public enum PeerFlags : byte
{
    None = 0,
    Fua = 1,
    NoHole = 2,
    FastZero = 4,

    /// <summary>
    /// Object-level (proxied) I/O: <see cref="PeerRequestHeader.Target"/> is a virtual disk's object id and the receiving
    /// host serves the request through its coordinator of that object (it must hold the object's lease).
    /// </summary>
    Object = 8,

    /// <summary>Record the write in the component's change map first (<c>ChangeKinds.Intent0</c>).</summary>
    TrackIntent0 = 16,

    /// <summary>Record the write in the component's change map first (<c>ChangeKinds.Intent1</c>).</summary>
    TrackIntent1 = 32,

    /// <summary>Record the write in the component's change map first (<c>ChangeKinds.Dirty</c>).</summary>
    TrackDirty = 64,

    /// <summary>A resync or rebuild copy: <c>WriteFlags.Bulk</c>.</summary>
    Bulk = 128,
}

/// <summary>
/// A host-to-host request. <see cref="Target"/> names a component (or an object, for proxied I/O);
/// <see cref="Generation"/> and <see cref="Epoch"/> fence requests from an out-of-date coordinator.
/// </summary>
public readonly record struct PeerRequestHeader(
    PeerOp Op,
    PeerFlags Flags,
    ulong RequestId,
    Guid Target,
    long Generation,
    long Epoch,
    long Offset,
    int Length)
{
    public const int Size = 64;
    public const uint Magic = 0x31505643; // "CVP1"

    /// <summary>Bytes of payload that follow the header on the wire.</summary>
    public int PayloadLength => Op is PeerOp.Write or PeerOp.EnsureComponent or PeerOp.ClearChanges ? Length : 0;

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        destination[4] = (byte)Op;
        destination[5] = (byte)Flags;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], RequestId);
        Target.TryWriteBytes(destination[16..32]);
        BinaryPrimitives.WriteInt64LittleEndian(destination[32..], Generation);
        BinaryPrimitives.WriteInt64LittleEndian(destination[40..], Epoch);
        BinaryPrimitives.WriteInt64LittleEndian(destination[48..], Offset);
        BinaryPrimitives.WriteInt32LittleEndian(destination[56..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[60..], 0);
    }

    /// <summary>Parses a header; false when the magic or fields are malformed (the connection is then dropped).</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out PeerRequestHeader header)
    {
        header = default;
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic || source[4] > (byte)PeerOp.ClearChanges)
        {
            return false;
        }

        var length = BinaryPrimitives.ReadInt32LittleEndian(source[56..]);
        var offset = BinaryPrimitives.ReadInt64LittleEndian(source[48..]);
        if (length < 0 || offset < 0)
        {
            return false;
        }

        header = new PeerRequestHeader(
            (PeerOp)source[4],
            (PeerFlags)source[5],
            BinaryPrimitives.ReadUInt64LittleEndian(source[8..]),
            new Guid(source[16..32]),
            BinaryPrimitives.ReadInt64LittleEndian(source[32..]),
            BinaryPrimitives.ReadInt64LittleEndian(source[40..]),
            offset,
            length);
        return true;
    }
}

/// <summary>A reply: status 0 is success, otherwise a <see cref="Common.VolumeError"/> + 1.</summary>
public readonly record struct PeerReplyHeader(ulong RequestId, int Status, int Length)
{
    public const int Size = 24;
    public const uint Magic = 0x31525643; // "CVR1"

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], Status);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], RequestId);
        BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], 0);
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out PeerReplyHeader header)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(source[16..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic || length < 0)
        {
            header = default;
            return false;
        }

        header = new PeerReplyHeader(BinaryPrimitives.ReadUInt64LittleEndian(source[8..]), BinaryPrimitives.ReadInt32LittleEndian(source[4..]), length);
        return true;
    }
}
