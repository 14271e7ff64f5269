namespace Converge.Storage;

/// <summary>
/// Logical block → (physical block, CRC-32C), packed as <c>(physical + 1) &lt;&lt; 32 | crc</c> so that 0 means unmapped.
/// Chunks of 8192 entries are allocated on first write, so an empty large component costs almost nothing.
/// Mutated only under the disk's metadata lock; read without it (64-bit reads are atomic).
/// </summary>
internal sealed class BlockMap
{
    public const int ChunkShift = 13;
    public const int ChunkSize = 1 << ChunkShift;
    private const int ChunkMask = ChunkSize - 1;

    private ulong[]?[] _chunks;

    public BlockMap(long blocks)
    {
        _chunks = new ulong[]?[ChunkCount(blocks)];
    }

    public int ChunkCountAllocated => _chunks.Length;

    public static ulong Pack(long physical, uint crc) => ((ulong)(physical + 1) << 32) | crc;

    public static long Physical(ulong entry) => (long)(entry >> 32) - 1;

    public static uint Crc(ulong entry) => (uint)entry;

    public ulong Get(long block)
    {
        var chunks = Volatile.Read(ref _chunks);
        var index = block >> ChunkShift;
        if ((ulong)index >= (ulong)chunks.Length)
        {
            return 0;
        }

        var chunk = Volatile.Read(ref chunks[index]);
        return chunk is null ? 0 : Volatile.Read(ref chunk[block & ChunkMask]);
    }

    /// <summary>Returns the previous entry.</summary>
    public ulong Set(long block, ulong entry)
    {
        var chunks = _chunks;
        var index = block >> ChunkShift;
        var chunk = chunks[index];
        if (chunk is null)
        {
            if (entry == 0)
            {
                return 0;
            }

            chunk = new ulong[ChunkSize];
            Volatile.Write(ref chunks[index], chunk);
        }

        var old = chunk[block & ChunkMask];
        Volatile.Write(ref chunk[block & ChunkMask], entry);
        return old;
    }

    public void Grow(long blocks)
    {
        var count = ChunkCount(blocks);
        if (count > _chunks.Length)
        {
            var grown = new ulong[]?[count];
            Array.Copy(_chunks, grown, _chunks.Length);
            Volatile.Write(ref _chunks, grown);
        }
    }

    /// <summary>The chunk holding <paramref name="chunkIndex"/>, or null when nothing in it was ever mapped.</summary>
    public ulong[]? Chunk(long chunkIndex) =>
        (ulong)chunkIndex < (ulong)_chunks.Length ? Volatile.Read(ref _chunks[chunkIndex]) : null;

    private static int ChunkCount(long blocks) => checked((int)((blocks + ChunkMask) >> ChunkShift));
}
