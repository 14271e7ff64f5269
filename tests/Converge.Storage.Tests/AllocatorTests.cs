namespace Converge.Storage.Tests;

public sealed class AllocatorTests
{
    public static TheoryData<int> Seeds() => [.. Enumerable.Range(1, 32)];

    [Fact]
    public void Large_allocation_skips_fragments_and_small_one_fills_them()
    {
        var allocator = new Allocator(1024);
        var runs = new BlockRun[256];
        Assert.Equal(1, allocator.Allocate(256, runs));
        Assert.Equal(new BlockRun(0, 256), runs[0]);

        // Every other block of the first 256 comes back: 128 singletons, as 4 KiB random rewrites leave them.
        for (var b = 0; b < 256; b += 2)
        {
            allocator.Release(b, 1);
        }

        Assert.Equal(1, allocator.Allocate(Allocator.LargeRun * 2, runs));
        Assert.Equal(new BlockRun(256, Allocator.LargeRun * 2), runs[0]);

        Assert.Equal(1, allocator.Allocate(1, runs));
        Assert.Equal(new BlockRun(0, 1), runs[0]);
    }

    [Fact]
    public void Large_allocation_falls_back_to_fragments_when_no_long_run_is_left()
    {
        var allocator = new Allocator(256);
        var runs = new BlockRun[256];
        allocator.Allocate(256, runs);
        for (var b = 0; b < 256; b += 4)
        {
            allocator.Release(b, 3);
        }

        var count = allocator.Allocate(Allocator.LargeRun * 3, runs);
        Assert.Equal(Allocator.LargeRun * 3, runs[..count].ToArray().Sum(r => r.Count));
        Assert.All(runs[..count], r => Assert.Equal(3, r.Count));
        Assert.Equal(192 - (Allocator.LargeRun * 3), allocator.FreeBlocks);
    }

    [Fact]
    public void A_long_run_is_taken_whole_and_the_rest_of_the_request_from_the_next_one()
    {
        var allocator = new Allocator(512);
        var runs = new BlockRun[512];
        allocator.Allocate(512, runs);
        allocator.Release(10, 5);     // too short for a large allocation
        allocator.Release(100, 40);   // long enough
        allocator.Release(300, 100);  // long enough

        var count = allocator.Allocate(100, runs);
        Assert.Equal([new BlockRun(100, 40), new BlockRun(300, 60)], runs[..count].ToArray());
        Assert.Equal(45, allocator.FreeBlocks);
    }

    [Fact]
    public void A_large_allocation_scans_a_bounded_stretch_and_the_next_one_goes_on_from_there()
    {
        var (allocator, runs) = FragmentedFull(200_000, 150_000);

        allocator.Release(190_000, 64);

        // The first two searches each look at one bounded stretch of fragments, find no long run and take fragments.
        for (var i = 0; i < 2; i++)
        {
            var n = allocator.Allocate(64, runs);
            Assert.Equal(64, n);
            Assert.All(runs[..n], r => Assert.Equal(1, r.Count));
        }

        Assert.Equal(1, allocator.Allocate(64, runs));
        Assert.Equal(new BlockRun(190_000, 64), runs[0]);
    }

    [Fact]
    public void A_failed_long_allocation_gives_its_blocks_back_and_the_next_one_looks_further_on()
    {
        var (allocator, runs) = FragmentedFull(200_000, 150_000);

        allocator.Release(160_000, 40);   // long, but not enough alone
        allocator.Release(190_000, 64);
        var free = allocator.FreeBlocks;

        // Two stretches of fragments, then one where 64 blocks take two runs: more than allowed. Nothing is kept.
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(0, allocator.AllocateLong(64, runs, maxRuns: 1));
            Assert.Equal(free, allocator.FreeBlocks);
        }

        // The fourth goes on from where the third stopped instead of starting over at the fragments.
        Assert.Equal(1, allocator.AllocateLong(64, runs, maxRuns: 1));
        Assert.Equal(new BlockRun(190_000, 64), runs[0]);
        Assert.Equal(free - 64, allocator.FreeBlocks);

        // Every block the failed tries looked at is still free.
        Assert.All(Enumerable.Range(160_000, 40), b => Assert.False(allocator.IsUsed(b)));
        Assert.All(Enumerable.Range(190_000 - 8, 8), b => Assert.True(allocator.IsUsed(b)));
        Assert.False(allocator.IsUsed(0));
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Random_allocations_and_releases_never_hand_out_a_block_twice(int seed)
    {
        const int blocks = 4096;
        var random = new Random(seed);
        var allocator = new Allocator(blocks);
        var owned = new bool[blocks];
        var held = new List<BlockRun>();
        var runs = new BlockRun[blocks];
        for (var step = 0; step < 2000; step++)
        {
            if (held.Count > 0 && (random.Next(3) == 0 || allocator.FreeBlocks < 300))
            {
                var index = random.Next(held.Count);
                var run = held[index];
                held.RemoveAt(index);
                allocator.Release(run.Start, run.Count);
                for (var b = run.Start; b < run.Start + run.Count; b++)
                {
                    owned[b] = false;
                }

                continue;
            }

            var count = random.Next(3) == 0 ? random.Next(1, 300) : random.Next(1, 4);
            var longRunFree = LongestFreeRun(owned) >= Allocator.LargeRun;
            var n = allocator.Allocate(count, runs);
            Assert.Equal(count, runs[..n].ToArray().Sum(r => r.Count));
            foreach (var run in runs[..n])
            {
                Assert.InRange(run.Start, 0, blocks - run.Count);
                for (var b = run.Start; b < run.Start + run.Count; b++)
                {
                    Assert.False(owned[b], $"block {b} handed out twice (seed {seed}, step {step})");
                    owned[b] = true;
                }

                held.Add(run);
            }

            if (count >= Allocator.LargeRun && longRunFree)
            {
                Assert.True(runs[0].Count >= Allocator.LargeRun, $"a large allocation took a fragment while a long run was free (seed {seed}, step {step})");
            }

            Assert.Equal(blocks - owned.Count(o => o), allocator.FreeBlocks);
        }
    }

    /// <summary>A full allocator whose first <paramref name="fragmented"/> blocks then came back every other one (4 KiB rewrites' leftovers).</summary>
    private static (Allocator Allocator, BlockRun[] Runs) FragmentedFull(int blocks, int fragmented)
    {
        var allocator = new Allocator(blocks);
        var runs = new BlockRun[blocks];
        allocator.Allocate(blocks, runs);
        for (var b = 0; b < fragmented; b += 2)
        {
            allocator.Release(b, 1);
        }

        return (allocator, runs);
    }

    private static int LongestFreeRun(bool[] owned)
    {
        int longest = 0, current = 0;
        foreach (var used in owned)
        {
            current = used ? 0 : current + 1;
            longest = Math.Max(longest, current);
        }

        return longest;
    }
}
