namespace Converge.Storage;

/// <summary>A sparse set of block numbers: one bit per block in 4096-block chunks allocated on first use.</summary>
internal sealed class BlockSet
{
    private const int ChunkShift = 12;
    private const int ChunkBlocks = 1 << ChunkShift;
    private readonly Dictionary<long, ulong[]> _chunks = [];

    public long Count { get; private set; }

    public void Add(long block)
    {
        if (!_chunks.TryGetValue(block >> ChunkShift, out var bits))
        {
            bits = new ulong[ChunkBlocks / 64];
            _chunks.Add(block >> ChunkShift, bits);
        }

        var within = (int)(block & (ChunkBlocks - 1));
        var mask = 1UL << (within & 63);
        if ((bits[within >> 6] & mask) == 0)
        {
            bits[within >> 6] |= mask;
            Count++;
        }
    }

    public void Remove(long first, long count)
    {
        for (var block = first; block < first + count && Count > 0; block++)
        {
            if (!_chunks.TryGetValue(block >> ChunkShift, out var bits))
            {
                block = (((block >> ChunkShift) + 1) << ChunkShift) - 1;
                continue;
            }

            var within = (int)(block & (ChunkBlocks - 1));
            var mask = 1UL << (within & 63);
            if ((bits[within >> 6] & mask) != 0)
            {
                bits[within >> 6] &= ~mask;
                Count--;
            }
        }
    }

    /// <summary>The blocks in the set, in ascending order.</summary>
    public IEnumerable<long> Blocks()
    {
        foreach (var chunk in _chunks.Keys.Order())
        {
            var bits = _chunks[chunk];
            for (var word = 0; word < bits.Length; word++)
            {
                var w = bits[word];
                while (w != 0)
                {
                    var bit = System.Numerics.BitOperations.TrailingZeroCount(w);
                    yield return (chunk << ChunkShift) + (word * 64) + bit;
                    w &= w - 1;
                }
            }
        }
    }
}
