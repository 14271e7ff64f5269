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
            using var document = JsonDocument.Parse(await host.RpcHttp.GetStringAsync("/internal/v1/resync"));
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
        await using var cluster = await TestCluster.StartAsync(
            4, hostArgs: ["--repair-delay", "4s", "--enable-fault-injection", "--heartbeat-timeout", "3s", "--orphan-grace", "3s"]);
        var coordinator = cluster[0];
        await coordinator.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("rb", 32 * MiB));
        var image = cluster.TempPath("rb.img");
        NbdClients.WriteRandomFile(image, 32 * MiB, seed: 21);
        await ClusterTests.WriteThroughAsync(coordinator, "rb", image);

        // 1. A disk of a replica fails I/O: its component is degraded and rebuilt on another host at once.
        var info = await coordinator.Api.GetVirtualDiskAsync("rb");
        var failing = info.Layout!.First(c => c.Role == "data" && c.HostName != coordinator.Name);
        var failingHost = cluster.Hosts.Single(h => h.Name == failing.HostName);
        using (var response = await failingHost.RpcHttp.PostAsync($"/internal/v1/test/disks/{failing.DiskId}/fail", null))
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

        // 3. The lost host comes back still holding its old copy, which nothing references any more: once the orphan
        //    grace has passed it deletes it, and nothing that is referenced.
        lostHost.Launch();
        await lostHost.WaitReadyAsync();
        await TestCluster.Eventually(
            async () =>
            {
                try
                {
                    await lostHost.RpcApi.GetComponentDigestAsync(lost.Id);
                    return false;
                }
                catch (ConvergeApiException e) when (e.Message.Contains("not on this host", StringComparison.Ordinal))
                {
                    return true;
                }
            },
            $"{lostHost.Name} to delete its orphaned copy {lost.Id}",
            TimeSpan.FromSeconds(60));
        // It did hold the copy (so the wait above was not vacuous) and said what it deleted. The console logger writes
        // from a queue, so the line can reach the file a moment after the deletion the API already shows.
        await TestCluster.Eventually(
            async () =>
            {
                using var log = new FileStream(lostHost.LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
                using var reader = new StreamReader(log);
                return (await reader.ReadToEndAsync()).Contains($"deleted orphaned component rb/{lost.Id}", StringComparison.Ordinal);
            },
            $"{lostHost.Name}'s log to say it deleted rb/{lost.Id}",
            TimeSpan.FromSeconds(10));

        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "rb");
        foreach (var host in cluster.Hosts)
        {
            await ClusterTests.CompareThroughAsync(host, "rb", image);
        }
    }
}

/// <summary>Maintenance with full data migration moves every component off the host while I/O goes on.</summary>
public sealed class MaintenanceTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Full_data_migration_evacuates_the_host_and_ensure_accessibility_refuses_what_it_cannot_keep()
    {
        await using var cluster = await TestCluster.StartAsync(4);
        var api = cluster[0].Api;
        await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("mm", 32 * MiB));
        var image = cluster.TempPath("mm.img");
        NbdClients.WriteRandomFile(image, 32 * MiB, seed: 41);
        await ClusterTests.WriteThroughAsync(cluster[0], "mm", image);

        var info = await api.GetVirtualDiskAsync("mm");
        var leaving = info.Layout!.First(c => c.Role == "data" && c.HostName != cluster[0].Name).HostName;
        await api.EnterMaintenanceAsync(leaving, "full-data-migration");
        await TestCluster.Eventually(
            async () => (await api.GetVirtualDiskAsync("mm")) is { Compliance: "compliant" } v && v.Layout!.All(c => c.HostName != leaving),
            $"every component of 'mm' to move off {leaving}", TimeSpan.FromSeconds(90));
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "mm");

        foreach (var host in cluster.Hosts)
        {
            await ClusterTests.CompareThroughAsync(host, "mm", image);
        }

        // With a replica away, ensure-accessibility on the host of the only other replica is refused with a reason.
        var now = await api.GetVirtualDiskAsync("mm");
        var lastCopy = now.Layout!.First(c => c.Role == "data").HostName;
        var other = now.Layout!.First(c => c.Role == "data" && c.HostName != lastCopy).HostName;
        api = cluster.Hosts.First(h => h.Name != other).Api;
        await cluster.Hosts.Single(h => h.Name == other).KillAsync();
        await TestCluster.Eventually(
            async () => (await api.GetVirtualDiskAsync("mm")).Layout!.Any(c => c.HostName == other && c.State != "active"),
            $"the components on {other} to be absent", TimeSpan.FromSeconds(30));
        var refused = await Assert.ThrowsAsync<ConvergeApiException>(() => api.EnterMaintenanceAsync(lastCopy, "ensure-accessibility"));
        Assert.Contains("inaccessible", refused.Message, StringComparison.Ordinal);
    }
}

/// <summary>The coordinating host dies mid-copy: another host takes over, reconciles, and the client carries on.</summary>
public sealed class CoordinatorFailoverTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Killing_the_coordinator_under_a_proxied_client_loses_nothing_and_the_replicas_agree()
    {
        await using var cluster = await TestCluster.StartAsync(3, hostArgs: ["--heartbeat-timeout", "3s"]);
        var coordinator = cluster[0];
        await coordinator.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("fo", 48 * MiB));

        // h1 takes the lease with a first write; fio then writes through h2, which proxies to h1. The write rate is
        // capped so the kill lands mid-run however fast the machine is (fio then reads back and verifies every block).
        (await NbdClients.QemuIoAsync(coordinator.NbdUri("fo"), ["write -P 1 0 4k"], TimeSpan.FromMinutes(1))).EnsureSuccess();
        Assert.Equal(coordinator.Name, await CoordinatorNameAsync(cluster));
        await using var fio = FioRun.Start(cluster[1].NbdUri("fo"), offset: 4 * MiB, size: 16 * MiB, seed: 31, writeIops: 600);
        await fio.WaitWrittenAsync(2 * MiB, TimeSpan.FromSeconds(60));
        Assert.False(fio.HasExited, "fio finished before the coordinator could be killed under it");
        await coordinator.KillAsync();
        await fio.FinishAsync(TimeSpan.FromMinutes(3)); // no error: requests stall while the lease moves, then carry on.

        var survivor = cluster[1];
        await TestCluster.Eventually(async () => await CoordinatorNameAsync(cluster, survivor) is { } name && name != coordinator.Name,
            "another host to coordinate 'fo'", TimeSpan.FromSeconds(30));
        var image = cluster.TempPath("fo.img");
        (await NbdClients.QemuImgAsync(["convert", "-f", "raw", "-O", "raw", cluster[2].NbdUri("fo"), image], TimeSpan.FromMinutes(2))).EnsureSuccess();

        // h1 returns: its replica (if it held one) is resynced, and every replica agrees.
        coordinator.Launch();
        await coordinator.WaitReadyAsync();
        await TestCluster.Eventually(
            async () => (await survivor.Api.GetVirtualDiskAsync("fo")).Layout!.All(c => c.State == "active"),
            "every component of 'fo' to be active again", TimeSpan.FromSeconds(60));
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "fo");
        foreach (var host in cluster.Hosts)
        {
            await ClusterTests.CompareThroughAsync(host, "fo", image);
        }
    }

    private static async Task<string?> CoordinatorNameAsync(TestCluster cluster, ClusterHost? via = null)
    {
        var info = await (via ?? cluster[0]).Api.GetVirtualDiskAsync("fo");
        return info.Coordinator is { } id ? (await (via ?? cluster[0]).Api.ListHostsAsync()).FirstOrDefault(h => h.Id == id || h.Name == id)?.Name : null;
    }
}

/// <summary>Bit rot in one replica is found (by reads or the scrubber) and rewritten from the other.</summary>
public sealed class BitRotTests
{
    private const long MiB = 1L << 20;
    private const int Block = 4096;
    private const byte Pattern = 0x5c;

    [Fact]
    public async Task A_flipped_block_in_one_replica_is_repaired_from_the_other_and_counted()
    {
        await using var cluster = await TestCluster.StartAsync(3, hostArgs: ["--scrub-rate", "16MiB"]);
        var coordinator = cluster[0];
        await coordinator.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("rot", 32 * MiB));
        var uri = coordinator.NbdUri("rot");
        (await NbdClients.QemuIoAsync(uri, ["write -P 0xa1 0 8M", $"write -P 0x{Pattern:x2} {8 * MiB} 64k", "flush"], TimeSpan.FromMinutes(1))).EnsureSuccess();

        var info = await coordinator.Api.GetVirtualDiskAsync("rot");
        var victim = cluster.Hosts.Single(h => h.Name == info.Layout!.First(c => c.Role == "data").HostName);
        var flipped = 0;
        foreach (var disk in Directory.GetFiles(victim.DataDir, "d*.img"))
        {
            var physical = DiskFiles.FindFilledBlock(disk, Pattern);
            if (physical < 0)
            {
                continue;
            }

            using var file = new FileStream(disk, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
            var buffer = new byte[Block];
            file.Position = physical;
            file.ReadExactly(buffer);
            buffer[100] ^= 0xff;
            file.Position = physical;
            file.Write(buffer);
            flipped++;
        }

        Assert.Equal(1, flipped);

        // Every read through any host returns the right bytes (never an error, never the bad data) ...
        foreach (var host in cluster.Hosts)
        {
            for (var i = 0; i < 3; i++)
            {
                (await NbdClients.QemuIoAsync(host.NbdUri("rot"), [$"read -P 0x{Pattern:x2} {8 * MiB} 64k"], TimeSpan.FromMinutes(1))).EnsureSuccess();
            }
        }

        // ... and the bad copy is rewritten (by a read that hit it, or by the scrubber): counted, and the replicas agree.
        await TestCluster.Eventually(async () => await RepairsAsync(cluster) >= 1, "the bad block to be repaired", TimeSpan.FromSeconds(60));
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "rot");
        Console.WriteLine($"repairs: {await RepairsAsync(cluster)}");
    }

    private static async Task<long> RepairsAsync(TestCluster cluster)
    {
        var total = 0L;
        foreach (var host in cluster.Hosts)
        {
            using var document = System.Text.Json.JsonDocument.Parse(await host.RpcHttp.GetStringAsync("/internal/v1/resync"));
            total += document.RootElement.GetProperty("repairs").GetInt64();
        }

        return total;
    }

}
