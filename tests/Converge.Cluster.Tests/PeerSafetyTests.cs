using System.Net;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// The peer port's own checks, whoever connects: a component that a layout names is never deleted, and component
/// I/O with a stale or made-up fence is refused. Data is compared before and after.
/// </summary>
public sealed class PeerSafetyTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task A_forged_delete_of_a_named_component_or_an_unfenced_write_changes_nothing()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var api = cluster[0].Api;
        await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("kept", 16 * MiB));
        var image = cluster.TempPath("kept.img");
        NbdClients.WriteRandomFile(image, 16 * MiB, seed: 17);
        await ClusterTests.WriteThroughAsync(cluster[0], "kept", image);
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "kept");

        var layout = await api.GetLayoutAsync("kept");
        foreach (var component in layout)
        {
            var host = cluster.Hosts.Single(h => h.Name == component.HostName);
            var id = Guid.ParseExact(component.Id, "N");
            await using var client = new PeerClient(new IPEndPoint(IPAddress.Loopback, host.PeerPort));

            var delete = await Assert.ThrowsAsync<VolumeException>(async () => await client.SendAsync(
                new PeerRequestHeader(PeerOp.DeleteComponent, PeerFlags.None, 0, id, 0, 0, 0, 0),
                ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None));
            Assert.Equal(VolumeError.ReadOnly, delete.Error);

            // A write with no fence (generation 0, epoch 0) is stale for every committed layout.
            var payload = new byte[4096];
            Array.Fill(payload, (byte)0x5a);
            var write = await Assert.ThrowsAsync<VolumeException>(async () => await client.SendAsync(
                new PeerRequestHeader(PeerOp.Write, PeerFlags.Fua, 0, id, 0, 0, 0, payload.Length),
                payload, Memory<byte>.Empty, CancellationToken.None));
            Assert.Equal(VolumeError.ReadOnly, write.Error);
        }

        Assert.Equal(layout.Select(c => c.Id), (await api.GetLayoutAsync("kept")).Select(c => c.Id));
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "kept");
        foreach (var host in cluster.Hosts)
        {
            await ClusterTests.CompareThroughAsync(host, "kept", image);
        }
    }
}
