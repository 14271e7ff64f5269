using System.Buffers;

namespace Converge.Storage;

// Defragmenting reads (docs/local-store.md, "Defragmenting reads").
//
// Redirect-on-write scatters a logically sequential range once it has been overwritten in small pieces: after 4 KiB
// random writes a 1 MiB read is up to 256 preads, and stays so until the range is rewritten. A large read that finds its
// blocks scattered therefore writes the data it has just read and verified into one contiguous run and switches the
// mapping to it, like any redirected write, so every later read of the range is one pread again. The relocation is
// best-effort: it never fails or changes the read, and it gives up whenever the range changed while it was read.
//
// Why a relocation can never lose or resurrect a write:
// - it holds the region locks of the range from its mapping snapshot through its Map records, so no in-place rewrite
//   (which changes data without changing the physical block) can run in the range meanwhile;
// - it is admitted like an in-place writer, so no flush can capture its log position while it runs, and a block
//   superseded meanwhile cannot be recycled and handed out again: every physical block of the snapshot stays either
//   mapped as it was or not reused at all;
// - under the metadata lock it commits only if every block is still mapped exactly as in the snapshot; a redirected
//   write, TRIM or resize of any of them in between makes it give up. A redirected write that commits after it simply
//   supersedes the relocated block, as it would have superseded the old one.
// Its Map records are ordinary ones after the last Synced position, which recovery verifies block by block; the blocks
// they superseded stay intact until a later flush, so a crash leaves the old mapping or the new one, both with the data.
public sealed partial class StoreDisk
{
    /// <summary>Smallest read worth a relocation (128 KiB, a large allocation); smaller reads gain too little per pread saved.</summary>
    private const int DefragMinBlocks = Allocator.LargeRun;

    /// <summary>A read is fragmented when it needs more than one pread per this many blocks (64 KiB) on average.</summary>
    private const int DefragBlocksPerRun = 16;

    private long _defragmentedBlocks;

    /// <summary>Blocks moved into contiguous runs by defragmenting reads (tests and benchmarks read it).</summary>
    internal long DefragmentedBlocks => Interlocked.Read(ref _defragmentedBlocks);

    /// <summary>Free blocks of the data region as the allocator sees them (tests read it).</summary>
    internal long AllocatorFreeBlocks
    {
        get
        {
            lock (_meta)
            {
                return _allocator.FreeBlocks;
            }
        }
    }

    private bool WorthDefragmenting(StoreComponent c, long first, int count)
    {
        // Needs the in-place admission (a flush waits for admitted writers only when in-place rewrites are on).
        if (!_options.DefragmentOnRead || !_options.RewriteInPlace || count < DefragMinBlocks || _failed)
        {
            return false;
        }

        // A lock-free look: the map may change under it, which only makes the guess stale.
        var runs = 0;
        var next = -1L;
        for (var i = 0; i < count; i++)
        {
            var e = c.Map.Get(first + i);
            if (e == 0)
            {
                return false;   // holes read as zeros without I/O; relocating would have to write them
            }

            var physical = BlockMap.Physical(e);
            if (physical != next)
            {
                runs++;
            }

            next = physical + 1;
        }

        return runs * DefragBlocksPerRun > count;
    }

    /// <summary>Reads whole blocks like <see cref="ReadBlocksAsync"/>, then moves them into one contiguous run when it can.</summary>
    private async ValueTask ReadAndDefragmentAsync(StoreComponent c, long first, int count, Memory<byte> target, CancellationToken ct)
    {
        var regionsHeld = ArrayPool<int>.Shared.Rent(RegionSlots);
        var heldCount = CollectRegions(c, first, count, regionsHeld);
        var entries = ArrayPool<ulong>.Shared.Rent(count);
        var acquired = 0;
        var admitted = false;
        try
        {
            // Locks first, admission second (as in-place writers do): a flush never waits while this waits for a lock.
            for (; acquired < heldCount; acquired++)
            {
                await _regions[regionsHeld[acquired]].WaitAsync(ct);
            }

            lock (_meta)
            {
                // Not while a flush is capturing its position, and never into the reserve a full disk needs for writes.
                if (!_inPlaceClosed && !_failed && !c.Deleted && _allocator.FreeBlocks - count >= _layout.DataBlocks / 8)
                {
                    admitted = true;
                    if (_inPlaceWriters++ == 0)
                    {
                        _inPlaceIdle.Reset();
                    }
                }
            }

            if (!admitted)
            {
                for (; acquired > 0; acquired--)
                {
                    _regions[regionsHeld[acquired - 1]].Release();
                }

                await ReadBlocksAsync(c, first, count, target, ct);
                return;
            }

            await ReadBlocksAsync(c, first, count, target, ct, entries);
            Relocate(c, first, count, target, entries);
        }
        finally
        {
            if (admitted)
            {
                lock (_meta)
                {
                    if (--_inPlaceWriters == 0)
                    {
                        _inPlaceIdle.Set();
                    }
                }
            }

            for (var i = acquired - 1; i >= 0; i--)
            {
                _regions[regionsHeld[i]].Release();
            }

            ArrayPool<ulong>.Shared.Return(entries);
            ArrayPool<int>.Shared.Return(regionsHeld);
        }
    }

    /// <summary>
    /// Writes <paramref name="data"/> (just read and verified against <paramref name="entries"/>) into newly allocated
    /// contiguous blocks and maps them, if the range is still mapped as <paramref name="entries"/> says. Best-effort:
    /// every way it cannot (no long free run, no log space, a changed mapping, a write error) leaves the range as it was.
    /// </summary>
    internal void Relocate(StoreComponent c, long first, int count, ReadOnlyMemory<byte> data, ulong[] entries)
    {
        if (Array.IndexOf(entries, 0UL, 0, count) >= 0)
        {
            return;   // trimmed since the look that chose this read: holes are not relocated
        }

        var runs = ArrayPool<BlockRun>.Shared.Rent(count);
        var runCount = 0;
        var committed = false;
        try
        {
            lock (_meta)
            {
                if (c.Deleted)
                {
                    return;
                }

                // Only long free runs, few enough to beat the scattered layout; none found in this stretch of the
                // bitmap: give up (the next relocation looks further on).
                runCount = _allocator.AllocateLong(count, runs, count / DefragBlocksPerRun);
                if (runCount == 0)
                {
                    return;
                }

                MarkAllocatedLocked(runs.AsSpan(0, runCount));
            }

            var done = 0;
            for (var r = 0; r < runCount; r++)
            {
                try
                {
                    RandomAccess.Write(_handle, data.Span.Slice(done << BlockShift, runs[r].Count << BlockShift), _layout.BlockOffset(runs[r].Start));
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Counted and logged like any failed write; the read it follows has its data already.
                    _ = IoFailure(e, "defragmenting write");
                    return;
                }
                catch (ObjectDisposedException)
                {
                    return;
                }

                done += runs[r].Count;
            }

            committed = CommitRelocation(c, first, count, runs.AsSpan(0, runCount), entries);
        }
        finally
        {
            if (!committed)
            {
                ReleaseUnreferenced(runs.AsSpan(0, runCount));
            }

            ArrayPool<BlockRun>.Shared.Return(runs);
        }
    }

    private bool CommitRelocation(StoreComponent c, long first, int count, ReadOnlySpan<BlockRun> runs, ulong[] entries)
    {
        var total = 0;
        var largest = 0;
        foreach (var run in runs)
        {
            var length = LogRecord.MapLength(run.Count);
            total += length;
            largest = Math.Max(largest, length);
        }

        var crcs = ArrayPool<uint>.Shared.Rent(count);
        var record = ArrayPool<byte>.Shared.Rent(largest);
        try
        {
            for (var k = 0; k < count; k++)
            {
                crcs[k] = BlockMap.Crc(entries[k]);
            }

            lock (_meta)
            {
                // Never waits for log space: a checkpoint's flush waits for this admitted relocation.
                if (c.Deleted || _failed || !HasLogSpaceLocked(total, largest))
                {
                    return false;
                }

                for (var k = 0; k < count; k++)
                {
                    if (c.Map.Get(first + k) != entries[k])
                    {
                        return false;
                    }
                }

                var logical = first;
                var done = 0;
                foreach (var run in runs)
                {
                    var length = LogRecord.WriteMap(record, c.Id, logical, run.Count, run.Start, crcs.AsSpan(done, run.Count));
                    AppendLocked(record.AsSpan(0, length));
                    for (var j = 0; j < run.Count; j++, logical++, done++)
                    {
                        c.Map.Set(logical, BlockMap.Pack(run.Start + j, crcs[done]));
                        AddRun(_pendingFree, BlockMap.Physical(entries[done]), 1);
                    }
                }

                _dirty++;
            }

            Interlocked.Add(ref _defragmentedBlocks, count);
            StorageMetrics.BlocksDefragmented.Add(count);
            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(record);
            ArrayPool<uint>.Shared.Return(crcs);
        }
    }
}
