namespace Converge.Storage;

internal readonly record struct BlockRun(long Start, int Count);

/// <summary>
/// Allocation bitmap of the data region: next-fit from a cursor (random writes land sequentially), and released blocks
/// pull the cursor back to the lowest of them, so recycled blocks are reused first and the physical working set stays
/// as compact as the logical one. That matters on a file-backed disk: writing pages the page cache already holds is
/// over ten times faster than writing never-touched regions of the file (measured: ~9 GiB/s against ~0.4 GiB/s).
/// Not thread-safe.
/// </summary>
internal sealed class Allocator
{
    private readonly ulong[] _bits;
    private long _cursor;

    public Allocator(long blocks)
    {
        Blocks = blocks;
        _bits = new ulong[(blocks + 63) >> 6];
        FreeBlocks = blocks;
    }

    public long Blocks { get; }

    public long FreeBlocks { get; private set; }

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
        if (count > 0 && start < _cursor)
        {
            _cursor = start;
        }
    }

    /// <summary>Allocates <paramref name="count"/> blocks as few runs as the free space allows; the caller checked <see cref="FreeBlocks"/>.</summary>
    public int Allocate(int count, Span<BlockRun> runs)
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
