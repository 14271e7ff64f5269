using System.Globalization;
using System.Text.Json;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// A replica's host dies under writes: the writes carry on without it (it is committed absent first), and when the
/// host returns only the blocks written meanwhile are copied back (delta resync), after which the replicas are
/// identical and the virtual disk compliant again.
/// </summary>
public sealed class ReplicaFailureTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Writes_survive_a_killed_replica_host_and_its_return_resyncs_only_the_changed_blocks()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var coordinator = cluster[0];
        var created = await coordinator.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("fail", 64 * MiB));
        Assert.Equal("compliant", created.Compliance);

        var image = cluster.TempPath("fail.img");
        NbdClients.WriteRandomFile(image, 64 * MiB, seed: 11);
        await ClusterTests.WriteThroughAsync(coordinator, "fail", image);

        // Kill a host that holds a data replica and is not the coordinator (h1 took the lease by writing).
        var info = await coordinator.Api.GetVirtualDiskAsync("fail");
        var victimName = info.Layout!.First(c => c.Role == "data" && c.HostName != coordinator.Name).HostName;
        var victim = cluster.Hosts.Single(h => h.Name == victimName);
        await victim.KillAsync();

        // Overwrite 4 MiB (1024 distinct 4 KiB blocks) at 16 MiB: no client error although a replica is gone.
        var changed = 4 * MiB;
        (await NbdClients.QemuIoAsync(coordinator.NbdUri("fail"), [$"write -P 0x5a {16 * MiB} {changed}"], TimeSpan.FromMinutes(1))).EnsureSuccess();
        await using (var file = new FileStream(image, FileMode.Open, FileAccess.Write))
        {
            file.Seek(16 * MiB, SeekOrigin.Begin);
            var bytes = new byte[changed];
            Array.Fill(bytes, (byte)0x5a);
            await file.WriteAsync(bytes);
        }

        var degraded = await coordinator.Api.GetVirtualDiskAsync("fail");
        Assert.Contains(degraded.Layout!, c => c.HostName == victimName && c.Role == "data" && c.State == "absent");
        Assert.NotEqual("compliant", degraded.Compliance);
        var copiedBefore = await BytesCopiedAsync(cluster);

        // The host returns: its replica is resynced by delta and every component is active again.
        victim.Launch();
        await victim.WaitReadyAsync();
        await TestCluster.Eventually(
            async () => (await coordinator.Api.GetVirtualDiskAsync("fail")).Layout!.All(c => c.State == "active"),
            "every component of 'fail' to be active again after the resync",
            TimeSpan.FromSeconds(60));

        var moved = await BytesCopiedAsync(cluster) - copiedBefore;
        Console.WriteLine($"delta resync moved {moved.ToString(CultureInfo.InvariantCulture)} bytes for {changed.ToString(CultureInfo.InvariantCulture)} bytes changed");
        Assert.True(moved >= changed, $"resync moved {moved} bytes, less than the {changed} bytes changed while the replica was away");
        Assert.True(moved <= changed * 11 / 10, $"resync moved {moved} bytes for {changed} changed: not a delta");

        Assert.Equal("compliant", (await coordinator.Api.GetVirtualDiskAsync("fail")).Compliance);
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "fail");
        foreach (var host in cluster.Hosts)
        {
            await ClusterTests.CompareThroughAsync(host, "fail", image);
        }
    }

    internal static async Task<long> BytesCopiedAsync(TestCluster cluster)
    {
        var total = 0L;
        foreach (var host in cluster.Hosts.Where(h => h.IsRunning))
        {
            using var document = JsonDocument.Parse(await host.Http.GetStringAsync(host.ApiUrl + "/internal/v1/resync"));
            total += document.RootElement.GetProperty("bytesCopied").GetInt64();
        }

        return total;
    }
}
