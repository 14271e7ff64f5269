using Converge.Common;
using static Converge.Storage.Tests.Data;

namespace Converge.Storage.Tests;

/// <summary>
/// Defragmenting reads (docs/local-store.md, "Defragmenting reads"): a large read of scattered blocks moves them into one
/// run, never changes what any read returns, gives up when the range changed, and leaves old or new after a crash.
/// </summary>
public sealed class DefragTests : IDisposable
{
    private const long DiskSize = 96L << 20;
    private const int Range = 256;   // one 1 MiB read
    private readonly TempDir _dir = new();
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(120));

    private CancellationToken Ct => _timeout.Token;

    public void Dispose()
    {
        _timeout.Dispose();
        _dir.Dispose();
    }

    /// <summary>Writes blocks [0, count) as <paramref name="version"/>, one 4 KiB write each in shuffled order: scattered on disk.</summary>
    private static async Task WriteScatteredAsync(StoreComponent c, int count, int version, int seed, CancellationToken ct)
    {
        var order = Enumerable.Range(0, count).ToArray();
        new Random(seed).Shuffle(order);
        foreach (var block in order)
        {
            await c.WriteAsync(block * (long)Block, Blocks(block, 1, version), WriteFlags.None, ct);
        }
    }

    private static int PhysicalRuns(StoreDisk disk, StoreComponent c, long first, int count)
    {
        var runs = 0;
        long? next = null;
        for (var b = first; b < first + count; b++)
        {
            var at = disk.PhysicalOffsetOf(c, b);
            if (at != next)
            {
                runs++;
            }

            next = at + Block;
        }

        return runs;
    }



    [Fact]
    public async Task A_large_read_of_scattered_blocks_moves_them_into_one_run_that_survives_a_reopen()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        await using (var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct))
        {
            var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);
            await WriteScatteredAsync(c, Range, 1, seed: 1, Ct);
            Assert.True(PhysicalRuns(disk, c, 0, Range) > Range / 4, "the shuffled writes were not scattered");
            var used = disk.UsedBytes;

            await AssertVersionsAsync(c, 0, Range, 1);
            Assert.Equal(Range, disk.DefragmentedBlocks);
            Assert.Equal(1, PhysicalRuns(disk, c, 0, Range));
            Assert.Equal(used, disk.UsedBytes);

            // Contiguous now: reading again moves nothing.
            await AssertVersionsAsync(c, 0, Range, 1);
            Assert.Equal(Range, disk.DefragmentedBlocks);

            // Small reads never relocate, however scattered. (Flushed first, or the rewrites would go in place.)
            await c.FlushAsync(Ct);
            await WriteScatteredAsync(c, Range, 2, seed: 2, Ct);
            var small = new byte[16 * Block];
            for (var at = 0; at < Range; at += 16)
            {
                await c.ReadAsync(at * (long)Block, small, Ct);
            }

            Assert.Equal(Range, disk.DefragmentedBlocks);
            await AssertVersionsAsync(c, 0, Range, 2);
            Assert.Equal(2 * Range, disk.DefragmentedBlocks);
            await c.FlushAsync(Ct);
            Assert.Equal(0, disk.ChecksumErrors);
        }

        await using var reopened = await StoreDisk.OpenAsync(path, Options(), Ct);
        var again = reopened.FindComponent(id)!;
        Assert.Equal(1, PhysicalRuns(reopened, again, 0, Range));
        await AssertVersionsAsync(again, 0, Range, 2);
        Assert.Equal(0, reopened.ChecksumErrors);
    }

    [Fact]
    public async Task A_crash_that_loses_the_relocated_data_falls_back_to_the_scattered_blocks()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);
        await WriteScatteredAsync(c, Range, 1, seed: 3, Ct);
        await c.FlushAsync(Ct);
        await AssertVersionsAsync(c, 0, Range, 1);
        Assert.Equal(Range, disk.DefragmentedBlocks);

        // Its Map records reached the media, the relocated data did not (the first half is garbage, the rest zeros).
        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        var at = disk.PhysicalOffsetOf(c, 0)!.Value;
        Overwrite(copy, at, Random(Range / 2 * Block, 7));
        Overwrite(copy, at + (Range / 2 * Block), new byte[Range / 2 * Block]);

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        Assert.Equal(Range, reopened.RecoveryRejectedBlocks);
        await AssertVersionsAsync(reopened.FindComponent(id)!, 0, Range, 1);
        Assert.Equal(0, reopened.ChecksumErrors);
    }

    [Fact]
    public async Task A_relocation_gives_up_when_any_block_of_the_range_was_rewritten_after_the_read()
    {
        await using var disk = await StoreDisk.FormatAsync(_dir.File("d.img"), DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 8L << 20, Ct);
        await WriteScatteredAsync(c, Range, 1, seed: 4, Ct);
        await c.FlushAsync(Ct);
        var snapshot = new ulong[Range];
        for (var b = 0; b < Range; b++)
        {
            snapshot[b] = c.Map.Get(b);
        }

        var before = PhysicalRuns(disk, c, 0, Range);
        var free = disk.AllocatorFreeBlocks;

        // Block 77 is rewritten (redirected: it was flushed) between the read and the relocation.
        await c.WriteAsync(77L * Block, Blocks(77, 1, 2), WriteFlags.None, Ct);
        disk.Relocate(c, 0, Range, Blocks(0, Range, 1), snapshot);

        Assert.Equal(0, disk.DefragmentedBlocks);
        Assert.Equal(before, PhysicalRuns(disk, c, 0, Range));
        Assert.Equal(free - 1, disk.AllocatorFreeBlocks);   // only the rewrite's block; the relocation's went back
        var back = new byte[Range * Block];
        await c.ReadAsync(0, back, Ct);
        for (var b = 0; b < Range; b++)
        {
            Assert.Equal(b == 77 ? 2 : 1, VersionOf(back.AsSpan(b * Block, Block), b));
        }
    }

    [Fact]
    public async Task Large_readers_racing_writers_and_flushes_see_whole_versions_and_a_crash_keeps_old_or_new()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        const int blocks = 4 * Range;
        const int writersCount = 4;
        var latest = new int[blocks];
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", blocks * (long)Block, Ct);
        await WriteScatteredAsync(c, blocks, 1, seed: 5, Ct);
        Array.Fill(latest, 1);

        // Writer w owns the blocks of the lower half with block % writersCount == w. Relocations of ranges it writes to
        // mostly give up (something changed while they read); the upper half stays as scattered as it was written,
        // so relocations there succeed while writes and flushes go on around them.
        async Task WriteAsync(int w, int seed, int count)
        {
            var rng = new Random(seed);
            for (var i = 0; i < count; i++)
            {
                var block = (rng.Next(blocks / 2 / writersCount) * writersCount) + w;
                var version = latest[block] + 1;
                await c.WriteAsync(block * (long)Block, Blocks(block, 1, version), WriteFlags.None, Ct);
                latest[block] = version;
            }
        }

        // A reader sees every block as one whole version, never older than what its writer had finished before the read.
        async Task ReadAsync(int seed, CancellationToken stop)
        {
            var rng = new Random(seed);
            var buffer = new byte[Range * Block];
            // At least a few reads however fast the writers finish, then until they have.
            for (var n = 0; n < 8 || !stop.IsCancellationRequested; n++)
            {
                // Every other read (the first included) lies in the upper half, which no writer touches.
                var first = n % 2 == 0 ? (blocks / 2) + (rng.Next((blocks / 2) - Range + 1) & ~15) : rng.Next(blocks - Range + 1) & ~15;
                var floor = latest.AsSpan(first, Range).ToArray();
                await c.ReadAsync(first * (long)Block, buffer, Ct);
                for (var i = 0; i < Range; i++)
                {
                    Assert.True(VersionOf(buffer.AsSpan(i * Block, Block), first + i) >= floor[i], $"block {first + i} went back in time");
                }
            }
        }

        int[] durable;
        long?[] flushedAt;
        using (var stop = new CancellationTokenSource())
        {
            var flusher = FlushAtRandomAsync(c, seed: 98, maxGapMs: 5, stop.Token, Ct);
            var readers = Enumerable.Range(0, 2).Select(r => Task.Run(() => ReadAsync(50 + r, stop.Token), Ct)).ToArray();
            await Task.WhenAll(Enumerable.Range(0, writersCount).Select(w => Task.Run(() => WriteAsync(w, w, 1500), Ct)));
            await stop.CancelAsync();
            await flusher;
            await Task.WhenAll(readers);
            await c.FlushAsync(Ct);
            durable = (int[])latest.Clone();
            flushedAt = Enumerable.Range(0, blocks).Select(b => disk.PhysicalOffsetOf(c, b)).ToArray();

            // Unflushed: more writes and large reads, so relocations and rewrites are in the log past the last flush.
            using var stop2 = new CancellationTokenSource();
            var reader = Task.Run(() => ReadAsync(60, stop2.Token), Ct);
            await Task.WhenAll(Enumerable.Range(0, writersCount).Select(w => Task.Run(() => WriteAsync(w, 10 + w, 300), Ct)));
            await stop2.CancelAsync();
            await reader;
        }

        Assert.True(disk.DefragmentedBlocks > 0, "no read relocated anything");
        Assert.Equal(0, disk.ChecksumErrors);
        var all = new byte[blocks * Block];
        await c.ReadAsync(0, all, Ct);
        for (var b = 0; b < blocks; b++)
        {
            Assert.Equal(latest[b], VersionOf(all.AsSpan(b * Block, Block), b));
        }

        // "Crash": every block mapped elsewhere since the last flush (rewritten or relocated) loses its current data.
        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        for (var b = 0; b < blocks; b++)
        {
            if (disk.PhysicalOffsetOf(c, b) != flushedAt[b])
            {
                Overwrite(copy, disk.PhysicalOffsetOf(c, b)!.Value, Random(Block, b));
            }
        }

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        await reopened.FindComponent(id)!.ReadAsync(0, all, Ct);
        Assert.Equal(0, reopened.ChecksumErrors);
        for (var b = 0; b < blocks; b++)
        {
            Assert.InRange(VersionOf(all.AsSpan(b * Block, Block), b), durable[b], latest[b]);
        }
    }
}
