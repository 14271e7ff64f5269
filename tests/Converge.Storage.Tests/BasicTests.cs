using Converge.Common;
using static Converge.Storage.Tests.Data;

namespace Converge.Storage.Tests;

public sealed class BasicTests : IDisposable
{
    private const long DiskSize = 96L << 20;
    private readonly TempDir _dir = new();
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(60));

    private CancellationToken _ct => _timeout.Token;

    public void Dispose()
    {
        _timeout.Dispose();
        _dir.Dispose();
    }

    private Task<StoreDisk> FormatAsync(string name = "d1.img", long size = DiskSize, StoreDiskOptions? options = null) =>
        StoreDisk.FormatAsync(_dir.File(name), size, options ?? Options(), _ct);

    [Fact]
    public async Task Format_write_read_and_reopen_roundtrip()
    {
        var id = Guid.NewGuid();
        var path = _dir.File("d1.img");
        Guid diskId;
        var data = Random(256 * 1024, 1);
        await using (var disk = await FormatAsync())
        {
            diskId = disk.Id;
            Assert.True(disk.CapacityBytes >= 64L << 20);
            var c = await disk.CreateComponentAsync(id, "vol-a", 16L << 20, _ct);
            Assert.Equal(VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes
                | VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn, c.Capabilities);
            await c.WriteAsync(1 << 20, data, WriteFlags.None, _ct);
            var back = new byte[data.Length];
            await c.ReadAsync(1 << 20, back, _ct);
            Assert.Equal(data, back);
        }

        await using (var disk = await StoreDisk.OpenAsync(path, Options(), _ct))
        {
            Assert.Equal(diskId, disk.Id);
            var c = Assert.Single(disk.Components);
            Assert.Equal(id, c.Id);
            Assert.Equal("vol-a", c.Name);
            Assert.Equal(16L << 20, c.Size);
            Assert.Same(c, disk.FindComponent(id));
            var back = new byte[data.Length];
            await c.ReadAsync(1 << 20, back, _ct);
            Assert.Equal(data, back);
            Assert.Equal(data.Length, c.UsedBytes);
            Assert.Equal(0, disk.ChecksumErrors);
        }
    }

    [Fact]
    public async Task Unwritten_ranges_read_zeros_and_use_no_space()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 30, _ct);
        var buffer = Random(1 << 20, 2);
        await c.ReadAsync(512L << 20, buffer, _ct);
        Assert.All(buffer, b => Assert.Equal(0, b));
        await c.WriteAsync(4096, Random(4096, 3), WriteFlags.None, _ct);
        var mixed = Random(3 * 4096, 4);
        await c.ReadAsync(0, mixed, _ct);
        Assert.All(mixed.AsSpan(0, 4096).ToArray(), b => Assert.Equal(0, b));
        Assert.All(mixed.AsSpan(8192, 4096).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(4096, c.UsedBytes);
        Assert.Equal(4096, disk.UsedBytes);
    }

    [Fact]
    public async Task Unaligned_writes_and_reads_match_a_model()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, _ct);
        var model = new byte[c.Size];
        var rng = new Random(5);
        for (var i = 0; i < 300; i++)
        {
            var length = rng.Next(1, 20000);
            var offset = rng.NextInt64(0, c.Size - length);
            var data = Random(length, i);
            await c.WriteAsync(offset, data, WriteFlags.None, _ct);
            data.CopyTo(model, offset);
            if (i % 50 == 0)
            {
                var readLength = rng.Next(1, 30000);
                var readOffset = rng.NextInt64(0, c.Size - readLength);
                var part = new byte[readLength];
                await c.ReadAsync(readOffset, part, _ct);
                Assert.Equal(model.AsSpan((int)readOffset, readLength).ToArray(), part);
            }
        }

        var all = new byte[c.Size];
        await c.ReadAsync(0, all, _ct);
        Assert.Equal(model, all);
    }

    [Fact]
    public async Task Used_and_provisioned_are_accounted_per_disk_and_component()
    {
        await using var disk = await FormatAsync();
        var a = await disk.CreateComponentAsync(Guid.NewGuid(), "a", 8L << 20, _ct);
        var b = await disk.CreateComponentAsync(Guid.NewGuid(), "b", 1L << 40, _ct); // overcommitted: thin
        Assert.Equal((8L << 20) + (1L << 40), disk.ProvisionedBytes);
        await a.WriteAsync(0, Random(3 * Block, 1), WriteFlags.None, _ct);
        await a.WriteAsync(Block, Random(Block, 2), WriteFlags.None, _ct); // overwrite: no new space
        await b.WriteAsync(1L << 39, Random(2 * Block, 3), WriteFlags.None, _ct);
        Assert.Equal(3 * Block, a.UsedBytes);
        Assert.Equal(2 * Block, b.UsedBytes);
        Assert.Equal(5 * Block, disk.UsedBytes);
        Assert.Equal(disk.CapacityBytes - (5 * Block), disk.FreeBytes);
    }

    [Fact]
    public async Task Trim_unmaps_whole_blocks_zeroes_partial_ones_and_frees_space()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, _ct);
        var data = Random(10 * Block, 7);
        await c.WriteAsync(0, data, WriteFlags.None, _ct);
        await c.FlushAsync(_ct);

        // Bytes 1000 .. 5 blocks + 100: block 0 partly, blocks 1-4 whole, block 5 partly.
        await c.TrimAsync(1000, (5 * Block) + 100 - 1000, WriteFlags.Fua, _ct);
        Array.Clear(data, 1000, (5 * Block) + 100 - 1000);
        var back = new byte[data.Length];
        await c.ReadAsync(0, back, _ct);
        Assert.Equal(data, back);
        Assert.Equal(6 * Block, c.UsedBytes);

        var extents = await c.GetAllocationAsync(0, 10 * Block, _ct);
        Assert.Equal(
            [new(Block, AllocationFlags.Data), new(4 * Block, AllocationFlags.Hole | AllocationFlags.Zero), new(5 * Block, AllocationFlags.Data)],
            extents);

        // The freed blocks are reusable after the flush: fill the rest of the disk minus the reserve.
        await disk.FlushAsync(_ct);
        Assert.Equal(disk.CapacityBytes - (6 * Block), disk.FreeBytes);
    }

    [Fact]
    public async Task Write_zeroes_with_and_without_no_hole_and_fast_zero()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, _ct);
        await c.WriteAsync(0, Random(16 * Block, 8), WriteFlags.None, _ct);

        var refused = await Assert.ThrowsAsync<VolumeException>(async () =>
            await c.WriteZeroesAsync(0, 4 * Block, ZeroFlags.NoHole | ZeroFlags.FastZero, _ct));
        Assert.Equal(VolumeError.NotSupported, refused.Error);
        var untouched = new byte[4 * Block];
        await c.ReadAsync(0, untouched, _ct);
        Assert.Equal(Random(16 * Block, 8).AsSpan(0, 4 * Block).ToArray(), untouched);

        await c.WriteZeroesAsync(0, 4 * Block, ZeroFlags.NoHole, _ct);
        Assert.Equal(16 * Block, c.UsedBytes);
        await c.WriteZeroesAsync(4 * Block, 4 * Block, ZeroFlags.None, _ct);
        Assert.Equal(12 * Block, c.UsedBytes);
        await c.WriteZeroesAsync(8 * Block, 4 * Block, ZeroFlags.FastZero | ZeroFlags.Fua, _ct);
        Assert.Equal(8 * Block, c.UsedBytes);

        var back = new byte[12 * Block];
        await c.ReadAsync(0, back, _ct);
        Assert.All(back, b => Assert.Equal(0, b));
        var extents = await c.GetAllocationAsync(0, 16 * Block, _ct);
        Assert.Equal(
            [new(4 * Block, AllocationFlags.Data), new(8 * Block, AllocationFlags.Hole | AllocationFlags.Zero), new(4 * Block, AllocationFlags.Data)],
            extents);
    }

    [Fact]
    public async Task Block_status_reports_holes_and_data_from_an_unaligned_offset()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 30, _ct);
        await c.WriteAsync(2 * Block, Random(2 * Block, 1), WriteFlags.None, _ct);
        await c.WriteAsync(10 * Block, Random(Block, 2), WriteFlags.None, _ct);

        var extents = await c.GetAllocationAsync(100, (16 * Block) - 100, _ct);
        Assert.Equal(
            [
                new((2 * Block) - 100, AllocationFlags.Hole | AllocationFlags.Zero),
                new(2 * Block, AllocationFlags.Data),
                new(6 * Block, AllocationFlags.Hole | AllocationFlags.Zero),
                new(Block, AllocationFlags.Data),
                new(5 * Block, AllocationFlags.Hole | AllocationFlags.Zero),
            ],
            extents);

        // A huge unallocated tail is one extent, clipped to the component.
        var tail = await c.GetAllocationAsync(16 * Block, long.MaxValue / 2, _ct);
        Assert.Equal([new(c.Size - (16 * Block), AllocationFlags.Hole | AllocationFlags.Zero)], tail);
        await Assert.ThrowsAsync<VolumeException>(async () => await c.GetAllocationAsync(c.Size, 1, _ct));
    }

    [Fact]
    public async Task Resize_grows_persists_and_refuses_shrink()
    {
        var id = Guid.NewGuid();
        await using (var disk = await FormatAsync())
        {
            var c = await disk.CreateComponentAsync(id, "v", 1L << 20, _ct);
            await Assert.ThrowsAsync<VolumeException>(async () => await c.WriteAsync(1L << 20, Random(Block, 1), WriteFlags.None, _ct));
            await disk.ResizeComponentAsync(id, 4L << 20, _ct);
            Assert.Equal(4L << 20, c.Size);
            Assert.Equal(4L << 20, disk.ProvisionedBytes);
            await c.WriteAsync((4L << 20) - Block, Random(Block, 1), WriteFlags.None, _ct);
            await Assert.ThrowsAsync<ArgumentException>(() => disk.ResizeComponentAsync(id, 2L << 20, _ct));
        }

        await using (var disk = await StoreDisk.OpenAsync(_dir.File("d1.img"), Options(), _ct))
        {
            var c = disk.FindComponent(id)!;
            Assert.Equal(4L << 20, c.Size);
            var back = new byte[Block];
            await c.ReadAsync((4L << 20) - Block, back, _ct);
            Assert.Equal(Random(Block, 1), back);
        }
    }

    [Fact]
    public async Task Delete_frees_space_and_makes_the_volume_unavailable()
    {
        var id = Guid.NewGuid();
        await using (var disk = await FormatAsync())
        {
            var c = await disk.CreateComponentAsync(id, "v", 8L << 20, _ct);
            await c.WriteAsync(0, Random(4 << 20, 1), WriteFlags.None, _ct);
            Assert.Equal(4L << 20, disk.UsedBytes);
            await Assert.ThrowsAsync<InvalidOperationException>(() => disk.CreateComponentAsync(id, "again", 4096, _ct));
            await disk.DeleteComponentAsync(id, _ct);
            Assert.Equal(0, disk.UsedBytes);
            Assert.Equal(0, disk.ProvisionedBytes);
            Assert.Null(disk.FindComponent(id));
            var e = await Assert.ThrowsAsync<VolumeException>(async () => await c.ReadAsync(0, new byte[Block], _ct));
            Assert.Equal(VolumeError.Unavailable, e.Error);
            e = await Assert.ThrowsAsync<VolumeException>(async () => await c.WriteAsync(0, new byte[Block], WriteFlags.None, _ct));
            Assert.Equal(VolumeError.Unavailable, e.Error);
        }

        await using (var disk = await StoreDisk.OpenAsync(_dir.File("d1.img"), Options(), _ct))
        {
            Assert.Empty(disk.Components);
            Assert.Equal(0, disk.UsedBytes);
            var c = await disk.CreateComponentAsync(id, "v", 8L << 20, _ct);
            var back = new byte[Block];
            await c.ReadAsync(0, back, _ct);
            Assert.All(back, b => Assert.Equal(0, b));
        }
    }

    [Fact]
    public async Task Out_of_range_requests_fail_and_change_nothing()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, _ct);
        async Task Expect(Func<Task> action)
        {
            var e = await Assert.ThrowsAsync<VolumeException>(action);
            Assert.Equal(VolumeError.OutOfRange, e.Error);
        }

        await Expect(async () => await c.WriteAsync((1L << 20) - 100, new byte[101], WriteFlags.None, _ct));
        await Expect(async () => await c.WriteAsync(-1, new byte[1], WriteFlags.None, _ct));
        await Expect(async () => await c.ReadAsync(1L << 20, new byte[1], _ct));
        await Expect(async () => await c.TrimAsync(0, (1L << 20) + 1, WriteFlags.None, _ct));
        await Expect(async () => await c.WriteZeroesAsync(long.MaxValue, 10, ZeroFlags.None, _ct));
        var big = await disk.CreateComponentAsync(Guid.NewGuid(), "big", 1L << 30, _ct);
        await Expect(async () => await big.WriteAsync(0, new byte[BlockGeometry.MaxRequestBytes + 1], WriteFlags.None, _ct));
        Assert.Equal(0, disk.UsedBytes);

        // The largest request is fine, in one piece.
        var max = Random(BlockGeometry.MaxRequestBytes, 3);
        await big.WriteAsync(4096 * 3, max, WriteFlags.None, _ct);
        var back = new byte[max.Length];
        await big.ReadAsync(4096 * 3, back, _ct);
        Assert.Equal(max, back);
    }

    [Fact]
    public async Task Full_disk_fails_with_no_space_and_changes_nothing()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 30, _ct);
        var chunk = Random(1 << 20, 9);
        long offset = 0;
        VolumeException? full = null;
        while (full is null)
        {
            try
            {
                await c.WriteAsync(offset, chunk, WriteFlags.None, _ct);
                offset += chunk.Length;
            }
            catch (VolumeException e)
            {
                full = e;
            }
        }

        Assert.Equal(VolumeError.NoSpace, full.Error);
        Assert.Equal(offset, c.UsedBytes);
        Assert.True(offset > disk.CapacityBytes / 2);
        var back = new byte[chunk.Length];
        await c.ReadAsync(offset, back, _ct);
        Assert.All(back, b => Assert.Equal(0, b));
        Assert.Equal(AllocationFlags.Hole | AllocationFlags.Zero, (await c.GetAllocationAsync(offset, chunk.Length, _ct))[0].Flags);

        // Overwrites of mapped blocks still work (the reserve), many times over (flushes recycle superseded blocks).
        for (var i = 0; i < 40; i++)
        {
            await c.WriteAsync(0, Random(1 << 20, 100 + i), WriteFlags.None, _ct);
        }

        await c.ReadAsync(0, back, _ct);
        Assert.Equal(Random(1 << 20, 139), back);
        Assert.Equal(offset, c.UsedBytes);
    }

    [Fact]
    public async Task Format_refuses_existing_data_and_tiny_sizes()
    {
        var path = _dir.File("x.img");
        await File.WriteAllBytesAsync(path, [1, 2, 3], _ct);
        await Assert.ThrowsAsync<IOException>(() => StoreDisk.FormatAsync(path, DiskSize, Options(), _ct));
        Assert.Equal(3, new FileInfo(path).Length);
        await Assert.ThrowsAsync<ArgumentException>(() => StoreDisk.FormatAsync(_dir.File("small.img"), 32L << 20, Options(), _ct));
        await Assert.ThrowsAsync<ArgumentException>(() => FormatAsync("badlog.img", DiskSize, Options(logBytes: 1 << 20)));
    }

    [Fact]
    public async Task Component_arguments_are_validated()
    {
        await using var disk = await FormatAsync();
        await Assert.ThrowsAsync<ArgumentException>(() => disk.CreateComponentAsync(Guid.NewGuid(), "v", 1000, _ct));
        await Assert.ThrowsAsync<ArgumentException>(() => disk.CreateComponentAsync(Guid.NewGuid(), "v", 0, _ct));
        await Assert.ThrowsAsync<ArgumentException>(() => disk.CreateComponentAsync(Guid.NewGuid(), new string('x', 300), 4096, _ct));
        await Assert.ThrowsAsync<KeyNotFoundException>(() => disk.DeleteComponentAsync(Guid.NewGuid(), _ct));
    }

    [Fact]
    public async Task Background_flush_runs_when_writes_are_old_enough_on_the_injected_clock()
    {
        var time = new ManualTimeProvider();
        await using var disk = await FormatAsync(options: Options(time: time, flushInterval: TimeSpan.FromSeconds(1), maxUnflushedAge: TimeSpan.FromSeconds(5)));
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, _ct);
        await c.WriteAsync(0, Random(Block, 1), WriteFlags.None, _ct);
        var before = disk.FlushesCompleted;

        // Young unflushed writes and no space pressure: ticks pass without a sync.
        for (var tick = 0; tick < 3; tick++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(50, _ct);
        }

        Assert.Equal(before, disk.FlushesCompleted);

        time.Advance(TimeSpan.FromSeconds(2));
        await WaitForFlushAsync(disk, before);

        // Nothing unflushed: later ticks do not sync.
        before = disk.FlushesCompleted;
        time.Advance(TimeSpan.FromSeconds(10));
        await Task.Delay(100, _ct);
        Assert.Equal(before, disk.FlushesCompleted);
    }

    [Fact]
    public async Task Background_flush_recycles_superseded_blocks_at_once_under_space_pressure()
    {
        var time = new ManualTimeProvider();
        await using var disk = await FormatAsync(options: Options(time: time, flushInterval: TimeSpan.FromSeconds(1), maxUnflushedAge: TimeSpan.FromHours(1)));
        // A quarter of the data region, rounded up to whole chunks so the overwrite below supersedes all of it.
        const int chunk = 1 << 20;
        var size = (disk.CapacityBytes / 4 + chunk - 1) / chunk * chunk;
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", size, _ct);
        var data = Random(chunk, 2);
        for (var pass = 0; pass < 2; pass++)
        {
            for (long at = 0; at + data.Length <= size; at += data.Length)
            {
                await c.WriteAsync(at, data, WriteFlags.None, _ct);
            }

            if (pass == 0)
            {
                // Flushed blocks are redirected when overwritten (unflushed ones would be rewritten in place).
                await c.FlushAsync(_ct);
            }
        }

        // A whole overwrite of a quarter of the disk is waiting for recycling: the next tick flushes, long before the age.
        var before = disk.FlushesCompleted;
        time.Advance(TimeSpan.FromSeconds(1));
        await WaitForFlushAsync(disk, before);
    }

    private async Task WaitForFlushAsync(StoreDisk disk, long before)
    {
        for (var i = 0; i < 500 && disk.FlushesCompleted == before; i++)
        {
            await Task.Delay(10, _ct);
        }

        Assert.True(disk.FlushesCompleted > before, "the background flush did not run");
    }

    [Fact]
    public async Task Concurrent_sub_block_writes_to_one_block_keep_each_others_bytes()
    {
        await using var disk = await FormatAsync();
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, _ct);
        var writers = Enumerable.Range(0, 8).Select(t => Task.Run(
            async () =>
            {
                var piece = new byte[512];
                for (var round = 0; round < 20; round++)
                {
                    Array.Fill(piece, (byte)((t * 20) + round + 1));
                    for (var block = 0; block < 16; block++)
                    {
                        await c.WriteAsync((block * (long)Block) + (t * 512), piece, WriteFlags.None, _ct);
                    }
                }
            },
            _ct)).ToArray();
        await Task.WhenAll(writers);
        var all = new byte[16 * Block];
        await c.ReadAsync(0, all, _ct);
        for (var i = 0; i < all.Length; i++)
        {
            Assert.Equal((byte)(((i % Block / 512) * 20) + 20), all[i]);
        }
    }
}
