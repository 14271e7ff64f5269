using Converge.Common;
using static Converge.Storage.Tests.Data;

namespace Converge.Storage.Tests;

/// <summary>
/// In-place rewrites of blocks allocated since the last flush started (docs/local-store.md, "In-place rewrites"):
/// when they happen, and that crashes and concurrent readers still see old or new, never a mix, never a checksum error.
/// </summary>
public sealed class InPlaceTests : IDisposable
{
    private const long DiskSize = 96L << 20;
    private readonly TempDir _dir = new();
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(120));

    private CancellationToken Ct => _timeout.Token;

    public void Dispose()
    {
        _timeout.Dispose();
        _dir.Dispose();
    }


    [Fact]
    public async Task Unflushed_blocks_are_rewritten_in_place_and_flushed_ones_are_redirected()
    {
        await using var disk = await StoreDisk.FormatAsync(_dir.File("d.img"), DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 8L << 20, Ct);
        await c.WriteAsync(0, Blocks(0, 8, 1), WriteFlags.None, Ct);
        var first = disk.PhysicalOffsetOf(c, 0);
        Assert.Equal(0, disk.InPlaceWrites);

        await c.WriteAsync(0, Blocks(0, 8, 2), WriteFlags.None, Ct);
        Assert.Equal(1, disk.InPlaceWrites);
        Assert.Equal(first, disk.PhysicalOffsetOf(c, 0));
        Assert.Equal(8 * Block, disk.UsedBytes);
        await AssertVersionsAsync(c, 0, 8, 2);

        // After a flush the block is referenced by durable state: the next write goes elsewhere, the one after in place.
        await c.FlushAsync(Ct);
        await c.WriteAsync(0, Blocks(0, 8, 3), WriteFlags.None, Ct);
        Assert.Equal(1, disk.InPlaceWrites);
        var second = disk.PhysicalOffsetOf(c, 0);
        Assert.NotEqual(first, second);
        await c.WriteAsync(0, Blocks(0, 8, 4), WriteFlags.None, Ct);
        Assert.Equal(2, disk.InPlaceWrites);
        Assert.Equal(second, disk.PhysicalOffsetOf(c, 0));

        // A write that covers any block not rewritable (here: unmapped) is redirected as a whole.
        await c.WriteAsync(6 * Block, Blocks(6, 4, 5), WriteFlags.None, Ct);
        Assert.Equal(2, disk.InPlaceWrites);
        await AssertVersionsAsync(c, 0, 6, 4);
        await AssertVersionsAsync(c, 6, 4, 5);

        // Sub-block writes read-modify-write through the same path.
        await c.WriteAsync((6 * Block) + 100, new byte[10], WriteFlags.None, Ct);
        Assert.Equal(3, disk.InPlaceWrites);
        Assert.Equal(0, disk.ChecksumErrors);
    }

    [Fact]
    public async Task A_torn_in_place_write_recovers_the_last_flushed_version()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);
        await c.WriteAsync(0, Blocks(0, 4, 1), WriteFlags.None, Ct);
        await c.FlushAsync(Ct);
        await c.WriteAsync(0, Blocks(0, 4, 2), WriteFlags.None, Ct);   // redirected to new blocks
        await c.WriteAsync(0, Blocks(0, 4, 3), WriteFlags.None, Ct);   // in place
        Assert.Equal(1, disk.InPlaceWrites);

        // The crash tore block 0 (half of version 3 over version 2) and block 1 (version 2 over version 3); blocks 2
        // and 3 hold version 2 only (the in-place pwrite never reached the media).
        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        var v2 = Blocks(0, 4, 2);
        var v3 = Blocks(0, 4, 3);
        Overwrite(copy, disk.PhysicalOffsetOf(c, 0)!.Value, v2.AsSpan(0, Block / 2));
        Overwrite(copy, disk.PhysicalOffsetOf(c, 1)!.Value + (Block / 2), v2.AsSpan(Block + (Block / 2), Block / 2));
        Overwrite(copy, disk.PhysicalOffsetOf(c, 2)!.Value, v2.AsSpan(2 * Block, 2 * Block));
        Assert.NotEqual(v3, v2);

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        var back = new byte[4 * Block];
        await reopened.FindComponent(id)!.ReadAsync(0, back, Ct);
        Assert.Equal(1, VersionOf(back.AsSpan(0, Block), 0));
        Assert.Equal(1, VersionOf(back.AsSpan(Block, Block), 1));
        Assert.Equal(2, VersionOf(back.AsSpan(2 * Block, Block), 2));
        Assert.Equal(2, VersionOf(back.AsSpan(3 * Block, Block), 3));
        Assert.Equal(0, reopened.ChecksumErrors);
    }

    [Fact]
    public async Task In_place_data_whose_record_was_lost_falls_back_to_the_flushed_block()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);
        await c.WriteAsync(0, Blocks(0, 2, 1), WriteFlags.None, Ct);
        await c.FlushAsync(Ct);
        await c.WriteAsync(0, Blocks(0, 2, 2), WriteFlags.None, Ct);
        var recordAt = disk.LogHead;
        await c.WriteAsync(0, Blocks(0, 2, 3), WriteFlags.None, Ct);   // in place
        Assert.Equal(1, disk.InPlaceWrites);

        // The data reached the media, its Map record did not.
        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        Overwrite(copy, disk.DiskLayout.LogOffset + (recordAt % disk.DiskLayout.LogBytes), new byte[64]);

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        var back = new byte[2 * Block];
        await reopened.FindComponent(id)!.ReadAsync(0, back, Ct);
        Assert.Equal(1, VersionOf(back.AsSpan(0, Block), 0));
        Assert.Equal(1, VersionOf(back.AsSpan(Block, Block), 1));
        Assert.Equal(0, reopened.ChecksumErrors);
    }

    [Fact]
    public async Task Readers_racing_in_place_rewrites_see_whole_versions_and_no_checksum_errors()
    {
        await using var disk = await StoreDisk.FormatAsync(_dir.File("d.img"), DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, Ct);
        const int blocks = 16;
        await c.WriteAsync(0, Blocks(0, blocks, 1), WriteFlags.None, Ct);
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(
            async () =>
            {
                var rng = new Random(3);
                for (var version = 2; version < 2000; version++)
                {
                    var block = rng.Next(blocks - 3);
                    await c.WriteAsync(block * (long)Block, Blocks(block, 1 + rng.Next(3), version), WriteFlags.None, Ct);
                    if (version % 500 == 0)
                    {
                        await c.FlushAsync(Ct);   // the next write of each block redirects, then in place again
                    }
                }

                await stop.CancelAsync();
            },
            Ct);
        var readers = Enumerable.Range(0, 3).Select(r => Task.Run(
            async () =>
            {
                var buffer = new byte[blocks * Block];
                while (!stop.IsCancellationRequested)
                {
                    await c.ReadAsync(0, buffer, Ct);
                    for (var b = 0; b < blocks; b++)
                    {
                        Assert.True(VersionOf(buffer.AsSpan(b * Block, Block), b) >= 1);
                    }
                }
            },
            Ct)).ToArray();
        await writer;
        await Task.WhenAll(readers);
        Assert.True(disk.InPlaceWrites > 1000);
        Assert.Equal(0, disk.ChecksumErrors);
    }

    [Fact]
    public async Task Concurrent_in_place_writes_and_flushes_then_a_crash_recover_old_or_new_never_a_mix()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        const int blocks = 256;
        const int writersCount = 4;
        var latest = new int[blocks];
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", blocks * (long)Block, Ct);

        // Writer w owns blocks with block % writersCount == w and checks each write by reading it back.
        async Task WriteAsync(int w, int seed, int count, bool fua)
        {
            var rng = new Random(seed);
            for (var i = 0; i < count; i++)
            {
                var block = (rng.Next(blocks / writersCount) * writersCount) + w;
                var version = latest[block] + 1;
                await c.WriteAsync(block * (long)Block, Blocks(block, 1, version), fua && rng.Next(100) == 0 ? WriteFlags.Fua : WriteFlags.None, Ct);
                latest[block] = version;
                var check = new byte[Block];
                await c.ReadAsync(block * (long)Block, check, Ct);
                Assert.Equal(version, VersionOf(check, block));
            }
        }

        // Phase 1: writers (in place and redirected) with flushes arriving at any moment.
        using (var stop = new CancellationTokenSource())
        {
            var flusher = FlushAtRandomAsync(c, seed: 99, maxGapMs: 3, stop.Token, Ct);
            await Task.WhenAll(Enumerable.Range(0, writersCount).Select(w => Task.Run(() => WriteAsync(w, w, 600, fua: true), Ct)));
            await stop.CancelAsync();
            await flusher;
        }

        await c.FlushAsync(Ct);
        var durable = (int[])latest.Clone();
        var inPlaceBefore = disk.InPlaceWrites;
        Assert.True(inPlaceBefore > 0);

        // Phase 2, never flushed: each block's first write redirects, later ones go in place.
        await Task.WhenAll(Enumerable.Range(0, writersCount).Select(w => Task.Run(() => WriteAsync(w, 100 + w, 400, fua: false), Ct)));
        Assert.True(disk.InPlaceWrites > inPlaceBefore);

        // "Crash": of the blocks changed since the flush, a third lose their current block's data and a third are torn.
        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        var rngLoss = new Random(42);
        for (var b = 0; b < blocks; b++)
        {
            if (latest[b] == durable[b])
            {
                continue;
            }

            var offset = disk.PhysicalOffsetOf(c, b)!.Value;
            switch (rngLoss.Next(3))
            {
                case 0:
                    Overwrite(copy, offset, Random(Block, b));
                    break;
                case 1:
                    Overwrite(copy, offset + (Block / 2), Blocks(b, 1, durable[b]).AsSpan(Block / 2));
                    break;
            }
        }

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        var all = new byte[blocks * Block];
        await reopened.FindComponent(id)!.ReadAsync(0, all, Ct);
        Assert.Equal(0, reopened.ChecksumErrors);
        for (var b = 0; b < blocks; b++)
        {
            Assert.InRange(VersionOf(all.AsSpan(b * Block, Block), b), durable[b] == 0 ? -1 : durable[b], latest[b] == 0 ? -1 : latest[b]);
        }
    }

    [Fact]
    public async Task Bulk_writes_go_around_the_page_cache_and_read_back_the_same_before_and_after_a_reopen()
    {
        var path = _dir.File("bulk.img");
        var id = Guid.NewGuid();
        long physical;
        await using (var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct))
        {
            var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);

            // Version 1 buffered and read (so its pages are cached), then version 2 of the same range as bulk data.
            await c.WriteAsync(0, Blocks(0, 64, 1), WriteFlags.None, Ct);
            await AssertVersionsAsync(c, 0, 64, 1);
            await c.FlushAsync(Ct);
            await c.WriteAsync(0, Blocks(0, 64, 2), WriteFlags.Bulk, Ct);
            Assert.True(disk.DirectWrites > 0 || !disk.DirectWritesUsable, "a bulk write on a filesystem with O_DIRECT went through the page cache");
            await AssertVersionsAsync(c, 0, 64, 2);

            physical = disk.PhysicalOffsetOf(c, 5)!.Value;

            // Unaligned bulk data takes the read-modify-write path and keeps the bytes around it.
            var patch = Blocks(100, 2, 3);
            await c.WriteAsync((100 * Block) + 512, patch.AsMemory(0, Block), WriteFlags.Bulk, Ct);
            var back = new byte[Block];
            await c.ReadAsync((100 * Block) + 512, back, Ct);
            Assert.True(back.AsSpan().SequenceEqual(patch.AsSpan(0, Block)));
            await c.FlushAsync(Ct);
        }

        // What the file holds (a buffered read, which the page cache serves if it has the page) is the new data,
        // not a stale cached copy of the old.
        using (var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            var block = new byte[Block];
            RandomAccess.Read(handle, block, physical);
            Assert.Equal(2, VersionOf(block, 5));
        }

        await using (var reopened = await StoreDisk.OpenAsync(path, Options(), Ct))
        {
            var c = reopened.FindComponent(id)!;
            await AssertVersionsAsync(c, 0, 64, 2);
            Assert.Equal(0, reopened.ChecksumErrors);
        }
    }

}

public sealed class ChecksumTests
{
    [Fact]
    public void Interleaved_crc32c_matches_the_reference_for_every_length_and_alignment()
    {
        var data = Data.Random(3 * 4096, 5);
        Assert.Equal(0xE3069283u, Checksums.Crc32C("123456789"u8));
        for (var length = 0; length < data.Length - 8; length += length < 9000 ? 1 : 97)
        {
            var offset = length % 7;
            var span = data.AsSpan(offset, length);
            Assert.Equal(System.IO.Hashing.Crc32.HashToUInt32(System.IO.Hashing.Crc32ParameterSet.Crc32C, span), Checksums.Crc32C(span));
        }
    }
}
