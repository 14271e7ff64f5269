using Converge.Common;
using Converge.Coordinator.Tracking;
using Converge.Placement;

namespace Converge.Coordinator.Tests;

/// <summary>
/// Client writes during a rebuild: a write wholly inside a range the copy has not reached skips the target (the copy
/// carries it later); every other write reaches it, and the target ends up equal to its source.
/// </summary>
public class CopyCursorTests
{
    private const int ObjectSize = 4 << 20;
    private const int Block = 4096;
    private const int Group = 8 * Block;

    [Fact]
    public void A_write_is_carried_only_when_wholly_inside_a_range_the_copy_has_not_reached()
    {
        var copies = new CopyCursors();
        var target = Guid.NewGuid();
        using var cursor = copies.Begin(target, [new ChangedRange(0, 1 << 20), new ChangedRange(2 << 20, 1 << 20)]);
        Assert.NotNull(cursor);
        Assert.False(copies.IsEmpty);

        Assert.True(copies.TryCarry(target, 0, Block));
        Assert.True(copies.TryCarry(target, (2 << 20) + Block, Block));
        Assert.False(copies.TryCarry(target, 1 << 20, Block), "a gap between ranges is not copied: writes there must reach the target");
        Assert.False(copies.TryCarry(target, (1 << 20) - Block, 2 * Block), "a write over a range's end must reach the target");
        Assert.False(copies.TryCarry(target, (3 << 20) - Block, 2 * Block), "a write past the last range must reach the target");
        Assert.False(copies.TryCarry(Guid.NewGuid(), 0, Block), "another component has no copy");

        cursor.Advance(256 << 10);
        Assert.False(copies.TryCarry(target, 0, Block), "behind the cursor: already copied");
        Assert.False(copies.TryCarry(target, (256 << 10) - Block, 2 * Block), "straddling the cursor");
        Assert.True(copies.TryCarry(target, 256 << 10, Block));

        // Advancing never goes back (pieces in flight finish out of order).
        cursor.Advance(128 << 10);
        Assert.False(copies.TryCarry(target, 128 << 10, Block));

        Assert.Equal(3, cursor.Carried);
        Assert.Null(copies.Begin(target, [new ChangedRange(0, Block)]));
        cursor.Dispose();
        Assert.True(copies.IsEmpty);
        Assert.False(copies.TryCarry(target, 3 << 20, Block));
        Assert.Throws<ArgumentException>(() => copies.Begin(target, [new ChangedRange(Block, Block), new ChangedRange(0, Block)]));
    }

    [Fact]
    public async Task Writes_ahead_of_a_rebuild_skip_its_target_writes_behind_reach_it_and_the_copy_carries_the_rest()
    {
        var (volume, source, target, copies) = Rebuilding(yields: false);
        var ranges = new List<ChangedRange> { new(0, 1 << 20), new(2 << 20, 2 << 20) };
        using var cursor = copies.Begin(target.ComponentId, ranges)!;

        await volume.CopyAsync(0, 0, 512 << 10, [target.ComponentId], new byte[512 << 10], CancellationToken.None, cursor);
        var before = target.Writes;

        await volume.WriteAsync(Block, Fill(Block, 1), WriteFlags.None, CancellationToken.None);
        Assert.Equal(before + 1, target.Writes);
        await volume.WriteAsync(600 << 10, Fill(Block, 2), WriteFlags.None, CancellationToken.None);
        Assert.Equal(before + 1, target.Writes);
        Assert.True(target.Bytes.AsSpan(600 << 10, Block).IndexOfAnyExcept((byte)0xEE) < 0, "a write ahead of the copy reached the target");
        Assert.Equal(1, cursor.Carried);
        await volume.WriteAsync((1 << 20) + Block, Fill(Block, 3), WriteFlags.None, CancellationToken.None);
        Assert.Equal(before + 2, target.Writes);
        await volume.WriteAsync((2 << 20) - Block, Fill(2 * Block, 4), WriteFlags.None, CancellationToken.None);
        Assert.Equal(before + 3, target.Writes);

        // A readable component is never skipped, whatever is registered for it.
        using (copies.Begin(source.ComponentId, [new ChangedRange(0, ObjectSize)]))
        {
            var written = source.Writes;
            await volume.WriteAsync(3 << 20, Fill(Block, 5), WriteFlags.None, CancellationToken.None);
            Assert.Equal(written + 1, source.Writes);
        }

        await CopyAllAsync(volume, target.ComponentId, ranges, cursor, chunk: 256 << 10, depth: 1, skip: 512 << 10);
        AssertSame(source, target, ranges, written: [new((1 << 20) + Block, Block)]);
    }

    [Fact]
    public async Task Random_writes_racing_a_pipelined_copy_leave_the_target_equal_to_its_source()
    {
        for (var round = 0; round < 5; round++)
        {
            var (volume, source, target, copies) = Rebuilding(yields: true);
            var ranges = new List<ChangedRange> { new(0, 3 << 20), new((3 << 20) + (256 << 10), 512 << 10) };
            using var cursor = copies.Begin(target.ComponentId, ranges)!;
            using var done = new CancellationTokenSource();
            var writers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
            {
                var random = new Random(round * 100 + w);
                var data = new byte[2 * Block];
                while (!done.IsCancellationRequested)
                {
                    random.NextBytes(data);
                    // Each writer has its own 32 KiB groups: overlapping writes in flight together have no order,
                    // so two replicas may apply them differently (NBD leaves that undefined).
                    var length = random.Next(2) == 0 ? Block : 2 * Block;
                    var group = (random.Next(ObjectSize / Group / 8) * 8) + w;
                    var offset = ((long)group * Group) + (random.Next((Group / Block) - 1) * Block);
                    await volume.WriteAsync(offset, data.AsMemory(0, length), WriteFlags.None, CancellationToken.None);
                }
            })).ToArray();

            await CopyAllAsync(volume, target.ComponentId, ranges, cursor, chunk: 64 << 10, depth: 4, skip: 0);
            await done.CancelAsync();
            await Task.WhenAll(writers);

            // Outside the copied ranges only client writes reached the target; inside them it must equal the source.
            AssertSame(source, target, ranges, written: []);
        }
    }

    /// <summary>An FTT=1 object whose replica 1 is being rebuilt: the old one is gone, the new one is not readable yet.</summary>
    private static (ReplicatedVolume Volume, MemoryReplica Source, MemoryReplica Target, CopyCursors Copies) Rebuilding(bool yields)
    {
        var r0 = Data(0, "h1");
        var r1 = Data(1, "h4");
        var witness = new ComponentPlacement(Guid.NewGuid(), ComponentRole.Witness, -1, -1, 0, 0, "h3", "h3", "d3", 1, 0);
        var layout = new ObjectLayout(Guid.NewGuid(), ObjectSize, 2, 1, 1 << 20, ObjectSize, [r0, r1, witness]);
        var source = new MemoryReplica(r0.ComponentId, ObjectSize, yields);
        var target = new MemoryReplica(r1.ComponentId, ObjectSize, yields);
        new Random(7).NextBytes(source.Bytes);
        Array.Fill(target.Bytes, (byte)0xEE);
        var copies = new CopyCursors();
        var volume = new ReplicatedVolume(
            "v", ObjectSize, 2, new StripeMap(layout),
            new Dictionary<Guid, IReplicaComponent> { [r0.ComponentId] = source, [r1.ComponentId] = target },
            new HashSet<Guid> { r0.ComponentId, witness.ComponentId }, new WriteIntents(), new RangeLock(), copies: copies);
        return (volume, source, target, copies);
    }

    /// <summary>Copies <paramref name="ranges"/> from <paramref name="skip"/> on, as the coordinator's resync does.</summary>
    private static async Task CopyAllAsync(
        ReplicatedVolume volume, Guid target, List<ChangedRange> ranges, CopyCursors.Cursor cursor, int chunk, int depth, long skip)
    {
        var inFlight = new Queue<Task>();
        foreach (var range in ranges)
        {
            for (var at = Math.Max(range.Offset, skip); at < range.End; at += chunk)
            {
                if (inFlight.Count == depth)
                {
                    await inFlight.Dequeue();
                }

                var length = (int)Math.Min(chunk, range.End - at);
                inFlight.Enqueue(volume.CopyAsync(0, at, length, [target], new byte[length], CancellationToken.None, cursor));
            }
        }

        await Task.WhenAll(inFlight);
    }

    private static void AssertSame(MemoryReplica source, MemoryReplica target, List<ChangedRange> ranges, List<ChangedRange> written)
    {
        foreach (var range in ranges.Concat(written))
        {
            var at = range.Offset;
            var mismatch = source.Bytes.AsSpan((int)at, (int)range.Length).CommonPrefixLength(target.Bytes.AsSpan((int)at, (int)range.Length));
            Assert.True(mismatch == range.Length, $"target differs from its source at offset {at + mismatch}");
        }
    }

    private static byte[] Fill(int length, byte value) => Enumerable.Repeat(value, length).ToArray();

    private static ComponentPlacement Data(int replica, string host) =>
        new(Guid.NewGuid(), ComponentRole.Data, replica, 0, 0, ObjectSize, host, host, "d-" + host, 1, 0);
}
