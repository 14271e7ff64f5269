using System.Numerics;

namespace Converge.Storage;

internal readonly record struct BlockRun(long Start, int Count);

/// <summary>
/// Allocation bitmap of the data region: next-fit from a cursor (random writes land sequentially), and released blocks
/// pull the cursor back to the lowest of them, so recycled blocks are reused first and the physical working set stays
/// as compact as the logical one. That matters on a file-backed disk: writing pages the page cache already holds is
/// over ten times faster than writing never-touched regions of the file (measured: ~9 GiB/s against ~0.4 GiB/s).
/// Large allocations (<see cref="LargeRun"/> blocks or more) first take whole free runs of at least that length, from
/// the lowest one up, looking at a bounded stretch of the bitmap per allocation: after random 4 KiB writes the recycled
/// blocks are scattered singletons, and a 1 MiB write made of them became up to 256 scattered <c>pwrite</c>s, and every
/// later 1 MiB read of it as many <c>pread</c>s. Small allocations keep filling the fragments.
/// Not thread-safe.
/// </summary>
internal sealed class Allocator
{
    /// <summary>Shortest free run a large allocation takes while longer ones exist: 128 KiB, at most 8 runs per MiB.</summary>
    public const int LargeRun = 32;

    /// <summary>Most blocks one large allocation looks at (a 256 MiB stretch), so a fragmented multi-TiB disk never holds the caller long.</summary>
    private const int MaxScan = 1 << 16;

    private readonly ulong[] _bits;
    private long _cursor;
    private long _largeCursor;

    // Blocks scanned without finding a long run since the last find or release; once the whole region has been, the
    // search is off until a release (which may create a run).
    private long _fruitless;

    public Allocator(long blocks)
    {
        Blocks = blocks;
        _bits = new ulong[(blocks + 63) >> 6];
        FreeBlocks = blocks;
    }

    public long Blocks { get; }

    public long FreeBlocks { get; private set; }

    private bool NoLargeRuns => _fruitless >= Blocks;

    public bool IsUsed(long block) => (_bits[block >> 6] & (1UL << (int)(block & 63))) != 0;

    public void MarkUsed(long block)
    {
        _bits[block >> 6] |= 1UL << (int)(block & 63);
        FreeBlocks--;
    }

    public void Release(long start, int count)
    {
        for (var b = start; b < start + count; b++)
        {
            _bits[b >> 6] &= ~(1UL << (int)(b & 63));
        }

        FreeBlocks += count;
        if (count > 0)
        {
            _fruitless = 0;
            _cursor = Math.Min(_cursor, start);
            _largeCursor = Math.Min(_largeCursor, start);
        }
    }

    /// <summary>Allocates <paramref name="count"/> blocks as few runs as the free space allows; the caller checked <see cref="FreeBlocks"/>.</summary>
    public int Allocate(int count, Span<BlockRun> runs)
    {
        if (count < LargeRun || NoLargeRuns)
        {
            return AllocateNextFit(count, runs);
        }

        var runCount = TakeLongRuns(count, runs, out var taken);
        return taken == count ? runCount : runCount + AllocateNextFit(count - taken, runs[runCount..]);
    }

    /// <summary>
    /// Allocates <paramref name="count"/> blocks as at most <paramref name="maxRuns"/> long runs, or nothing (0). On
    /// failure the blocks it looked at go back without pulling the search back to them, as a release would: the next
    /// try goes on further (a probe that released its fragments kept re-scanning the same fragmented stretch).
    /// </summary>
    public int AllocateLong(int count, Span<BlockRun> runs, int maxRuns)
    {
        if (count < LargeRun || NoLargeRuns || count > FreeBlocks)
        {
            return 0;
        }

        var runCount = TakeLongRuns(count, runs, out var taken);
        if (taken == count && runCount <= maxRuns)
        {
            return runCount;
        }

        foreach (var run in runs[..runCount])
        {
            for (var b = run.Start; b < run.Start + run.Count; b++)
            {
                _bits[b >> 6] &= ~(1UL << (int)(b & 63));
            }
        }

        FreeBlocks += taken;
        return 0;
    }

    /// <summary>
    /// Takes free runs of at least <see cref="LargeRun"/> blocks (the last one may be cut to what is still needed),
    /// scanning at most <see cref="MaxScan"/> blocks from <see cref="_largeCursor"/>, where the next search goes on.
    /// </summary>
    private int TakeLongRuns(int count, Span<BlockRun> runs, out int taken)
    {
        var runCount = 0;
        taken = 0;
        var block = _largeCursor >= Blocks ? 0 : _largeCursor;

        // Start at the beginning of a free run the cursor may sit in, so a run straddling it is seen whole.
        for (var back = 1; back < LargeRun && block > 0 && !IsUsed(block - 1); back++)
        {
            block--;
        }

        var runStart = -1L;
        var limit = Math.Min(Blocks, MaxScan);
        var scanned = 0L;
        for (; scanned < limit && taken < count; scanned++, block++)
        {
            if (block >= Blocks)
            {
                // A run does not wrap around the end of the region.
                runStart = -1;
                block = 0;
            }

            if ((block & 63) == 0 && block + 64 <= Blocks && runStart < 0 && !HasFreeLane(_bits[block >> 6]))
            {
                // No long run can lie in this word alone (a run of LargeRun blocks always covers a whole free 16-block
                // lane): skip it, keeping only the free blocks at its top as the start of a run going on in the next.
                var top = BitOperations.LeadingZeroCount(_bits[block >> 6]);
                runStart = top > 0 ? block + 64 - top : -1;
                block += 63;
                scanned += 63;
                continue;
            }

            if (IsUsed(block))
            {
                runStart = -1;
                continue;
            }

            if (runStart < 0)
            {
                runStart = block;
            }

            var length = (int)(block - runStart + 1);
            if (length == Math.Min(LargeRun, count - taken))
            {
                // Long enough: extend it as far as it goes and as far as needed.
                var end = block + 1;
                while (end < Blocks && taken + (int)(end - runStart) < count && !IsUsed(end))
                {
                    end++;
                }

                var take = (int)(end - runStart);
                for (var b = runStart; b < end; b++)
                {
                    _bits[b >> 6] |= 1UL << (int)(b & 63);
                }

                runs[runCount++] = new BlockRun(runStart, take);
                taken += take;
                scanned += end - 1 - block;
                block = end - 1;
                runStart = -1;
            }
        }

        FreeBlocks -= taken;
        _largeCursor = block >= Blocks ? 0 : block;
        _fruitless = taken == 0 ? _fruitless + scanned : 0;

        return runCount;
    }

    /// <summary>Whether any of the word's four aligned 16-block lanes is wholly free (after random 4 KiB writes most words have free blocks, few a free lane).</summary>
    private static bool HasFreeLane(ulong used) =>
        (used & 0xFFFF) == 0 || (used & 0xFFFF_0000) == 0 || (used & 0xFFFF_0000_0000) == 0 || (used & 0xFFFF_0000_0000_0000) == 0;

    private int AllocateNextFit(int count, Span<BlockRun> runs)
    {
        var runCount = 0;
        var remaining = count;
        var block = _cursor;
        var scanned = 0L;
        while (remaining > 0)
        {
            if (scanned >= Blocks)
            {
                throw new InvalidOperationException("allocator bitmap disagrees with its free count");
            }

            if (block >= Blocks)
            {
                block = 0;
            }

            var word = _bits[block >> 6];
            if (word == ulong.MaxValue && (block & 63) == 0 && block + 64 <= Blocks)
            {
                block += 64;
                scanned += 64;
                continue;
            }

            if ((word & (1UL << (int)(block & 63))) != 0)
            {
                block++;
                scanned++;
                continue;
            }

            var start = block;
            var length = 0;
            while (length < remaining && block < Blocks && (_bits[block >> 6] & (1UL << (int)(block & 63))) == 0)
            {
                _bits[block >> 6] |= 1UL << (int)(block & 63);
                block++;
                length++;
            }

            scanned += length;
            runs[runCount++] = new BlockRun(start, length);
            remaining -= length;
        }

        FreeBlocks -= count;
        _cursor = block >= Blocks ? 0 : block;
        return runCount;
    }
}
