using System.Buffers;
using Converge.Common;

namespace Converge.Storage;

// In-place rewrites of blocks that no durable state can point at yet (docs/local-store.md, "In-place rewrites").
//
// A physical block allocated after the last flush started is referenced only by Map records after that flush's
// Synced position, which recovery verifies block by block; the block it superseded stays intact until a later flush
// makes the supersession durable. Rewriting it in place therefore leaves every version a crash can expose either
// verifiable (new or previous in-place content, each with its own Map record) or rejected in favour of that
// intact older block. Three rules keep it so:
// - eligibility: a bit per data block, set when the block is allocated and cleared for all blocks when a flush
//   captures its log position; the flush first closes admissions and waits for admitted in-place writes to append
//   their records, so no in-place write straddles a flush and every trusted record matches its block on media;
// - per-region serialization: in-place writers of the same logical region hold its lock from the eligibility check
//   through the Map record, so records and contents are appended in the same order;
// - readers: a checksum mismatch with an unchanged mapping takes the region lock and reads again before it is
//   reported, since an in-place write may have been between its pwrite and its record.
public sealed partial class StoreDisk
{
    private const int RegionShift = 8;         // 1 MiB of logical blocks per region lock
    private const int RegionLockCount = 64;
    private readonly SemaphoreSlim[] _regions = CreateLocks(RegionLockCount);
    private readonly ManualResetEventSlim _inPlaceIdle = new(true);
    private ulong[]? _epochBits;
    private long _epochLow = long.MaxValue;
    private long _epochHigh = -1;
    private bool _inPlaceClosed;
    private int _inPlaceWriters;
    private long _logReserved;

    /// <summary>Writes that were served by an in-place rewrite (tests and benchmarks read it).</summary>
    internal long InPlaceWrites { get; private set; }

    /// <summary>Runs of bulk data written around the page cache (see <see cref="DirectWriter"/>).</summary>
    internal long DirectWrites => _direct?.Writes ?? 0;

    /// <summary>Whether bulk writes can go around the page cache on this disk's filesystem.</summary>
    internal bool DirectWritesUsable => _direct?.Usable == true;

    private static SemaphoreSlim[] CreateLocks(int count)
    {
        var locks = new SemaphoreSlim[count];
        for (var i = 0; i < count; i++)
        {
            locks[i] = new SemaphoreSlim(1, 1);
        }

        return locks;
    }

    /// <summary>Most region locks one request can need: the regions a maximal request spans.</summary>
    private const int RegionSlots = (BlockGeometry.MaxRequestBytes >> (BlockShift + RegionShift)) + 2;

    /// <summary>The distinct region locks of a block range, in the one global order every holder of several takes them in.</summary>
    private static int CollectRegions(StoreComponent c, long first, int count, int[] regions)
    {
        var held = 0;
        for (var r = first >> RegionShift; r <= (first + count - 1) >> RegionShift; r++)
        {
            var region = Region(c, r << RegionShift);
            if (Array.IndexOf(regions, region, 0, held) < 0)
            {
                regions[held++] = region;
            }
        }

        Array.Sort(regions, 0, held);   // one global order: no deadlock between multi-region holders
        return held;
    }

    private static int Region(StoreComponent c, long block) =>
        (int)((ulong)((block >> RegionShift) ^ (c.Id.GetHashCode() * 0x9E3779B1L)) % RegionLockCount);

    /// <summary>Marks freshly allocated blocks as rewritable in place until the next flush; under the metadata lock.</summary>
    private void MarkAllocatedLocked(ReadOnlySpan<BlockRun> runs)
    {
        if (!_options.RewriteInPlace)
        {
            return;
        }

        _epochBits ??= new ulong[(_layout.DataBlocks + 63) >> 6];
        foreach (var run in runs)
        {
            for (var b = run.Start; b < run.Start + run.Count; b++)
            {
                _epochBits[b >> 6] |= 1UL << (int)(b & 63);
            }

            _epochLow = Math.Min(_epochLow, run.Start);
            _epochHigh = Math.Max(_epochHigh, run.Start + run.Count - 1);
        }
    }

    private bool RewritableLocked(long physical) =>
        !_inPlaceClosed && _epochBits is not null && (_epochBits[physical >> 6] & (1UL << (int)(physical & 63))) != 0;

    /// <summary>
    /// Before a flush captures its log position: stop admitting in-place writes and wait for the admitted ones to
    /// append their Map records. Blocks the calling (flush) thread for at most one page-cache pwrite per writer.
    /// </summary>
    private void CloseInPlaceWrites()
    {
        lock (_meta)
        {
            _inPlaceClosed = true;
        }

        _inPlaceIdle.Wait();
    }

    /// <summary>With the flush's log position: nothing allocated so far may be rewritten in place any more; under the metadata lock.</summary>
    private void StartInPlaceEpochLocked()
    {
        if (_epochBits is not null && _epochHigh >= _epochLow)
        {
            Array.Clear(_epochBits, (int)(_epochLow >> 6), (int)((_epochHigh >> 6) - (_epochLow >> 6) + 1));
        }

        _epochLow = long.MaxValue;
        _epochHigh = -1;
        _inPlaceClosed = false;
    }

    /// <summary>
    /// Rewrites whole blocks in place if every one of them is mapped to a block allocated since the last flush started.
    /// False (nothing written) when any is not: the caller redirects the write.
    /// </summary>
    private async ValueTask<bool> TryWriteInPlaceAsync(
        StoreComponent c, long first, int count, ReadOnlyMemory<byte> source, CancellationToken ct, ReadOnlyMemory<uint> blockCrcs = default)
    {
        // Cheap look without locks: most writes that cannot go in place are seen here.
        var probe = c.Map.Get(first);
        if (probe == 0)
        {
            return false;
        }

        lock (_meta)
        {
            if (!RewritableLocked(BlockMap.Physical(probe)))
            {
                return false;
            }
        }

        var regionsHeld = ArrayPool<int>.Shared.Rent(RegionSlots);
        var heldCount = CollectRegions(c, first, count, regionsHeld);
        var entries = ArrayPool<ulong>.Shared.Rent(count);
        var crcs = ArrayPool<uint>.Shared.Rent(count);
        var runs = ArrayPool<BlockRun>.Shared.Rent(count);
        var acquired = 0;
        var reserved = 0;
        try
        {
            BlockCrcs(source, blockCrcs, crcs.AsSpan(0, count));
            for (; acquired < heldCount; acquired++)
            {
                await _regions[regionsHeld[acquired]].WaitAsync(ct);
            }

            var runCount = 0;
            lock (_meta)
            {
                ThrowIfDeleted(c);
                for (var i = 0; i < count; i++)
                {
                    entries[i] = c.Map.Get(first + i);
                    if (entries[i] == 0 || !RewritableLocked(BlockMap.Physical(entries[i])))
                    {
                        return false;
                    }
                }

                // Runs of the existing mapping: one pwrite and one Map record each.
                var total = 0;
                var largest = 0;
                for (var i0 = 0; i0 < count;)
                {
                    var physical = BlockMap.Physical(entries[i0]);
                    var j = i0 + 1;
                    while (j < count && BlockMap.Physical(entries[j]) == physical + (j - i0))
                    {
                        j++;
                    }

                    runs[runCount++] = new BlockRun(physical, j - i0);
                    var length = LogRecord.MapLength(j - i0);
                    total += length;
                    largest = Math.Max(largest, length);
                    i0 = j;
                }

                // The log space is reserved now: an admitted writer must never wait for a checkpoint, whose flush waits
                // for admitted writers.
                if (!HasLogSpaceLocked(total, largest))
                {
                    return false;
                }

                reserved = total + largest;
                _logReserved += reserved;
                if (_inPlaceWriters++ == 0)
                {
                    _inPlaceIdle.Reset();
                }
            }

            var done = 0;
            for (var r = 0; r < runCount; r++)
            {
                try
                {
                    ct.ThrowIfCancellationRequested();
                    RandomAccess.Write(_handle, source.Span.Slice(done << BlockShift, runs[r].Count << BlockShift), _layout.BlockOffset(runs[r].Start));
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
                {
                    throw IoFailure(e, "write");
                }

                done += runs[r].Count;
            }

            CommitInPlace(c, first, runs.AsSpan(0, runCount), crcs, ref reserved);
            return true;
        }
        finally
        {
            if (reserved != 0)
            {
                // Admitted but failed before its records: give the space back.
                lock (_meta)
                {
                    _logReserved -= reserved;
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

            ArrayPool<int>.Shared.Return(regionsHeld);
            ArrayPool<BlockRun>.Shared.Return(runs);
            ArrayPool<uint>.Shared.Return(crcs);
            ArrayPool<ulong>.Shared.Return(entries);
        }
    }

    /// <summary>
    /// One Map record per run, pointing at the same blocks with the new CRCs, in the space reserved at admission. A run
    /// whose mapping moved meanwhile (a concurrent redirected write, TRIM) keeps that newer mapping: overlapping writes
    /// in flight together have no order, and its old block is not reused before a flush, which waits for this write.
    /// </summary>
    private void CommitInPlace(StoreComponent c, long first, ReadOnlySpan<BlockRun> runs, uint[] crcs, ref int reserved)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(LogRecord.MapLength(BlockGeometry.MaxRequestBytes >> BlockShift));
        try
        {
            lock (_meta)
            {
                _logReserved -= reserved;
                reserved = 0;
                try
                {
                    ThrowIfDeleted(c);
                    var logical = first;
                    var done = 0;
                    foreach (var run in runs)
                    {
                        var moved = false;
                        for (var k = 0; k < run.Count; k++)
                        {
                            moved |= BlockMap.Physical(c.Map.Get(logical + k)) != run.Start + k;
                        }

                        if (!moved)
                        {
                            var length = LogRecord.WriteMap(buffer, c.Id, logical, run.Count, run.Start, crcs.AsSpan(done, run.Count));
                            AppendLocked(buffer.AsSpan(0, length));
                            for (var k = 0; k < run.Count; k++)
                            {
                                c.Map.Set(logical + k, BlockMap.Pack(run.Start + k, crcs[done + k]));
                            }
                        }

                        logical += run.Count;
                        done += run.Count;
                    }

                    InPlaceWrites++;
                    _dirty++;
                }
                finally
                {
                    if (--_inPlaceWriters == 0)
                    {
                        _inPlaceIdle.Set();
                    }
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Reads one block while no in-place rewrite of it can be running; returns the mapping the data belongs to.</summary>
    private async ValueTask<ulong> ReadUnderRegionLockAsync(StoreComponent c, long logical, Memory<byte> block, CancellationToken ct)
    {
        var region = _regions[Region(c, logical)];
        await region.WaitAsync(ct);
        try
        {
            var current = c.Map.Get(logical);
            if (current != 0)
            {
                await ReadExactAsync(_layout.BlockOffset(BlockMap.Physical(current)), block, ct);
            }

            return current;
        }
        finally
        {
            region.Release();
        }
    }
}
