using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// The peer port: a client without a cluster certificate gets nothing; and its own checks, whoever connects (here a
/// client with a real host's certificate): a component that a layout names is never deleted, and component I/O with
/// a stale or made-up fence is refused. Data is compared before and after.
/// </summary>
public sealed class PeerSafetyTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Peer_port_refuses_clients_without_a_certificate_and_a_certified_forged_delete_or_unfenced_write_changes_nothing()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var api = cluster[0].Api;
        await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("kept", 16 * MiB));
        var image = cluster.TempPath("kept.img");
        NbdClients.WriteRandomFile(image, 16 * MiB, seed: 17);
        await ClusterTests.WriteThroughAsync(cluster[0], "kept", image);
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "kept");

        var layout = await api.GetLayoutAsync("kept");
        var tlsDirectory = Path.Combine(cluster[0].DataDir, "tls");
        using var certificate = X509Certificate2.CreateFromPemFile(Path.Combine(tlsDirectory, "host.crt"), Path.Combine(tlsDirectory, "host.key"));
        var tls = new SslClientAuthenticationOptions
        {
            TargetHost = "converge-peer",
            ClientCertificates = [certificate],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        };
        foreach (var component in layout)
        {
            var host = cluster.Hosts.Single(h => h.Name == component.HostName);
            var id = Guid.ParseExact(component.Id, "N");
            var endPoint = new IPEndPoint(IPAddress.Loopback, host.PeerPort);

            // Without a certificate: refused before any request is read (a delete would otherwise be its first).
            await using (var anonymous = new PeerClient(endPoint, TimeSpan.FromSeconds(5)))
            {
                var refused = await Assert.ThrowsAsync<VolumeException>(async () => await anonymous.SendAsync(
                    new PeerRequestHeader(PeerOp.DeleteComponent, PeerFlags.None, 0, id, 0, 0, 0, 0),
                    ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None));
                Assert.Equal(VolumeError.Unavailable, refused.Error);
            }

            await using var client = new PeerClient(endPoint, TimeSpan.FromSeconds(5), tls);

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
