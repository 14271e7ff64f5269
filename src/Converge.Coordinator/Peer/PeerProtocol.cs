using System.Buffers.Binary;
using Converge.Common;

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
/// On the wire the header carries two CRC-32Cs: <see cref="PayloadCrc"/>, of the payload that follows, and one of the
/// header itself. TCP's 16-bit checksum lets rare corruptions through (bad NICs, offload bugs, memory errors on the
/// path); a write damaged on the way must be refused, not stored under a checksum computed from the damaged bytes,
/// where no later read or scrub could tell it from good data.
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
    public const int Size = 68;
    public const uint Magic = 0x32505643; // "CVP2": CVP1 had no checksums

    /// <summary>Bytes of payload that follow the header on the wire.</summary>
    public int PayloadLength => Op is PeerOp.Write or PeerOp.EnsureComponent or PeerOp.ClearChanges ? Length : 0;

    /// <summary>CRC-32C of the payload (0 without one); the sender sets it, the receiver checks it.</summary>
    public uint PayloadCrc { get; init; }

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
        BinaryPrimitives.WriteUInt32LittleEndian(destination[60..], PayloadCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[64..], Checksums.Crc32C(destination[..64]));
    }

    /// <summary>Parses a header; false when the magic, the header's checksum or a field is bad (the connection is then dropped).</summary>
    public static bool TryRead(ReadOnlySpan<byte> source, out PeerRequestHeader header)
    {
        header = default;
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic || source[4] > (byte)PeerOp.ClearChanges ||
            BinaryPrimitives.ReadUInt32LittleEndian(source[64..]) != Checksums.Crc32C(source[..64]))
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
            length)
        {
            PayloadCrc = BinaryPrimitives.ReadUInt32LittleEndian(source[60..]),
        };
        return true;
    }
}

/// <summary>
/// A reply: status 0 is success, otherwise a <see cref="Common.VolumeError"/> + 1. Carries a CRC-32C of its payload and
/// one of the header itself, like a request.
/// </summary>
public readonly record struct PeerReplyHeader(ulong RequestId, int Status, int Length)
{
    public const int Size = 28;
    public const uint Magic = 0x32525643; // "CVR2": CVR1 had no checksums

    /// <summary>CRC-32C of the reply payload (0 without one).</summary>
    public uint PayloadCrc { get; init; }

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], Status);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], RequestId);
        BinaryPrimitives.WriteInt32LittleEndian(destination[16..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[20..], PayloadCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[24..], Checksums.Crc32C(destination[..24]));
    }

    public static bool TryRead(ReadOnlySpan<byte> source, out PeerReplyHeader header)
    {
        var length = BinaryPrimitives.ReadInt32LittleEndian(source[16..]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic || length < 0 ||
            BinaryPrimitives.ReadUInt32LittleEndian(source[24..]) != Checksums.Crc32C(source[..24]))
        {
            header = default;
            return false;
        }

        header = new PeerReplyHeader(BinaryPrimitives.ReadUInt64LittleEndian(source[8..]), BinaryPrimitives.ReadInt32LittleEndian(source[4..]), length)
        {
            PayloadCrc = BinaryPrimitives.ReadUInt32LittleEndian(source[20..]),
        };
        return true;
    }
}

/// <summary>A reply payload that did not match its checksum: damaged between the hosts (the serving store had verified it).</summary>
public sealed class PeerTransitException(string message) : VolumeException(VolumeError.ChecksumMismatch, message);
