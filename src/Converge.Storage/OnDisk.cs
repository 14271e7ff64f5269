using System.Buffers.Binary;
using System.Text;
using Converge.Common;

namespace Converge.Storage;

/// <summary>Region offsets of a disk file; see docs/local-store.md, "On-disk layout".</summary>
internal sealed record Layout(long FileSize, long SlotBytes, long LogOffset, long LogBytes, long DataOffset, long DataBlocks)
{
    public const long SuperblockBytes = BlockGeometry.BlockSize;
    public const long MinLogBytes = 4L << 20;
    public const long MinDataBytes = 64L << 20;

    /// <summary>Physical block numbers are stored as 32 bits (plus one, so 0 means unmapped).</summary>
    public const long MaxDataBlocks = uint.MaxValue - 1;

    public long SlotOffset(int slot) => (2 * SuperblockBytes) + (slot * SlotBytes);

    public long DataBytes => DataBlocks * BlockGeometry.BlockSize;

    public long BlockOffset(long physical) => DataOffset + (physical << BlockGeometry.BlockShift);

    public static Layout Compute(long fileSize, long logBytes)
    {
        if (logBytes < MinLogBytes || logBytes % BlockGeometry.BlockSize != 0)
        {
            throw new ArgumentException($"log size {logBytes} must be a multiple of 4096 and at least {MinLogBytes} bytes", nameof(logBytes));
        }

        if (fileSize % BlockGeometry.BlockSize != 0)
        {
            throw new ArgumentException($"disk size {fileSize} must be a multiple of 4096", nameof(fileSize));
        }

        // Worst case is 16 bytes per data block: an 8-byte entry plus an 8-byte run header when every mapped block is a
        // run of its own (thin overcommit lets logical space exceed physical, so nothing bounds runs below blocks).
        // Sized from the file size rather than the (smaller) data region, plus room for component headers.
        var slot = AlignUp((fileSize / 256) + (1L << 20), BlockGeometry.BlockSize);
        var logOffset = (2 * SuperblockBytes) + (2 * slot);
        var dataOffset = AlignUp(logOffset + logBytes, 1L << 20);
        var dataBlocks = (fileSize - dataOffset) / BlockGeometry.BlockSize;
        if (dataBlocks * BlockGeometry.BlockSize < MinDataBytes)
        {
            throw new ArgumentException(
                $"disk size {ByteSize.Format(fileSize)} leaves {ByteSize.Format(Math.Max(0, dataBlocks) * BlockGeometry.BlockSize)} for data after metadata; at least {ByteSize.Format(MinDataBytes)} is needed",
                nameof(fileSize));
        }

        if (dataBlocks > MaxDataBlocks)
        {
            throw new ArgumentException($"disk size {ByteSize.Format(fileSize)} exceeds the supported 16 TiB data region", nameof(fileSize));
        }

        return new Layout(fileSize, slot, logOffset, logBytes, dataOffset, dataBlocks);
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;
}

internal sealed record Superblock(Guid DiskId, Layout Layout, int ActiveSlot, long CheckpointLsn, long CheckpointLength, uint CheckpointCrc, long Sequence)
{
    public const int Version = 1;
    private const int CrcOffset = 136;
    private static ReadOnlySpan<byte> Magic => "CVGDISK1"u8;

    /// <summary>Copies alternate between offset 0 and 4096, so a torn write leaves the other one intact.</summary>
    public long FileOffset => (Sequence & 1) * Layout.SuperblockBytes;

    public void Write(Span<byte> block)
    {
        block[..(int)Layout.SuperblockBytes].Clear();
        Magic.CopyTo(block);
        BinaryPrimitives.WriteInt32LittleEndian(block[8..], Version);
        DiskId.TryWriteBytes(block[16..]);
        BinaryPrimitives.WriteInt64LittleEndian(block[32..], Layout.FileSize);
        BinaryPrimitives.WriteInt64LittleEndian(block[40..], Layout.SlotBytes);
        BinaryPrimitives.WriteInt64LittleEndian(block[48..], Layout.SlotOffset(0));
        BinaryPrimitives.WriteInt64LittleEndian(block[56..], Layout.SlotOffset(1));
        BinaryPrimitives.WriteInt64LittleEndian(block[64..], Layout.LogOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[72..], Layout.LogBytes);
        BinaryPrimitives.WriteInt64LittleEndian(block[80..], Layout.DataOffset);
        BinaryPrimitives.WriteInt64LittleEndian(block[88..], Layout.DataBlocks);
        BinaryPrimitives.WriteInt32LittleEndian(block[96..], ActiveSlot);
        BinaryPrimitives.WriteInt64LittleEndian(block[104..], CheckpointLsn);
        BinaryPrimitives.WriteInt64LittleEndian(block[112..], CheckpointLength);
        BinaryPrimitives.WriteUInt32LittleEndian(block[120..], CheckpointCrc);
        BinaryPrimitives.WriteInt64LittleEndian(block[128..], Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(block[CrcOffset..], Checksums.Crc32C(block[..CrcOffset]));
    }

    /// <summary>Null when the copy is not a valid superblock (never written, torn, or foreign data).</summary>
    public static Superblock? TryRead(ReadOnlySpan<byte> block, out string problem)
    {
        problem = string.Empty;
        if (!block[..8].SequenceEqual(Magic))
        {
            problem = "bad magic";
            return null;
        }

        if (BinaryPrimitives.ReadUInt32LittleEndian(block[CrcOffset..]) != Checksums.Crc32C(block[..CrcOffset]))
        {
            problem = "checksum mismatch";
            return null;
        }

        var version = BinaryPrimitives.ReadInt32LittleEndian(block[8..]);
        if (version != Version)
        {
            problem = $"unsupported format version {version}";
            return null;
        }

        var layout = new Layout(
            BinaryPrimitives.ReadInt64LittleEndian(block[32..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[40..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[64..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[72..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[80..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[88..]));
        var slot = BinaryPrimitives.ReadInt32LittleEndian(block[96..]);
        var length = BinaryPrimitives.ReadInt64LittleEndian(block[112..]);
        if (slot is not (0 or 1) || layout.LogBytes < Layout.MinLogBytes || layout.DataBlocks <= 0 || layout.DataBlocks > Layout.MaxDataBlocks
            || layout.DataOffset + layout.DataBytes > layout.FileSize || length < 0 || length > layout.SlotBytes)
        {
            problem = "inconsistent region sizes";
            return null;
        }

        return new Superblock(
            new Guid(block.Slice(16, 16)),
            layout,
            slot,
            BinaryPrimitives.ReadInt64LittleEndian(block[104..]),
            length,
            BinaryPrimitives.ReadUInt32LittleEndian(block[120..]),
            BinaryPrimitives.ReadInt64LittleEndian(block[128..]));
    }
}

internal enum RecordType : ushort
{
    Pad = 1,
    CreateComponent = 2,
    ResizeComponent = 3,
    DeleteComponent = 4,
    Map = 5,
    Unmap = 6,
    Synced = 7,
}

/// <summary>
/// Log record framing: magic u32, type u16, reserved u16, length u32 (whole record, 8-byte aligned), CRC-32C u32
/// (over the record with this field zero; a pad record covers its header only), LSN i64 (absolute log byte position).
/// </summary>
internal static class LogRecord
{
    public const int HeaderSize = 24;
    public const uint Magic = 0x4C475643; // "CVGL"
    public const int MapFixed = 40;

    public static int MapLength(int count) => Align(HeaderSize + MapFixed + (4 * count));

    public static int Align(int length) => (length + 7) & ~7;

    public static void WriteHeader(Span<byte> record, RecordType type, int length)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(record, Magic);
        BinaryPrimitives.WriteUInt16LittleEndian(record[4..], (ushort)type);
        BinaryPrimitives.WriteUInt16LittleEndian(record[6..], 0);
        BinaryPrimitives.WriteInt32LittleEndian(record[8..], length);
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], 0);
        BinaryPrimitives.WriteInt64LittleEndian(record[16..], 0);
    }

    /// <summary>Stamps the LSN and CRC; the record's length field must be set.</summary>
    public static void Seal(Span<byte> record, long lsn)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], 0);
        BinaryPrimitives.WriteInt64LittleEndian(record[16..], lsn);
        var type = (RecordType)BinaryPrimitives.ReadUInt16LittleEndian(record[4..]);
        var covered = type == RecordType.Pad ? record[..HeaderSize] : record;
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], Checksums.Crc32C(covered));
    }

    public static int WriteMap(Span<byte> record, Guid component, long firstLogical, int count, long firstPhysical, ReadOnlySpan<uint> crcs)
    {
        var length = MapLength(count);
        record[..length].Clear();
        WriteHeader(record, RecordType.Map, length);
        var p = record[HeaderSize..];
        component.TryWriteBytes(p);
        BinaryPrimitives.WriteInt64LittleEndian(p[16..], firstLogical);
        BinaryPrimitives.WriteInt32LittleEndian(p[24..], count);
        BinaryPrimitives.WriteInt64LittleEndian(p[32..], firstPhysical);
        for (var i = 0; i < count; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(p[(MapFixed + (4 * i))..], crcs[i]);
        }

        return length;
    }

    public static int WriteUnmap(Span<byte> record, Guid component, long firstLogical, long count)
    {
        var length = Align(HeaderSize + 32);
        record[..length].Clear();
        WriteHeader(record, RecordType.Unmap, length);
        var p = record[HeaderSize..];
        component.TryWriteBytes(p);
        BinaryPrimitives.WriteInt64LittleEndian(p[16..], firstLogical);
        BinaryPrimitives.WriteInt64LittleEndian(p[24..], count);
        return length;
    }

    public static int WriteCreate(Span<byte> record, Guid component, long size, string name)
    {
        var nameBytes = Encoding.UTF8.GetByteCount(name);
        var length = Align(HeaderSize + 26 + nameBytes);
        record[..length].Clear();
        WriteHeader(record, RecordType.CreateComponent, length);
        var p = record[HeaderSize..];
        component.TryWriteBytes(p);
        BinaryPrimitives.WriteInt64LittleEndian(p[16..], size);
        BinaryPrimitives.WriteUInt16LittleEndian(p[24..], (ushort)nameBytes);
        Encoding.UTF8.GetBytes(name, p[26..]);
        return length;
    }

    public static int WriteResize(Span<byte> record, Guid component, long size)
    {
        var length = Align(HeaderSize + 24);
        record[..length].Clear();
        WriteHeader(record, RecordType.ResizeComponent, length);
        component.TryWriteBytes(record[HeaderSize..]);
        BinaryPrimitives.WriteInt64LittleEndian(record[(HeaderSize + 16)..], size);
        return length;
    }

    public static int WriteDelete(Span<byte> record, Guid component)
    {
        var length = Align(HeaderSize + 16);
        record[..length].Clear();
        WriteHeader(record, RecordType.DeleteComponent, length);
        component.TryWriteBytes(record[HeaderSize..]);
        return length;
    }

    public static int WriteSynced(Span<byte> record, long syncedLsn)
    {
        var length = Align(HeaderSize + 8);
        record[..length].Clear();
        WriteHeader(record, RecordType.Synced, length);
        BinaryPrimitives.WriteInt64LittleEndian(record[HeaderSize..], syncedLsn);
        return length;
    }
}
