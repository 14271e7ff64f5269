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

/// <summary>Components that will not come back are rebuilt elsewhere from the surviving replica.</summary>
public sealed class RebuildTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task A_failed_disk_is_rebuilt_at_once_and_a_lost_host_after_the_repair_delay()
    {
        await using var cluster = await TestCluster.StartAsync(4, hostArgs: ["--repair-delay", "4s", "--enable-fault-injection", "--heartbeat-timeout", "3s"]);
        var coordinator = cluster[0];
        await coordinator.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("rb", 32 * MiB));
        var image = cluster.TempPath("rb.img");
        NbdClients.WriteRandomFile(image, 32 * MiB, seed: 21);
        await ClusterTests.WriteThroughAsync(coordinator, "rb", image);

        // 1. A disk of a replica fails I/O: its component is degraded and rebuilt on another host at once.
        var info = await coordinator.Api.GetVirtualDiskAsync("rb");
        var failing = info.Layout!.First(c => c.Role == "data" && c.HostName != coordinator.Name);
        var failingHost = cluster.Hosts.Single(h => h.Name == failing.HostName);
        using (var response = await failingHost.Http.PostAsync($"{failingHost.ApiUrl}/internal/v1/test/disks/{failing.DiskId}/fail", null))
        {
            Assert.True(response.IsSuccessStatusCode, await response.Content.ReadAsStringAsync());
        }

        // Reads and writes carry on meanwhile.
        await ClusterTests.CompareThroughAsync(cluster[1], "rb", image);
        await TestCluster.Eventually(
            async () => (await coordinator.Api.GetVirtualDiskAsync("rb")) is { Compliance: "compliant" } v && v.Layout!.All(c => c.Id != failing.Id),
            "the component on the failed disk to be replaced and the virtual disk compliant again",
            TimeSpan.FromSeconds(90));
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "rb");

        // 2. A host holding a replica dies for good: after the repair delay its component is rebuilt elsewhere.
        info = await coordinator.Api.GetVirtualDiskAsync("rb");
        var lost = info.Layout!.First(c => c.Role == "data" && c.HostName != coordinator.Name);
        var lostHost = cluster.Hosts.Single(h => h.Name == lost.HostName);
        await lostHost.KillAsync();
        await TestCluster.Eventually(
            async () => (await coordinator.Api.GetVirtualDiskAsync("rb")) is { Compliance: "compliant" } v && v.Layout!.All(c => c.HostName != lostHost.Name),
            $"the components on {lostHost.Name} to be rebuilt on the other hosts",
            TimeSpan.FromSeconds(120));
        foreach (var host in cluster.Hosts.Where(h => h.IsRunning))
        {
            await ClusterTests.CompareThroughAsync(host, "rb", image);
        }

        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "rb");
    }
}
