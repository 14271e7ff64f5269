using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Converge.Common;
using Microsoft.Win32.SafeHandles;

namespace Converge.Storage;

// Opening a disk: superblock, checkpoint, log replay with verification of unsynced records, new checkpoint.
public sealed partial class StoreDisk
{
    /// <summary>Blocks of unsynced Map records whose data failed verification at the last open (kept their old mapping).</summary>
    internal int RecoveryRejectedBlocks { get; private set; }

    internal int RecoveryRecords { get; private set; }

    /// <summary>
    /// Blocks whose newest write was lost at the last open: its unsynced Map record survived the crash but its data did
    /// not, so the block kept older content (or none). A block written again since, in a record that verified, or
    /// trimmed by a later record, is not counted: its newest state survived.
    /// </summary>
    public long RecoveryLostWrites { get; private set; }

    /// <summary>Of <see cref="RecoveryLostWrites"/>, the blocks <see cref="StoreDiskOptions.OnLostWrite"/> replaced.</summary>
    public long RecoveryReplacedBlocks { get; private set; }

    // During replay only: per component, the blocks whose newest unsynced Map record failed verification so far.
    private Dictionary<Guid, BlockSet>? _lostWrites;

    /// <summary>Opens and recovers a disk; throws <see cref="DiskOpenException"/> when it is missing or corrupt, never reformats.</summary>
    public static async Task<StoreDisk> OpenAsync(string path, StoreDiskOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        if (!File.Exists(path))
        {
            throw new DiskOpenException(DiskState.Missing, path, $"disk {path} is missing (file not found); refusing to recreate it");
        }

        SafeFileHandle handle;
        try
        {
            handle = Native.OpenDiskFile(path, createNew: false);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new DiskOpenException(DiskState.Missing, path, $"disk {path} is missing (file not found); refusing to recreate it", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DiskOpenException(DiskState.Failed, path, $"disk {path} cannot be opened ({e.Message}); is it in use by another process?", e);
        }

        StoreDisk? disk = null;
        try
        {
            var superblock = await ReadSuperblockAsync(path, handle, ct);
            disk = new StoreDisk(path, handle, superblock, options);
            await disk.RecoverAsync(superblock, ct);
            disk._background = disk.BackgroundLoopAsync(disk._stop.Token);
            Log.Opened(disk._logger, path, disk.Id, disk._components.Count, disk.UsedBytes, disk.RecoveryRecords, disk.RecoveryRejectedBlocks);
            return disk;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            handle.Dispose();
            throw new DiskOpenException(DiskState.Failed, path, $"disk {path} could not be read: {e.Message}", e);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static DiskOpenException Corrupt(string path, string reason) =>
        new(DiskState.Corrupt, path, $"disk {path} is corrupt: {reason}; refusing to reformat it");

    private static async Task<Superblock> ReadSuperblockAsync(string path, SafeFileHandle handle, CancellationToken ct)
    {
        var length = RandomAccess.GetLength(handle);
        if (length < 2 * Layout.SuperblockBytes)
        {
            throw Corrupt(path, $"the file is {length} bytes, shorter than its superblocks");
        }

        var blocks = new byte[2 * Layout.SuperblockBytes];
        await ReadFullyAsync(handle, blocks, 0, ct);
        var a = Superblock.TryRead(blocks.AsSpan(0, (int)Layout.SuperblockBytes), out var problemA);
        var b = Superblock.TryRead(blocks.AsSpan((int)Layout.SuperblockBytes), out var problemB);
        var superblock = (a, b) switch
        {
            (null, null) => throw Corrupt(path, $"no valid superblock (copy A: {problemA}; copy B: {problemB})"),
            (not null, null) => a,
            (null, not null) => b,
            _ => a.Sequence >= b.Sequence ? a : b,
        };

        if (length < superblock.Layout.FileSize)
        {
            throw Corrupt(path, $"the file is {length} bytes but its superblock says {superblock.Layout.FileSize}");
        }

        return superblock;
    }

    private static async Task ReadFullyAsync(SafeFileHandle handle, Memory<byte> target, long offset, CancellationToken ct)
    {
        while (target.Length > 0)
        {
            var n = await RandomAccess.ReadAsync(handle, target, offset, ct);
            if (n == 0)
            {
                throw new EndOfStreamException($"unexpected end of file at {offset}");
            }

            target = target[n..];
            offset += n;
        }
    }

    private async Task RecoverAsync(Superblock superblock, CancellationToken ct)
    {
        var image = new byte[superblock.CheckpointLength];
        await ReadFullyAsync(_handle, image, _layout.SlotOffset(superblock.ActiveSlot), ct);
        if (Checksums.Crc32C(image) != superblock.CheckpointCrc)
        {
            throw Corrupt(Path, $"checkpoint slot {superblock.ActiveSlot} fails its checksum");
        }

        try
        {
            var (_, components) = CheckpointImage.Parse(image);
            foreach (var entry in components)
            {
                var component = new StoreComponent(this, entry.Id, entry.Name, entry.Size);
                foreach (var (firstLogical, entries) in entry.Runs)
                {
                    for (var i = 0; i < entries.Length; i++)
                    {
                        component.Map.Set(firstLogical + i, entries[i]);
                    }
                }

                _components.Add(entry.Id, component);
            }
        }
        catch (Exception e) when (e is InvalidDataException or ArgumentException)
        {
            throw Corrupt(Path, $"checkpoint slot {superblock.ActiveSlot} cannot be parsed ({e.Message})");
        }

        var end = await ReplayLogAsync(superblock.CheckpointLsn, ct);
        RebuildAllocation();

        // Before the checkpoint below: once it is written the log that showed which writes were lost is gone, and the
        // checkpoint's own fdatasync makes the replacements durable first.
        var superseded = await ReplaceLostWritesAsync(ct);

        // Start the next records two log lengths on: records of the crashed run beyond the replayed prefix can then
        // never carry an LSN the reader expects, so they are never replayed over newer state.
        var logBytes = _layout.LogBytes;
        _head = ((end / logBytes) + 2) * logBytes;
        _tail = _head;
        _lastSyncedHead = _head;
        await CheckpointCoreAsync(ct);

        // Only now: until the checkpoint above was durable, a crash would have replayed the old state onto these.
        foreach (var block in superseded)
        {
            _allocator.Release(block, 1);
        }
    }

    private readonly record struct RecordRef(int Position, int Length, long Lsn, RecordType Type);

    private async Task<long> ReplayLogAsync(long startLsn, CancellationToken ct)
    {
        var logBytes = (int)_layout.LogBytes;
        var log = ArrayPool<byte>.Shared.Rent(logBytes);
        try
        {
            await ReadFullyAsync(_handle, log.AsMemory(0, logBytes), _layout.LogOffset, ct);
            var records = new List<RecordRef>();
            var lsn = startLsn;
            long consumed = 0;
            long syncedUpTo = 0;
            while (consumed < logBytes)
            {
                var position = (int)(lsn % logBytes);
                var remaining = logBytes - position;
                if (remaining < LogRecord.HeaderSize)
                {
                    lsn += remaining;
                    consumed += remaining;
                    continue;
                }

                var header = log.AsSpan(position, LogRecord.HeaderSize);
                var length = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
                if (BinaryPrimitives.ReadUInt32LittleEndian(header) != LogRecord.Magic
                    || BinaryPrimitives.ReadInt64LittleEndian(header[16..]) != lsn
                    || length < LogRecord.HeaderSize || (length & 7) != 0 || length > remaining || consumed + length > logBytes)
                {
                    break;
                }

                var type = (RecordType)BinaryPrimitives.ReadUInt16LittleEndian(header[4..]);
                var stored = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
                var covered = log.AsSpan(position, type == RecordType.Pad ? LogRecord.HeaderSize : length);
                BinaryPrimitives.WriteUInt32LittleEndian(covered[12..], 0);
                if (Checksums.Crc32C(covered) != stored)
                {
                    break;
                }

                if (type == RecordType.Synced)
                {
                    syncedUpTo = Math.Max(syncedUpTo, BinaryPrimitives.ReadInt64LittleEndian(log.AsSpan(position + LogRecord.HeaderSize)));
                }

                records.Add(new RecordRef(position, length, lsn, type));
                lsn += length;
                consumed += length;
            }

            foreach (var record in records)
            {
                await ApplyAsync(log.AsMemory(record.Position + LogRecord.HeaderSize, record.Length - LogRecord.HeaderSize), record, trusted: record.Lsn < syncedUpTo, ct);
            }

            RecoveryRecords = records.Count;
            return lsn;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(log);
        }
    }

    private async Task ApplyAsync(ReadOnlyMemory<byte> payloadMemory, RecordRef record, bool trusted, CancellationToken ct)
    {
        var payload = payloadMemory.Span;
        switch (record.Type)
        {
            case RecordType.CreateComponent:
                {
                    var id = new Guid(payload[..16]);
                    var size = BinaryPrimitives.ReadInt64LittleEndian(payload[16..]);
                    var nameLength = BinaryPrimitives.ReadUInt16LittleEndian(payload[24..]);
                    var name = Encoding.UTF8.GetString(payload.Slice(26, nameLength));
                    if (!_components.ContainsKey(id))
                    {
                        _components.Add(id, new StoreComponent(this, id, name, size));
                    }

                    break;
                }

            case RecordType.ResizeComponent:
                {
                    var size = BinaryPrimitives.ReadInt64LittleEndian(payload[16..]);
                    if (_components.TryGetValue(new Guid(payload[..16]), out var component) && size > component.Size)
                    {
                        component.SetSize(size);
                    }

                    break;
                }

            case RecordType.DeleteComponent:
                _components.Remove(new Guid(payload[..16]));
                _lostWrites?.Remove(new Guid(payload[..16]));
                break;

            case RecordType.Unmap:
                {
                    if (_components.TryGetValue(new Guid(payload[..16]), out var component))
                    {
                        var first = BinaryPrimitives.ReadInt64LittleEndian(payload[16..]);
                        var count = BinaryPrimitives.ReadInt64LittleEndian(payload[24..]);
                        var end = Math.Min(first + count, component.Size >> BlockShift);
                        if (_lostWrites?.GetValueOrDefault(component.Id) is { } lost)
                        {
                            lost.Remove(first, end - first);
                        }

                        for (var block = first; block < end; block++)
                        {
                            var chunk = component.Map.Chunk(block >> BlockMap.ChunkShift);
                            if (chunk is null)
                            {
                                block = (((block >> BlockMap.ChunkShift) + 1) << BlockMap.ChunkShift) - 1;
                                continue;
                            }

                            component.Map.Set(block, 0);
                        }
                    }

                    break;
                }

            case RecordType.Map:
                await ApplyMapAsync(payloadMemory, trusted, ct);
                break;

            default:
                break;
        }
    }

    private async Task ApplyMapAsync(ReadOnlyMemory<byte> payloadMemory, bool trusted, CancellationToken ct)
    {
        var id = new Guid(payloadMemory.Span[..16]);
        var first = BinaryPrimitives.ReadInt64LittleEndian(payloadMemory.Span[16..]);
        var count = BinaryPrimitives.ReadInt32LittleEndian(payloadMemory.Span[24..]);
        var physical = BinaryPrimitives.ReadInt64LittleEndian(payloadMemory.Span[32..]);
        if (!_components.TryGetValue(id, out var component) || count <= 0
            || first + count > component.Size >> BlockShift || physical + count > _layout.DataBlocks)
        {
            return;
        }

        byte[]? data = null;
        try
        {
            if (!trusted)
            {
                // The record may have reached the media while its data did not: keep only blocks that verify.
                data = ArrayPool<byte>.Shared.Rent(count << BlockShift);
                await ReadFullyAsync(_handle, data.AsMemory(0, count << BlockShift), _layout.BlockOffset(physical), ct);
            }

            var lost = data is null ? null : _lostWrites?.GetValueOrDefault(id);
            for (var i = 0; i < count; i++)
            {
                var crc = BinaryPrimitives.ReadUInt32LittleEndian(payloadMemory.Span[(LogRecord.MapFixed + (4 * i))..]);
                if (data is not null && Checksums.Crc32C(data.AsSpan(i << BlockShift, BlockSize)) != crc)
                {
                    RecoveryRejectedBlocks++;
                    if (lost is null)
                    {
                        lost = new BlockSet();
                        (_lostWrites ??= []).Add(id, lost);
                    }

                    lost.Add(first + i);
                    continue;
                }

                component.Map.Set(first + i, BlockMap.Pack(physical + i, crc));
                lost?.Remove(first + i, 1);
            }
        }
        finally
        {
            if (data is not null)
            {
                ArrayPool<byte>.Shared.Return(data);
            }
        }
    }

    /// <summary>
    /// Counts the blocks whose newest write was lost and offers each to <see cref="StoreDiskOptions.OnLostWrite"/>; a
    /// replacement goes to a new block (the old content stays intact for the checkpoint still on disk) that is not
    /// rewritable in place, and the checkpoint that ends recovery makes it durable. Returns the physical blocks the
    /// replacements superseded: the caller frees them once that checkpoint is written.
    /// </summary>
    private async Task<List<long>> ReplaceLostWritesAsync(CancellationToken ct)
    {
        var superseded = new List<long>();
        if (_lostWrites is null)
        {
            return superseded;
        }

        var handler = _options.OnLostWrite;
        var buffer = new byte[BlockSize];
        var runs = new BlockRun[1];
        foreach (var (id, lost) in _lostWrites)
        {
            if (!_components.TryGetValue(id, out var component))
            {
                continue;
            }

            RecoveryLostWrites += lost.Count;
            long replaced = 0;
            // Without a handler there is nothing to offer: only the count and the log line.
            foreach (var block in handler is null ? Enumerable.Empty<long>() : lost.Blocks())
            {
                if (block >= component.Size >> BlockShift)
                {
                    continue;
                }

                var entry = component.Map.Get(block);
                if (entry == 0)
                {
                    Array.Clear(buffer);
                }
                else
                {
                    await ReadFullyAsync(_handle, buffer, _layout.BlockOffset(BlockMap.Physical(entry)), ct);
                }

                if (!handler!(component.Id, component.Name, block, buffer))
                {
                    continue;
                }

                if (_allocator.FreeBlocks == 0)
                {
                    Log.LostWriteNotReplaced(_logger, Path, component.Id, block);
                    continue;
                }

                _allocator.Allocate(1, runs);
                await RandomAccess.WriteAsync(_handle, buffer, _layout.BlockOffset(runs[0].Start), ct);
                component.Map.Set(block, BlockMap.Pack(runs[0].Start, Checksums.Crc32C(buffer)));
                if (entry == 0)
                {
                    component.UsedBlocks++;
                    _usedBlocks++;
                }
                else
                {
                    superseded.Add(BlockMap.Physical(entry));
                }

                replaced++;
            }

            RecoveryReplacedBlocks += replaced;
            Log.LostWrites(_logger, Path, component.Id, component.Name, lost.Count, replaced);
        }

        _lostWrites = null;
        return superseded;
    }

    private void RebuildAllocation()
    {
        foreach (var component in _components.Values)
        {
            long used = 0;
            var blocks = component.Size >> BlockShift;
            for (long chunkIndex = 0; chunkIndex << BlockMap.ChunkShift < blocks; chunkIndex++)
            {
                var chunk = component.Map.Chunk(chunkIndex);
                if (chunk is null)
                {
                    continue;
                }

                foreach (var entry in chunk)
                {
                    if (entry == 0)
                    {
                        continue;
                    }

                    var physical = BlockMap.Physical(entry);
                    if (physical >= _layout.DataBlocks || _allocator.IsUsed(physical))
                    {
                        throw Corrupt(Path, $"component {component.Id} maps physical block {physical}, which is out of range or mapped twice");
                    }

                    _allocator.MarkUsed(physical);
                    used++;
                }
            }

            component.UsedBlocks = used;
            _usedBlocks += used;
            _provisioned += component.Size;
        }
    }

    /// <summary>Test hook: byte offset in the file of a component's logical block, or null when unmapped.</summary>
    internal long? PhysicalOffsetOf(StoreComponent component, long logicalBlock)
    {
        var entry = component.Map.Get(logicalBlock);
        return entry == 0 ? null : _layout.BlockOffset(BlockMap.Physical(entry));
    }

    /// <summary>Test hook: copies the file as the page cache sees it now (what a crash with everything written back would leave).</summary>
    internal async Task CopyRawToAsync(string destination, CancellationToken ct)
    {
        const int chunk = 1 << 20;
        var buffer = ArrayPool<byte>.Shared.Rent(chunk);
        try
        {
            using var target = File.OpenHandle(destination, FileMode.CreateNew, FileAccess.Write);
            RandomAccess.SetLength(target, _layout.FileSize);
            for (long offset = 0; offset < _layout.FileSize; offset += chunk)
            {
                var n = (int)Math.Min(chunk, _layout.FileSize - offset);
                await ReadFullyAsync(_handle, buffer.AsMemory(0, n), offset, ct);
                if (buffer.AsSpan(0, n).ContainsAnyExcept((byte)0))
                {
                    await RandomAccess.WriteAsync(target, buffer.AsMemory(0, n), offset, ct);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
