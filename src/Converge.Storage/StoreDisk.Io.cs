using System.Buffers;
using Converge.Common;

namespace Converge.Storage;

// The data path behind StoreComponent's IBlockVolume.
public sealed partial class StoreDisk
{
    private const int BlockSize = BlockGeometry.BlockSize;
    private const int BlockShift = BlockGeometry.BlockShift;
    private const int ZeroChunk = 1 << 20;
    private static readonly byte[] Zeros = new byte[ZeroChunk];

    internal async ValueTask ReadAsync(StoreComponent c, long offset, Memory<byte> buffer, CancellationToken ct)
    {
        CheckRange(c, offset, buffer.Length, data: true);
        if (buffer.Length == 0)
        {
            return;
        }

        EnterOp();
        try
        {
            ThrowIfDeleted(c);
            var first = offset >> BlockShift;
            var count = (int)(((offset + buffer.Length - 1) >> BlockShift) - first + 1);
            if ((offset & (BlockSize - 1)) == 0 && (buffer.Length & (BlockSize - 1)) == 0)
            {
                if (WorthDefragmenting(c, first, count))
                {
                    await ReadAndDefragmentAsync(c, first, count, buffer, ct);
                }
                else
                {
                    await ReadBlocksAsync(c, first, count, buffer, ct);
                }
            }
            else
            {
                var temp = ArrayPool<byte>.Shared.Rent(count << BlockShift);
                try
                {
                    await ReadBlocksAsync(c, first, count, temp.AsMemory(0, count << BlockShift), ct);
                    temp.AsSpan((int)(offset & (BlockSize - 1)), buffer.Length).CopyTo(buffer.Span);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(temp);
                }
            }

            StorageMetrics.BytesRead.Add(buffer.Length);
        }
        finally
        {
            ExitOp();
        }
    }

    /// <param name="blockCrcs">
    /// Empty, or for a write of whole blocks the CRC-32C of each block, computed by a caller that had to checksum the
    /// data anyway (a peer checking what arrived, a coordinator checksumming for its peers): stored as given.
    /// </param>
    internal async ValueTask WriteAsync(StoreComponent c, long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken ct, ReadOnlyMemory<uint> blockCrcs = default)
    {
        CheckRange(c, offset, data.Length, data: true);
        if (!blockCrcs.IsEmpty && (((offset | (long)data.Length) & (BlockSize - 1)) != 0 || blockCrcs.Length != data.Length >> BlockShift))
        {
            throw new ArgumentException("block checksums are given for whole-block writes only, one per block", nameof(blockCrcs));
        }

        EnterOp();
        try
        {
            ThrowIfDeleted(c);
            if (data.Length > 0)
            {
                await WriteCoreAsync(c, offset, data, bulk: (flags & WriteFlags.Bulk) != 0, ct, blockCrcs);
                StorageMetrics.BytesWritten.Add(data.Length);
            }

            if ((flags & WriteFlags.Fua) != 0)
            {
                await FlushCoreAsync(ct);
            }
        }
        finally
        {
            ExitOp();
        }
    }

    internal async ValueTask FlushVolumeAsync(StoreComponent c, CancellationToken ct)
    {
        EnterOp();
        try
        {
            ThrowIfDeleted(c);
            await FlushCoreAsync(ct);
        }
        finally
        {
            ExitOp();
        }
    }

    internal async ValueTask TrimAsync(StoreComponent c, long offset, long length, bool fua, CancellationToken ct)
    {
        CheckRange(c, offset, length, data: false);
        EnterOp();
        try
        {
            ThrowIfDeleted(c);
            await ZeroRangeAsync(c, offset, length, deallocate: true, ct);
            if (fua)
            {
                await FlushCoreAsync(ct);
            }
        }
        finally
        {
            ExitOp();
        }
    }

    internal async ValueTask WriteZeroesAsync(StoreComponent c, long offset, long length, ZeroFlags flags, CancellationToken ct)
    {
        CheckRange(c, offset, length, data: false);
        var noHole = (flags & ZeroFlags.NoHole) != 0;
        if (noHole && (flags & ZeroFlags.FastZero) != 0)
        {
            throw new VolumeException(VolumeError.NotSupported, "writing allocated zeros is not faster than writing data");
        }

        EnterOp();
        try
        {
            ThrowIfDeleted(c);
            await ZeroRangeAsync(c, offset, length, deallocate: !noHole, ct);
            if ((flags & ZeroFlags.Fua) != 0)
            {
                await FlushCoreAsync(ct);
            }
        }
        finally
        {
            ExitOp();
        }
    }

    internal ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(StoreComponent c, long offset, long length, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        var size = c.Size;
        if (offset < 0 || offset >= size || length <= 0)
        {
            throw new VolumeException(VolumeError.OutOfRange, $"block status at {offset}+{length} is outside component {c.Name} of {size} bytes");
        }

        ThrowIfDeleted(c);
        const int maxExtents = 1024;
        var end = offset + Math.Min(length, size - offset);
        var extents = new List<AllocationExtent>();
        var position = offset;
        var block = offset >> BlockShift;
        var mapped = c.Map.Get(block) != 0;
        var extentStart = offset;
        while (true)
        {
            // Advance over blocks in the same state; an unallocated chunk is skipped whole.
            var chunk = c.Map.Chunk(block >> BlockMap.ChunkShift);
            var next = block + 1;
            if (chunk is null)
            {
                if (!mapped)
                {
                    next = ((block >> BlockMap.ChunkShift) + 1) << BlockMap.ChunkShift;
                }
            }

            position = Math.Min(end, next << BlockShift);
            block = next;
            if (position >= end)
            {
                extents.Add(new AllocationExtent(end - extentStart, Flags(mapped)));
                break;
            }

            var nowMapped = c.Map.Get(block) != 0;
            if (nowMapped != mapped)
            {
                extents.Add(new AllocationExtent(position - extentStart, Flags(mapped)));
                if (extents.Count == maxExtents)
                {
                    break;
                }

                extentStart = position;
                mapped = nowMapped;
            }
        }

        return ValueTask.FromResult<IReadOnlyList<AllocationExtent>>(extents);

        static AllocationFlags Flags(bool mapped) => mapped ? AllocationFlags.Data : AllocationFlags.Hole | AllocationFlags.Zero;
    }

    private static void CheckRange(StoreComponent c, long offset, long length, bool data)
    {
        if (offset < 0 || length < 0 || offset > c.Size - length || (data && length > BlockGeometry.MaxRequestBytes))
        {
            throw new VolumeException(VolumeError.OutOfRange, $"request at {offset}+{length} is outside component {c.Name} of {c.Size} bytes or too large");
        }
    }

    private void ThrowIfDeleted(StoreComponent c)
    {
        if (c.Deleted)
        {
            throw new VolumeException(VolumeError.Unavailable, $"component {c.Id} was deleted from disk {Path}");
        }
    }

    private VolumeException IoFailure(Exception e, string what)
    {
        if (e is ObjectDisposedException)
        {
            return new VolumeException(VolumeError.Unavailable, $"disk {Path} is closed", e);
        }

        Interlocked.Increment(ref _ioErrors);
        StorageMetrics.IoErrors.Add(1);
        Log.IoError(_logger, Path, e);
        return new VolumeException(VolumeError.IO, $"{what} on disk {Path} failed: {e.Message}", e);
    }

    private async ValueTask ReadExactAsync(long fileOffset, Memory<byte> target, CancellationToken ct)
    {
        try
        {
            while (target.Length > 0)
            {
                // Synchronous for the same reason as the data pwrite: the async API would hop to the thread pool.
                ct.ThrowIfCancellationRequested();
                var n = RandomAccess.Read(_handle, target.Span, fileOffset);
                if (n == 0)
                {
                    // Past the end of a truncated file: zeros fail their checksums rather than pass as data.
                    target.Span.Clear();
                    return;
                }

                target = target[n..];
                fileOffset += n;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
        {
            throw IoFailure(e, "read");
        }
    }

    /// <summary>
    /// Reads whole blocks, one pread per physically contiguous run, verifying every block's CRC-32C. With
    /// <paramref name="snapshot"/> the caller holds the range's region locks and gets the mapping the data was read from
    /// (a block whose mapping changed during the read may hold newer data than its snapshot entry says).
    /// </summary>
    private async ValueTask ReadBlocksAsync(StoreComponent c, long first, int count, Memory<byte> target, CancellationToken ct, ulong[]? snapshot = null)
    {
        var entries = snapshot ?? ArrayPool<ulong>.Shared.Rent(count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                entries[i] = c.Map.Get(first + i);
            }

            var i0 = 0;
            while (i0 < count)
            {
                var e = entries[i0];
                var j = i0 + 1;
                if (e == 0)
                {
                    while (j < count && entries[j] == 0)
                    {
                        j++;
                    }

                    target.Span.Slice(i0 << BlockShift, (j - i0) << BlockShift).Clear();
                    i0 = j;
                    continue;
                }

                var physical = BlockMap.Physical(e);
                while (j < count && entries[j] != 0 && BlockMap.Physical(entries[j]) == physical + (j - i0))
                {
                    j++;
                }

                var run = target.Slice(i0 << BlockShift, (j - i0) << BlockShift);
                await ReadExactAsync(_layout.BlockOffset(physical), run, ct);
                for (var k = i0; k < j; k++)
                {
                    var block = target.Slice(k << BlockShift, BlockSize);
                    if (Checksums.Crc32C(block.Span) != BlockMap.Crc(entries[k]))
                    {
                        await RereadMismatchAsync(c, first + k, entries[k], block, regionLocked: snapshot is not null, ct);
                    }
                }

                i0 = j;
            }
        }
        finally
        {
            if (snapshot is null)
            {
                ArrayPool<ulong>.Shared.Return(entries);
            }
        }
    }

    /// <summary>
    /// A concurrent overwrite may have recycled the block we read; only an unchanged mapping is a real mismatch. With
    /// <paramref name="regionLocked"/> the caller holds the block's region lock, so no in-place rewrite can be in flight.
    /// </summary>
    private async ValueTask RereadMismatchAsync(StoreComponent c, long logical, ulong seen, Memory<byte> block, bool regionLocked, CancellationToken ct)
    {
        var lockedRead = regionLocked;
        for (var attempt = 0; attempt < 8; attempt++)
        {
            var current = c.Map.Get(logical);
            ThrowIfDeleted(c);
            if (current == seen && !lockedRead && _options.RewriteInPlace)
            {
                // An in-place rewrite of this block may be between its pwrite and its Map record: once its region lock
                // is free the block and its mapping agree again. This holds on any attempt, not only the first: the
                // re-read after a mapping change can itself land in the next in-place rewrite's window.
                lockedRead = true;
                current = await ReadUnderRegionLockAsync(c, logical, block, ct);
                if (current == 0)
                {
                    block.Span.Clear();
                    return;
                }

                if (Checksums.Crc32C(block.Span) == BlockMap.Crc(current))
                {
                    return;
                }

                // Read under the lock and still wrong: real damage, unless the mapping moves on before the next look.
                seen = current;
                continue;
            }

            if (current == seen)
            {
                Interlocked.Increment(ref _checksumErrors);
                c.CountChecksumError();
                StorageMetrics.ChecksumErrors.Add(1);
                Log.ChecksumMismatch(_logger, Path, c.Id, logical);
                throw new VolumeException(
                    VolumeError.ChecksumMismatch,
                    $"checksum mismatch in component {c.Name} at offset {logical << BlockShift} (disk {Path}, physical block {BlockMap.Physical(seen)})");
            }

            seen = current;
            if (current == 0)
            {
                block.Span.Clear();
                return;
            }

            await ReadExactAsync(_layout.BlockOffset(BlockMap.Physical(current)), block, ct);
            if (Checksums.Crc32C(block.Span) == BlockMap.Crc(current))
            {
                return;
            }
        }

        throw new VolumeException(VolumeError.IO, $"block at offset {logical << BlockShift} of component {c.Name} kept changing while being read");
    }

    private async ValueTask WriteCoreAsync(StoreComponent c, long offset, ReadOnlyMemory<byte> data, bool bulk, CancellationToken ct, ReadOnlyMemory<uint> blockCrcs = default)
    {
        var first = offset >> BlockShift;
        var count = (int)(((offset + data.Length - 1) >> BlockShift) - first + 1);
        var head = (int)(offset & (BlockSize - 1));
        var tailPartial = ((offset + data.Length) & (BlockSize - 1)) != 0;
        if (head == 0 && !tailPartial)
        {
            await WriteBlocksAsync(c, first, count, data, bulk, ct, blockCrcs);
            return;
        }

        // Read-modify-write of the partial edge blocks, serialized per stripe so two sub-block writes to one block
        // cannot lose each other's bytes.
        var stripeA = Stripe(c, first);
        var stripeB = Stripe(c, first + count - 1);
        if (stripeB < stripeA)
        {
            (stripeA, stripeB) = (stripeB, stripeA);
        }

        await _stripes[stripeA].WaitAsync(ct);
        var buffer = ArrayPool<byte>.Shared.Rent(count << BlockShift);
        try
        {
            if (stripeB != stripeA)
            {
                await _stripes[stripeB].WaitAsync(ct);
            }

            try
            {
                var whole = buffer.AsMemory(0, count << BlockShift);
                if (head != 0)
                {
                    await ReadBlocksAsync(c, first, 1, whole[..BlockSize], ct);
                }

                if (tailPartial && (count > 1 || head == 0))
                {
                    await ReadBlocksAsync(c, first + count - 1, 1, whole.Slice((count - 1) << BlockShift, BlockSize), ct);
                }

                data.Span.CopyTo(whole.Span[head..]);
                await WriteBlocksAsync(c, first, count, whole, bulk, ct);
            }
            finally
            {
                if (stripeB != stripeA)
                {
                    _stripes[stripeB].Release();
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            _stripes[stripeA].Release();
        }
    }

    private static int Stripe(StoreComponent c, long block) =>
        (int)((ulong)(block ^ (c.Id.GetHashCode() * 0x9E3779B1L)) % StripeCount);

    /// <summary>
    /// Whole blocks: rewritten in place when every one of them may be (see <see cref="TryWriteInPlaceAsync"/>), otherwise
    /// redirect-on-write: allocate, pwrite, then switch the mapping with a Map record.
    /// </summary>
    private async ValueTask WriteBlocksAsync(
        StoreComponent c, long first, int count, ReadOnlyMemory<byte> source, bool bulk, CancellationToken ct, ReadOnlyMemory<uint> blockCrcs = default)
    {
        if (_options.RewriteInPlace && await TryWriteInPlaceAsync(c, first, count, source, ct, blockCrcs))
        {
            return;
        }

        var crcs = ArrayPool<uint>.Shared.Rent(count);
        var runs = ArrayPool<BlockRun>.Shared.Rent(count);
        var runCount = 0;
        var committed = false;
        try
        {
            BlockCrcs(source, blockCrcs, crcs.AsSpan(0, count));
            runCount = await AllocateAsync(c, first, count, runs, ct);
            var done = 0;
            for (var r = 0; r < runCount; r++)
            {
                var run = runs[r];
                try
                {
                    // Synchronous on purpose: a buffered pwrite lands in the page cache in microseconds, and for a
                    // non-async handle the async API only queues this same call to the thread pool and back.
                    ct.ThrowIfCancellationRequested();
                    var span = source.Span.Slice(done << BlockShift, run.Count << BlockShift);
                    var at = _layout.BlockOffset(run.Start);
                    if (!bulk || _direct is null || !_direct.TryWrite(span, at))
                    {
                        RandomAccess.Write(_handle, span, at);
                    }
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
                {
                    throw IoFailure(e, "write");
                }

                done += run.Count;
            }

            await CommitMapAsync(c, first, crcs, runs.AsMemory(0, runCount), ct);
            committed = true;
        }
        finally
        {
            if (!committed)
            {
                ReleaseUnreferenced(runs.AsSpan(0, runCount));
            }

            ArrayPool<BlockRun>.Shared.Return(runs);
            ArrayPool<uint>.Shared.Return(crcs);
        }
    }

    /// <summary>The blocks' CRC-32Cs: the caller's when it passed them, computed otherwise.</summary>
    private static void BlockCrcs(ReadOnlyMemory<byte> source, ReadOnlyMemory<uint> given, Span<uint> crcs)
    {
        if (given.IsEmpty)
        {
            Checksums.Crc32CBlocks(source.Span[..(crcs.Length << BlockShift)], crcs);
        }
        else
        {
            given.Span.CopyTo(crcs);
        }
    }

    /// <summary>Gives back allocated blocks that no record references yet (a write or relocation that did not commit): reusable at once.</summary>
    private void ReleaseUnreferenced(ReadOnlySpan<BlockRun> runs)
    {
        if (runs.IsEmpty)
        {
            return;
        }

        lock (_meta)
        {
            foreach (var run in runs)
            {
                _allocator.Release(run.Start, run.Count);
            }
        }
    }

    private async ValueTask<int> AllocateAsync(StoreComponent c, long first, int count, BlockRun[] runs, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            bool recyclable;
            lock (_meta)
            {
                ThrowIfDeleted(c);
                long fresh = 0;
                for (var i = 0; i < count; i++)
                {
                    if (c.Map.Get(first + i) == 0)
                    {
                        fresh++;
                    }
                }

                if (fresh > 0 && _usedBlocks + fresh > _layout.DataBlocks - ReserveBlocks)
                {
                    throw NoSpace(c, count);
                }

                if (count <= _allocator.FreeBlocks)
                {
                    var runCount = _allocator.Allocate(count, runs);
                    MarkAllocatedLocked(runs.AsSpan(0, runCount));
                    return runCount;
                }

                recyclable = _pendingFree.Count > 0 || _pendingPunch.Count > 0;
            }

            if (!recyclable || attempt > 0)
            {
                lock (_flushLock)
                {
                    recyclable = _flushRunning;
                }

                if (!recyclable || attempt > 3)
                {
                    throw NoSpace(c, count);
                }
            }

            // Blocks superseded since the last flush come back once a flush made their supersession durable.
            await FlushCoreAsync(ct);
        }
    }

    private VolumeException NoSpace(StoreComponent c, int count) =>
        new(VolumeError.NoSpace, $"disk {Path} has no space for {count} blocks of component {c.Name} ({ByteSize.Format(UsedBytes)} of {ByteSize.Format(CapacityBytes)} used)");

    private async ValueTask CommitMapAsync(StoreComponent c, long first, uint[] crcs, ReadOnlyMemory<BlockRun> runs, CancellationToken ct)
    {
        var total = 0;
        var largest = 0;
        foreach (var run in runs.Span)
        {
            var length = LogRecord.MapLength(run.Count);
            total += length;
            largest = Math.Max(largest, length);
        }

        var records = ArrayPool<byte>.Shared.Rent(total);
        try
        {
            var at = 0;
            var done = 0;
            foreach (var run in runs.Span)
            {
                at += LogRecord.WriteMap(records.AsSpan(at), c.Id, first + done, run.Count, run.Start, crcs.AsSpan(done, run.Count));
                done += run.Count;
            }

            while (true)
            {
                Task wait;
                lock (_meta)
                {
                    ThrowIfDeleted(c);
                    if (HasLogSpaceLocked(total, largest))
                    {
                        at = 0;
                        var logical = first;
                        var k = 0;
                        foreach (var run in runs.Span)
                        {
                            var length = LogRecord.MapLength(run.Count);
                            AppendLocked(records.AsSpan(at, length));
                            at += length;
                            for (var j = 0; j < run.Count; j++, logical++, k++)
                            {
                                var old = c.Map.Set(logical, BlockMap.Pack(run.Start + j, crcs[k]));
                                if (old == 0)
                                {
                                    c.UsedBlocks++;
                                    _usedBlocks++;
                                }
                                else
                                {
                                    AddRun(_pendingFree, BlockMap.Physical(old), 1);
                                }
                            }
                        }

                        _dirty++;
                        return;
                    }

                    wait = EnsureCheckpointLocked();
                }

                await WaitForCheckpointAsync(wait, ct);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(records);
        }
    }

    /// <summary>Partial edge blocks are zeroed by read-modify-write; whole blocks are unmapped or written as zeros.</summary>
    private async ValueTask ZeroRangeAsync(StoreComponent c, long offset, long length, bool deallocate, CancellationToken ct)
    {
        if (length == 0)
        {
            return;
        }

        var end = offset + length;
        var alignedStart = (offset + BlockSize - 1) & ~(long)(BlockSize - 1);
        var alignedEnd = end & ~(long)(BlockSize - 1);
        if (alignedStart > alignedEnd)
        {
            // Inside one block.
            await ZeroPartialAsync(c, offset, (int)length, ct);
            return;
        }

        if (offset < alignedStart)
        {
            await ZeroPartialAsync(c, offset, (int)(alignedStart - offset), ct);
        }

        if (end > alignedEnd)
        {
            await ZeroPartialAsync(c, alignedEnd, (int)(end - alignedEnd), ct);
        }

        if (alignedEnd > alignedStart)
        {
            if (deallocate)
            {
                await UnmapAsync(c, alignedStart >> BlockShift, (alignedEnd - alignedStart) >> BlockShift, ct);
            }
            else
            {
                for (var at = alignedStart; at < alignedEnd; at += ZeroChunk)
                {
                    await WriteBlocksAsync(c, at >> BlockShift, (int)(Math.Min(ZeroChunk, alignedEnd - at) >> BlockShift), Zeros, bulk: false, ct);
                }
            }
        }
    }

    private ValueTask ZeroPartialAsync(StoreComponent c, long offset, int length, CancellationToken ct) =>
        c.Map.Get(offset >> BlockShift) == 0 ? ValueTask.CompletedTask : WriteCoreAsync(c, offset, Zeros.AsMemory(0, length), bulk: false, ct);

    private async ValueTask UnmapAsync(StoreComponent c, long first, long count, CancellationToken ct)
    {
        while (true)
        {
            Task wait;
            lock (_meta)
            {
                ThrowIfDeleted(c);
                if (!AnyMappedLocked(c, first, count))
                {
                    return;
                }

                var length = LogRecord.WriteUnmap(_scratch, c.Id, first, count);
                if (HasLogSpaceLocked(length, length))
                {
                    AppendLocked(_scratch.AsSpan(0, length));
                    UnmapRangeLocked(c, first, count);
                    _dirty++;
                    return;
                }

                wait = EnsureCheckpointLocked();
            }

            await WaitForCheckpointAsync(wait, ct);
        }
    }

    private static bool AnyMappedLocked(StoreComponent c, long first, long count)
    {
        var end = first + count;
        for (var block = first; block < end;)
        {
            var chunk = c.Map.Chunk(block >> BlockMap.ChunkShift);
            var chunkEnd = Math.Min(end, ((block >> BlockMap.ChunkShift) + 1) << BlockMap.ChunkShift);
            if (chunk is not null)
            {
                for (var b = block; b < chunkEnd; b++)
                {
                    if (chunk[b & (BlockMap.ChunkSize - 1)] != 0)
                    {
                        return true;
                    }
                }
            }

            block = chunkEnd;
        }

        return false;
    }

    /// <summary>Clears mappings; the old blocks are punched and reused only after a flush made the unmapping durable.</summary>
    private void UnmapRangeLocked(StoreComponent c, long first, long count)
    {
        var end = first + count;
        for (var block = first; block < end;)
        {
            var chunk = c.Map.Chunk(block >> BlockMap.ChunkShift);
            var chunkEnd = Math.Min(end, ((block >> BlockMap.ChunkShift) + 1) << BlockMap.ChunkShift);
            if (chunk is not null)
            {
                for (var b = block; b < chunkEnd; b++)
                {
                    var old = c.Map.Set(b, 0);
                    if (old != 0)
                    {
                        AddRun(_pendingPunch, BlockMap.Physical(old), 1);
                        c.UsedBlocks--;
                        _usedBlocks--;
                    }
                }
            }

            block = chunkEnd;
        }
    }
}
