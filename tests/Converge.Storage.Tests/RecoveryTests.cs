using Converge.Common;
using static Converge.Storage.Tests.Data;

namespace Converge.Storage.Tests;

public sealed class RecoveryTests : IDisposable
{
    private const long DiskSize = 96L << 20;
    private readonly TempDir _dir = new();
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(60));

    private CancellationToken Ct => _timeout.Token;

    public void Dispose()
    {
        _timeout.Dispose();
        _dir.Dispose();
    }

    private static async Task Corrupt(string path, long offset, int length, int seed)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        RandomAccess.Write(handle, Random(length, seed), offset);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Missing_disk_is_reported_and_not_recreated()
    {
        var path = _dir.File("gone.img");
        var e = await Assert.ThrowsAsync<DiskOpenException>(() => StoreDisk.OpenAsync(path, Options(), Ct));
        Assert.Equal(DiskState.Missing, e.State);
        Assert.Equal(path, e.DiskPath);
        Assert.Contains("missing", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task Garbage_short_or_checkpoint_corrupt_disks_are_corrupt()
    {
        var garbage = _dir.File("garbage.img");
        await File.WriteAllBytesAsync(garbage, Random(1 << 20, 1), Ct);
        var e = await Assert.ThrowsAsync<DiskOpenException>(() => StoreDisk.OpenAsync(garbage, Options(), Ct));
        Assert.Equal(DiskState.Corrupt, e.State);
        Assert.Equal(Random(1 << 20, 1), await File.ReadAllBytesAsync(garbage, Ct));

        var shortFile = _dir.File("short.img");
        await File.WriteAllBytesAsync(shortFile, new byte[100], Ct);
        Assert.Equal(DiskState.Corrupt, (await Assert.ThrowsAsync<DiskOpenException>(() => StoreDisk.OpenAsync(shortFile, Options(), Ct))).State);

        var path = _dir.File("d.img");
        long slot0;
        long slot1;
        await using (var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct))
        {
            await disk.CreateComponentAsync(Guid.NewGuid(), "v", 1L << 20, Ct);
            slot0 = disk.DiskLayout.SlotOffset(0);
            slot1 = disk.DiskLayout.SlotOffset(1);
        }

        // One torn superblock copy is survivable: the other copy still names a valid checkpoint.
        var copy = _dir.File("copy.img");
        File.Copy(path, copy);
        await Corrupt(copy, 0, 100, 2);
        await using (var disk = await StoreDisk.OpenAsync(copy, Options(), Ct))
        {
            Assert.Single(disk.Components);
        }

        await Corrupt(path, slot0, 64, 3);
        await Corrupt(path, slot1, 64, 4);
        e = await Assert.ThrowsAsync<DiskOpenException>(() => StoreDisk.OpenAsync(path, Options(), Ct));
        Assert.Equal(DiskState.Corrupt, e.State);
        Assert.Contains("checkpoint", e.Message, StringComparison.Ordinal);

        var truncated = _dir.File("truncated.img");
        File.Copy(copy, truncated);
        using (var handle = File.OpenHandle(truncated, FileMode.Open, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(handle, DiskSize / 2);
        }

        Assert.Equal(DiskState.Corrupt, (await Assert.ThrowsAsync<DiskOpenException>(() => StoreDisk.OpenAsync(truncated, Options(), Ct))).State);
    }

    [Fact]
    public async Task A_disk_cannot_be_opened_twice()
    {
        var path = _dir.File("d.img");
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var e = await Assert.ThrowsAsync<DiskOpenException>(() => StoreDisk.OpenAsync(path, Options(), Ct));
        Assert.Equal(DiskState.Failed, e.State);
    }

    [Fact]
    public async Task Crash_without_dispose_keeps_flushed_and_fua_writes()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);
        await c.WriteAsync(0, Blocks(0, 16, 1), WriteFlags.None, Ct);
        await c.FlushAsync(Ct);
        await c.WriteAsync(16 * Block, Blocks(16, 4, 1), WriteFlags.Fua, Ct);
        await c.TrimAsync(0, 2 * Block, WriteFlags.Fua, Ct);
        disk.SimulateCrash();
        await Assert.ThrowsAsync<VolumeException>(async () => await c.ReadAsync(0, new byte[Block], Ct));

        await using var reopened = await StoreDisk.OpenAsync(path, Options(), Ct);
        var r = reopened.FindComponent(id)!;
        var back = new byte[20 * Block];
        await r.ReadAsync(0, back, Ct);
        var expected = new byte[20 * Block];
        Blocks(0, 20, 1).CopyTo(expected, 0);
        Array.Clear(expected, 0, 2 * Block);
        Assert.Equal(expected, back);
        Assert.Equal(18 * Block, reopened.UsedBytes);
    }

    [Fact]
    public async Task Unsynced_records_whose_data_never_landed_fall_back_to_the_old_blocks()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", 8L << 20, Ct);
        await c.WriteAsync(0, Blocks(0, 4, 1), WriteFlags.None, Ct);
        await c.FlushAsync(Ct);
        await c.WriteAsync(0, Blocks(0, 4, 2), WriteFlags.None, Ct);
        await c.WriteAsync(10 * Block, Blocks(10, 1, 2), WriteFlags.None, Ct);
        var lost = new[] { disk.PhysicalOffsetOf(c, 0)!.Value, disk.PhysicalOffsetOf(c, 1)!.Value, disk.PhysicalOffsetOf(c, 10)!.Value };

        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        for (var i = 0; i < lost.Length; i++)
        {
            await Corrupt(copy, lost[i], Block, 10 + i);
        }

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        Assert.Equal(3, reopened.RecoveryRejectedBlocks);
        var r = reopened.FindComponent(id)!;
        var back = new byte[11 * Block];
        await r.ReadAsync(0, back, Ct);
        Assert.Equal(1, VersionOf(back.AsSpan(0, Block), 0));
        Assert.Equal(1, VersionOf(back.AsSpan(Block, Block), 1));
        Assert.Equal(2, VersionOf(back.AsSpan(2 * Block, Block), 2));
        Assert.Equal(2, VersionOf(back.AsSpan(3 * Block, Block), 3));
        Assert.Equal(-1, VersionOf(back.AsSpan(10 * Block, Block), 10));
        Assert.Equal(0, reopened.ChecksumErrors);
        Assert.Equal(4 * Block, reopened.UsedBytes);

        // Recovery wrote a checkpoint: a second open sees the same state without re-verifying.
        await reopened.DisposeAsync();
        await using var again = await StoreDisk.OpenAsync(copy, Options(), Ct);
        Assert.Equal(0, again.RecoveryRejectedBlocks);
        await again.FindComponent(id)!.ReadAsync(0, back, Ct);
        Assert.Equal(1, VersionOf(back.AsSpan(0, Block), 0));
    }

    [Fact]
    public async Task Blocks_whose_newest_write_was_lost_are_counted_and_replaced_durably_when_the_owner_asks()
    {
        var path = _dir.File("d.img");
        var (vId, wId) = (Guid.NewGuid(), Guid.NewGuid());
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var v = await disk.CreateComponentAsync(vId, "v", 8L << 20, Ct);
        var w = await disk.CreateComponentAsync(wId, "w", 8L << 20, Ct);
        await v.WriteAsync(0, Blocks(0, 4, 1), WriteFlags.None, Ct);
        await w.WriteAsync(0, Blocks(0, 1, 1), WriteFlags.None, Ct);
        await v.FlushAsync(Ct);

        await v.WriteAsync(0, Blocks(0, 4, 2), WriteFlags.None, Ct);        // block 0's data will be lost
        await v.WriteAsync(10 * Block, Blocks(10, 1, 2), WriteFlags.None, Ct); // first write of block 10, lost
        await v.WriteAsync(4 * Block, Blocks(4, 1, 1), WriteFlags.None, Ct);   // rewritten in place twice: older records
        await v.WriteAsync(4 * Block, Blocks(4, 1, 2), WriteFlags.None, Ct);   // fail verification, the newest does not
        await v.WriteAsync(4 * Block, Blocks(4, 1, 3), WriteFlags.None, Ct);
        await v.WriteAsync(5 * Block, Blocks(5, 1, 1), WriteFlags.None, Ct);   // lost, but trimmed afterwards
        var block5 = disk.PhysicalOffsetOf(v, 5)!.Value;
        await v.TrimAsync(5 * Block, Block, WriteFlags.None, Ct);
        await w.WriteAsync(0, Blocks(0, 1, 2), WriteFlags.None, Ct);            // lost, and its owner keeps old content
        Assert.Equal(2, disk.InPlaceWrites);

        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        await Corrupt(copy, disk.PhysicalOffsetOf(v, 0)!.Value, Block, 1);
        await Corrupt(copy, disk.PhysicalOffsetOf(v, 10)!.Value, Block, 2);
        await Corrupt(copy, block5, Block, 3);
        await Corrupt(copy, disk.PhysicalOffsetOf(w, 0)!.Value, Block, 4);

        var beforeRecovery = _dir.File("before-recovery.img");
        File.Copy(copy, beforeRecovery);
        var offered = new List<(string Name, long Block, int Version)>();
        var options = new StoreDiskOptions
        {
            LogBytes = 8L << 20,
            BackgroundFlushInterval = TimeSpan.Zero,
            OnLostWrite = (id, name, block, content) =>
            {
                offered.Add((name, block, VersionOf(content, block)));
                if (id != vId)
                {
                    return false;
                }

                content.Fill(0xA5);
                return true;
            },
        };
        await using var reopened = await StoreDisk.OpenAsync(copy, options, Ct);
        Assert.Equal([("v", 0L, 1), ("v", 10L, -1), ("w", 0L, 1)], offered.OrderBy(o => o.Name).ThenBy(o => o.Block));
        Assert.Equal(3, reopened.RecoveryLostWrites);
        Assert.Equal(2, reopened.RecoveryReplacedBlocks);

        async Task AssertRecoveredAsync(StoreDisk d)
        {
            var back = new byte[11 * Block];
            await d.FindComponent(vId)!.ReadAsync(0, back, Ct);
            Assert.True(back.AsSpan(0, Block).IndexOfAnyExcept((byte)0xA5) < 0, "block 0 was replaced");
            Assert.Equal(2, VersionOf(back.AsSpan(Block, Block), 1));
            Assert.Equal(3, VersionOf(back.AsSpan(4 * Block, Block), 4));
            Assert.Equal(-1, VersionOf(back.AsSpan(5 * Block, Block), 5));
            Assert.True(back.AsSpan(10 * Block, Block).IndexOfAnyExcept((byte)0xA5) < 0, "block 10 was replaced");
            await AssertVersionsAsync(d.FindComponent(wId)!, 0, 1, 1);
            Assert.Equal(0, d.ChecksumErrors);
            Assert.Equal(7 * Block, d.UsedBytes);
        }

        await AssertRecoveredAsync(reopened);

        // A crash during that open, after the replacements were written and before its checkpoint, leaves the old
        // state to recover again: the replacements must not have overwritten any block it still maps.
        foreach (var block in new[] { 0L, 10L })
        {
            Overwrite(beforeRecovery, reopened.PhysicalOffsetOf(reopened.FindComponent(vId)!, block)!.Value, Enumerable.Repeat((byte)0xA5, Block).ToArray());
        }

        await using (var interrupted = await StoreDisk.OpenAsync(beforeRecovery, Options(), Ct))
        {
            Assert.Equal(3, interrupted.RecoveryLostWrites);
            var back = new byte[Block];
            await interrupted.FindComponent(vId)!.ReadAsync(0, back, Ct);
            Assert.Equal(1, VersionOf(back, 0));
            Assert.Equal(0, interrupted.ChecksumErrors);
        }

        // The checkpoint that ended recovery holds the replacements: a crash right after the open keeps them.
        var second = _dir.File("crashed-again.img");
        await reopened.CopyRawToAsync(second, Ct);
        await using var again = await StoreDisk.OpenAsync(second, Options(), Ct);
        Assert.Equal(0, again.RecoveryLostWrites);
        await AssertRecoveredAsync(again);
    }

    [Fact]
    public async Task Bit_rot_is_an_error_never_data()
    {
        await using var disk = await StoreDisk.FormatAsync(_dir.File("d.img"), DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "v", 8L << 20, Ct);
        await c.WriteAsync(0, Blocks(0, 8, 1), WriteFlags.None, Ct);
        var at = disk.PhysicalOffsetOf(c, 5)!.Value + 1234;
        var one = new byte[1];
        RandomAccess.Read(disk.Handle, one, at);
        one[0] ^= 0x10;
        RandomAccess.Write(disk.Handle, one, at);

        var whole = new byte[8 * Block];
        var e = await Assert.ThrowsAsync<VolumeException>(async () => await c.ReadAsync(0, whole, Ct));
        Assert.Equal(VolumeError.ChecksumMismatch, e.Error);
        e = await Assert.ThrowsAsync<VolumeException>(async () => await c.ReadAsync((5 * Block) + 10, new byte[10], Ct));
        Assert.Equal(VolumeError.ChecksumMismatch, e.Error);
        Assert.Equal(2, disk.ChecksumErrors);
        Assert.Equal(2, c.ChecksumErrors);

        // A partial write into the bad block cannot read-modify-write it either.
        e = await Assert.ThrowsAsync<VolumeException>(async () => await c.WriteAsync((5 * Block) + 10, new byte[10], WriteFlags.None, Ct));
        Assert.Equal(VolumeError.ChecksumMismatch, e.Error);

        var good = new byte[5 * Block];
        await c.ReadAsync(0, good, Ct);
        Assert.Equal(Blocks(0, 5, 1), good);

        // Rewriting the whole block heals it.
        await c.WriteAsync(5 * Block, Blocks(5, 1, 2), WriteFlags.None, Ct);
        await c.ReadAsync(0, whole, Ct);
        Assert.Equal(2, VersionOf(whole.AsSpan(5 * Block, Block), 5));
    }

    [Fact]
    public async Task A_worst_case_fragmented_overcommitted_map_still_checkpoints_and_reopens()
    {
        // Every mapped block a run of its own, across a logical space larger than the disk: the checkpoint image is
        // then 16 bytes per block, the most it can ever be. Big enough that the slot's fixed headroom cannot hide it.
        var path = _dir.File("fragmented.img");
        var id = Guid.NewGuid();
        const long diskBytes = 1L << 30;
        var buffer = new byte[Block];
        int written;
        await using (var disk = await StoreDisk.FormatAsync(path, diskBytes, Options(4L << 20), Ct))
        {
            var capacityBlocks = disk.CapacityBytes / Block;
            var c = await disk.CreateComponentAsync(id, "sparse", 4 * diskBytes, Ct);
            written = (int)(capacityBlocks - disk.ReserveBlocks - 16);
            for (var i = 0; i < written; i++)
            {
                FillBlock(buffer, 2 * i, 1);
                await c.WriteAsync(2L * i * Block, buffer, WriteFlags.None, Ct);
            }

            await disk.CheckpointAsync(Ct);
        }

        await using (var disk = await StoreDisk.OpenAsync(path, Options(4L << 20), Ct))
        {
            var c = disk.FindComponent(id)!;
            Assert.Equal((long)written * Block, c.UsedBytes);
            foreach (var i in new[] { 0, written / 2, written - 1 })
            {
                await c.ReadAsync(2L * i * Block, buffer, Ct);
                Assert.Equal(1, VersionOf(buffer, 2 * i));
            }
        }
    }

    [Fact]
    public async Task Log_wraps_several_times_with_checkpoints_and_reopens_intact()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        const int blocks = 2048;
        var versions = new int[blocks];
        var trimmed = new bool[blocks];
        var logBytes = 4L << 20;
        await using (var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(logBytes), Ct))
        {
            var c = await disk.CreateComponentAsync(id, "v", blocks * (long)Block, Ct);
            var writers = Enumerable.Range(0, 8).Select(w => Task.Run(
                async () =>
                {
                    var rng = new Random(w);
                    var buffer = new byte[Block];
                    // Until the log wrapped 3.5 times and at least 3 checkpoints completed (they run in the background).
                    while (disk.LogHead < 3 * logBytes + (logBytes / 2) || disk.CheckpointsWritten < 3)
                    {
                        // Each writer owns the blocks congruent to its number, so the model needs no locking.
                        var block = (rng.Next(blocks / 8) * 8) + w;
                        var version = ++versions[block];
                        FillBlock(buffer, block, version);
                        if (rng.Next(20) == 0)
                        {
                            await c.TrimAsync(block * (long)Block, Block, WriteFlags.None, Ct);
                            trimmed[block] = true;
                        }
                        else
                        {
                            await c.WriteAsync(block * (long)Block, buffer, WriteFlags.None, Ct);
                            trimmed[block] = false;
                        }
                    }
                },
                Ct)).ToArray();
            await Task.WhenAll(writers);
            Assert.True(disk.CheckpointsWritten >= 3, $"only {disk.CheckpointsWritten} checkpoints");
            await VerifyAsync(c);
        }

        await using (var disk = await StoreDisk.OpenAsync(path, Options(logBytes), Ct))
        {
            await VerifyAsync(disk.FindComponent(id)!);
        }

        async Task VerifyAsync(StoreComponent c)
        {
            var all = new byte[blocks * Block];
            await c.ReadAsync(0, all, Ct);
            for (var b = 0; b < blocks; b++)
            {
                var expected = versions[b] == 0 || trimmed[b] ? -1 : versions[b];
                Assert.Equal(expected, VersionOf(all.AsSpan(b * Block, Block), b));
            }
        }
    }

    [Fact]
    public async Task Concurrent_writers_with_lost_unsynced_blocks_recover_old_or_new_never_a_mix()
    {
        var path = _dir.File("d.img");
        var id = Guid.NewGuid();
        const int blocks = 1024;
        const int writersCount = 8;
        var latest = new int[blocks];
        var durable = new int[blocks];
        await using var disk = await StoreDisk.FormatAsync(path, DiskSize, Options(), Ct);
        var c = await disk.CreateComponentAsync(id, "v", blocks * (long)Block, Ct);

        for (var round = 0; round < 3; round++)
        {
            var writers = Enumerable.Range(0, writersCount).Select(w => Task.Run(
                async () =>
                {
                    var rng = new Random((round * 100) + w);
                    for (var i = 0; i < 300; i++)
                    {
                        // Writer w owns blocks with block % writersCount == w; runs of up to 3 owned blocks, sometimes unaligned pieces.
                        var block = (rng.Next(blocks / writersCount) * writersCount) + w;
                        var version = latest[block] + 1;
                        var data = Blocks(block, 1, version);
                        if (round < 2 && rng.Next(4) == 0)
                        {
                            // Two sub-block writes that together replace the whole block (not in the last round: their
                            // intermediate state is a legitimate crash outcome that the version check cannot express).
                            var split = rng.Next(1, Block);
                            await c.WriteAsync(block * (long)Block, data.AsMemory(0, split), WriteFlags.None, Ct);
                            await c.WriteAsync((block * (long)Block) + split, data.AsMemory(split), WriteFlags.None, Ct);
                        }
                        else
                        {
                            // No FUA in the last round: its records must all stay unsynced for the loss below to be legitimate.
                            var fua = round < 2 && rng.Next(50) == 0;
                            await c.WriteAsync(block * (long)Block, data, fua ? WriteFlags.Fua : WriteFlags.None, Ct);
                        }

                        latest[block] = version;
                        var check = new byte[Block];
                        await c.ReadAsync(block * (long)Block, check, Ct);
                        Assert.Equal(version, VersionOf(check, block));
                    }
                },
                Ct)).ToArray();
            await Task.WhenAll(writers);
            if (round < 2)
            {
                await c.FlushAsync(Ct);
                Array.Copy(latest, durable, blocks);
            }
        }

        Assert.True(disk.FlushesCompleted > 0);

        // "Crash": take the file as written, then lose the data of a random half of the unsynced blocks.
        var rngLoss = new Random(42);
        var lose = new List<long>();
        for (var b = 0; b < blocks; b++)
        {
            if (latest[b] != durable[b] && rngLoss.Next(2) == 0)
            {
                lose.Add(disk.PhysicalOffsetOf(c, b)!.Value);
            }
        }

        var copy = _dir.File("crashed.img");
        await disk.CopyRawToAsync(copy, Ct);
        foreach (var offset in lose)
        {
            await Corrupt(copy, offset, Block, (int)offset);
        }

        await using var reopened = await StoreDisk.OpenAsync(copy, Options(), Ct);
        var r = reopened.FindComponent(id)!;
        var all = new byte[blocks * Block];
        await r.ReadAsync(0, all, Ct);
        Assert.Equal(0, reopened.ChecksumErrors);
        Assert.True(reopened.RecoveryRejectedBlocks >= lose.Count);
        for (var b = 0; b < blocks; b++)
        {
            var version = VersionOf(all.AsSpan(b * Block, Block), b);
            Assert.InRange(version, durable[b] == 0 ? -1 : durable[b], latest[b] == 0 ? -1 : latest[b]);
        }
    }
}
