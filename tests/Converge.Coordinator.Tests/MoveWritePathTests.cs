using Converge.Common;
using Converge.Coordinator.Tracking;
using Converge.Placement;

namespace Converge.Coordinator.Tests;

/// <summary>The I/O path while a component is moved make-before-break: the new copy is written, never read.</summary>
public class MoveWritePathTests
{
    private const int ObjectSize = 1 << 20;

    [Fact]
    public async Task During_a_move_writes_reach_the_old_and_the_new_copy_reads_never_come_from_the_new_one_and_a_copy_fills_it()
    {
        var r0 = Data(0, "h1");
        var r1 = Data(1, "h2");
        var witness = new ComponentPlacement(Guid.NewGuid(), ComponentRole.Witness, -1, -1, 0, 0, "h3", "h3", "d3", 1, 0);
        var incoming = r0 with { ComponentId = Guid.NewGuid(), HostId = "h4", FaultDomain = "h4", DiskId = "d4", Votes = 0, Replaces = r0.ComponentId };
        var layout = new ObjectLayout(Guid.NewGuid(), ObjectSize, 2, 1, 1 << 20, ObjectSize, [r0, r1, witness, incoming]);
        var stores = new[] { r0, r1, incoming }.ToDictionary(c => c.ComponentId, c => new MemoryReplica(c.ComponentId, ObjectSize));

        // The new copy starts with garbage: a read served from it would show.
        Array.Fill(stores[incoming.ComponentId].Bytes, (byte)0xEE);
        var volume = new ReplicatedVolume(
            "v", ObjectSize, 2, new StripeMap(layout), stores.ToDictionary(p => p.Key, p => (IReplicaComponent)p.Value),
            new HashSet<Guid> { r0.ComponentId, r1.ComponentId, witness.ComponentId }, new WriteIntents(), new RangeLock());

        var data = new byte[8192];
        Array.Fill(data, (byte)0x5A);
        await volume.WriteAsync(4096, data, WriteFlags.None, CancellationToken.None);
        Assert.All(stores.Values, s => Assert.True(s.Bytes.AsSpan(4096, 8192).SequenceEqual(data), $"component {s.ComponentId} missed the write"));

        var expected = new byte[16384];
        data.CopyTo(expected, 4096);
        for (var i = 0; i < 8; i++)
        {
            var read = new byte[16384];
            await volume.ReadAsync(0, read, CancellationToken.None);
            Assert.Equal(expected, read);
        }

        Assert.Equal(0, stores[incoming.ComponentId].Reads);

        // The full copy (rebuild/move machinery) fills the new copy from an active replica.
        await volume.CopyAsync(0, 0, ObjectSize, [incoming.ComponentId], new byte[ObjectSize], CancellationToken.None);
        Assert.Equal(stores[r0.ComponentId].Bytes, stores[incoming.ComponentId].Bytes);
        Assert.Equal(0, stores[incoming.ComponentId].Reads);
        var copiedCrcs = new uint[ObjectSize / 4096];
        Checksums.Crc32CBlocks(stores[r0.ComponentId].Bytes, copiedCrcs);
        Assert.Equal(copiedCrcs, stores[incoming.ComponentId].LastBlockCrcs);   // checksummed once, handed to the target

        // With the old component gone the object is still complete (replica 1) — and the new copy does not count as a
        // copy of replica 0 until the move completes.
        Assert.True(layout.IsAccessible(c => c.ComponentId != r0.ComponentId));
        Assert.False(layout.IsAccessible(c => c.ComponentId != r0.ComponentId && c.ComponentId != r1.ComponentId));
    }

    [Fact]
    public async Task A_write_is_issued_to_remote_replicas_before_the_local_one()
    {
        // Replica 0 is local and comes first in the layout; the coordinator must still start the remote write first, so
        // the local page-cache copy (which completes inside its call) does not hold back the send.
        var r0 = Data(0, "h1");
        var r1 = Data(1, "h2");
        var witness = new ComponentPlacement(Guid.NewGuid(), ComponentRole.Witness, -1, -1, 0, 0, "h3", "h3", "d3", 1, 0);
        var layout = new ObjectLayout(Guid.NewGuid(), ObjectSize, 2, 1, 1 << 20, ObjectSize, [r0, r1, witness]);
        var order = new System.Collections.Concurrent.ConcurrentQueue<Guid>();
        var local = new MemoryReplica(r0.ComponentId, ObjectSize, isLocal: true, writeOrder: order);
        var remote = new MemoryReplica(r1.ComponentId, ObjectSize, yields: true, isLocal: false, writeOrder: order);
        var volume = new ReplicatedVolume(
            "v", ObjectSize, 2, new StripeMap(layout),
            new Dictionary<Guid, IReplicaComponent> { [r0.ComponentId] = local, [r1.ComponentId] = remote },
            new HashSet<Guid> { r0.ComponentId, r1.ComponentId, witness.ComponentId }, new WriteIntents(), new RangeLock());

        var data = new byte[8192];
        Array.Fill(data, (byte)0x3C);
        await volume.WriteAsync(4096, data, WriteFlags.None, CancellationToken.None);

        Assert.Equal([r1.ComponentId, r0.ComponentId], order.ToArray());
        Assert.True(local.Bytes.AsSpan(4096, 8192).SequenceEqual(data));
        Assert.True(remote.Bytes.AsSpan(4096, 8192).SequenceEqual(data));
    }

    [Fact]
    public async Task A_write_of_whole_blocks_is_checksummed_once_and_every_replica_gets_the_same_block_crcs()
    {
        var r0 = Data(0, "h1");
        var r1 = Data(1, "h2");
        var witness = new ComponentPlacement(Guid.NewGuid(), ComponentRole.Witness, -1, -1, 0, 0, "h3", "h3", "d3", 1, 0);
        var layout = new ObjectLayout(Guid.NewGuid(), ObjectSize, 2, 1, 1 << 20, ObjectSize, [r0, r1, witness]);
        var local = new MemoryReplica(r0.ComponentId, ObjectSize, isLocal: true);
        var remote = new MemoryReplica(r1.ComponentId, ObjectSize, isLocal: false);
        var volume = new ReplicatedVolume(
            "v", ObjectSize, 2, new StripeMap(layout),
            new Dictionary<Guid, IReplicaComponent> { [r0.ComponentId] = local, [r1.ComponentId] = remote },
            new HashSet<Guid> { r0.ComponentId, r1.ComponentId, witness.ComponentId }, new WriteIntents(), new RangeLock());

        var data = new byte[3 * 4096];
        new Random(11).NextBytes(data);
        await volume.WriteAsync(8192, data, WriteFlags.None, CancellationToken.None);
        var expected = new uint[3];
        Checksums.Crc32CBlocks(data, expected);
        Assert.Equal(expected, local.LastBlockCrcs);
        Assert.Equal(expected, remote.LastBlockCrcs);

        // A write that is not whole blocks goes without: each store checksums the blocks it rebuilds itself.
        await volume.WriteAsync(512, data.AsMemory(0, 1024), WriteFlags.None, CancellationToken.None);
        Assert.Empty(local.LastBlockCrcs);
        Assert.Empty(remote.LastBlockCrcs);
        Assert.True(remote.Bytes.AsSpan(512, 1024).SequenceEqual(data.AsSpan(0, 1024)));
    }

    private static ComponentPlacement Data(int replica, string host) =>
        new(Guid.NewGuid(), ComponentRole.Data, replica, 0, 0, ObjectSize, host, host, "d-" + host, 1, 0);
}
