using System.Diagnostics;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// Decommissioning a host and a disk, and rebalancing onto a new host: every component moves make-before-break, so a
/// virtual disk never has fewer active copies than before while client I/O goes on.
/// </summary>
public sealed class DecommissionTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Decommissioning_a_host_under_fio_keeps_every_copy_then_a_disk_empties_and_impossible_requests_are_refused()
    {
        // A modest copy rate, busy or idle, keeps each move running long enough to be seen, and fio's writes overlap it.
        await using var cluster = await TestCluster.StartAsync(4, hostArgs: ["--resync-bandwidth", "8MiB", "--resync-bandwidth-idle", "8MiB"]);
        var api = cluster[0].Api;
        var leaving = cluster[3];
        Assert.False((await api.GetClusterHostAsync(leaving.Name)).Voter);

        // With h1 in maintenance the virtual disk lands on h2, h3 and h4, so h4 surely holds one of its components.
        await api.EnterMaintenanceAsync("h1", "no-data-migration");
        await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("dc", 64 * MiB));
        await api.ExitMaintenanceAsync("h1");
        var image = cluster.TempPath("dc.img");
        NbdClients.WriteRandomFile(image, 64 * MiB, seed: 71);
        await ClusterTests.WriteThroughAsync(cluster[0], "dc", image);
        var before = await api.GetVirtualDiskAsync("dc");
        Assert.Contains(before.Layout!, c => c.HostName == leaving.Name);
        var copies = ActiveCopies(before);
        Assert.Equal(2, copies);

        // Watch the layout through h3 for the whole decommission: the active copies never drop below what they were.
        using var watching = new CancellationTokenSource();
        var watcher = WatchAsync(cluster[2].Api, "dc", watching.Token);

        // fio writes (then reads back and verifies) a region that was not written before, through h2 (not the host
        // that leaves); the write rate is capped so the moves run under it.
        await using var fio = FioRun.Start(cluster[1].NbdUri("dc"), offset: 32 * MiB, size: 24 * MiB, seed: 72, writeIops: 500);
        await fio.WaitWrittenAsync(1 * MiB, TimeSpan.FromSeconds(60));
        Assert.False(fio.HasExited, "fio finished before the decommission started");

        var started = await api.DecommissionHostAsync(leaving.Name);
        Assert.Equal("decommissioning", started.State);
        Assert.True(started.ComponentsLeft > 0);
        Assert.False(started.Done);

        await TestCluster.Eventually(async () => (await api.GetHostDecommissionAsync(leaving.Name)).Done,
            $"{leaving.Name} to be decommissioned", TimeSpan.FromSeconds(180));
        await fio.FinishAsync(TimeSpan.FromMinutes(3));
        await watching.CancelAsync();
        var (fewest, fewestSeen, sawMove) = await watcher;
        Assert.True(sawMove, "no move (a new copy beside the old one) was seen during the decommission");
        Assert.True(fewest >= copies, $"'dc' had only {fewest} active copies during the decommission (before: {copies}): {fewestSeen}");

        var host = await api.GetClusterHostAsync(leaving.Name);
        Assert.Equal("decommissioned", host.State);
        Assert.Equal(0, host.ComponentCount);
        var after = await api.GetVirtualDiskAsync("dc");
        Assert.Equal("compliant", after.Compliance);
        Assert.DoesNotContain(after.Layout!, c => c.HostName == leaving.Name || c.Replaces is not null);
        await TestCluster.Eventually(async () => (await leaving.Api.ListDisksAsync()).All(d => d.ComponentCount == 0),
            $"the old components' data to be deleted on {leaving.Name}", TimeSpan.FromSeconds(30));
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "dc");

        // The region fio did not touch still reads back as written before the move.
        var region = cluster.TempPath("dc-head.img");
        (await NbdClients.QemuImgAsync(["convert", "-f", "raw", "-O", "raw", cluster[2].NbdUri("dc"), region], TimeSpan.FromMinutes(2))).EnsureSuccess();
        Assert.True(File.ReadAllBytes(image).AsSpan(0, (int)(32 * MiB)).SequenceEqual(File.ReadAllBytes(region).AsSpan(0, (int)(32 * MiB))), "data written before the decommission changed");

        // Refusals change nothing: three hosts left cannot keep FTT=1's three fault domains without h3; unknown names.
        var impossible = await Assert.ThrowsAsync<ConvergeApiException>(() => api.DecommissionHostAsync("h3"));
        Assert.True(impossible.Status == 409, $"HTTP {impossible.Status}: {impossible.Detail}");
        Assert.Contains("nowhere to go", impossible.Detail, StringComparison.Ordinal);
        Assert.Equal("active", (await api.GetClusterHostAsync("h3")).State);
        var unknown = await Assert.ThrowsAsync<ConvergeApiException>(() => api.DecommissionHostAsync("nope"));
        Assert.Equal(404, unknown.Status);
        Assert.Contains("host 'nope' is not in the cluster", unknown.Detail, StringComparison.Ordinal);
        var unknownDisk = await Assert.ThrowsAsync<ConvergeApiException>(() => api.DecommissionDiskAsync("0123456789abcdef"));
        Assert.Equal(404, unknownDisk.Status);
        var cli = await NbdClients.ConvergeAsync(["--api", cluster[1].ApiUrl, "host", "decommission", "nope"]);
        Assert.Equal(1, cli.ExitCode);
        Assert.Contains("is not in the cluster", cli.Stderr, StringComparison.Ordinal);

        // A disk of h1 that holds a component of 'dc', decommissioned through the CLI: with every other fault domain
        // taken by the other replica and the witness, the component moves to h1's other disk.
        var onH1 = after.Layout!.First(c => c.HostName == "h1");
        var disk = onH1.DiskId;
        var decommissioned = await NbdClients.ConvergeAsync(["--api", cluster[1].ApiUrl, "disk", "decommission", disk, "--wait"], TimeSpan.FromMinutes(3));
        Assert.True(decommissioned.ExitCode == 0, decommissioned.ToString());
        Assert.Contains("removed", decommissioned.Stdout, StringComparison.Ordinal);
        var status = (await api.TryGetClusterAsync())!;
        Assert.Equal("removed", status.Disks.Single(d => d.Id == disk).State);
        var moved = await api.GetVirtualDiskAsync("dc");
        Assert.Equal("compliant", moved.Compliance);
        Assert.DoesNotContain(moved.Layout!, c => c.DiskId == disk);
        Assert.Contains(moved.Layout!, c => c.HostName == "h1" && c.Role == onH1.Role);
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "dc");
        await ClusterTests.CompareThroughAsync(cluster[0], "dc", region);
    }

    [Fact]
    public async Task Rebalance_moves_components_onto_a_new_host_and_the_replicas_stay_identical()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var api = cluster[0].Api;
        var images = new Dictionary<string, string>();
        foreach (var name in new[] { "rb1", "rb2", "rb3" })
        {
            await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create(name, 48 * MiB));
            var image = cluster.TempPath(name + ".img");
            NbdClients.WriteRandomFile(image, 48 * MiB, seed: name.GetHashCode(StringComparison.Ordinal));
            await ClusterTests.WriteThroughAsync(cluster[0], name, image);
            images[name] = image;
        }

        var added = await cluster.AddHostAsync("512MiB");
        Assert.DoesNotContain((await api.ListVirtualDisksAsync()).SelectMany(v => v.Layout!), c => c.HostName == added.Name);

        // A dry run plans moves onto the new host and changes nothing.
        var plan = await api.RebalanceAsync(dryRun: true);
        Assert.Equal("unbalanced", plan.State);
        Assert.NotEmpty(plan.Moves);
        Assert.Equal(added.Name, plan.Moves[0].ToHost);
        Assert.Equal(0, plan.MovesInFlight);
        Assert.NotEqual("running", (await api.GetRebalanceAsync()).State);
        Assert.DoesNotContain((await api.ListVirtualDisksAsync()).SelectMany(v => v.Layout!), c => c.Replaces is not null);

        var cli = await NbdClients.ConvergeAsync(["--api", cluster[1].ApiUrl, "cluster", "rebalance", "--wait"], TimeSpan.FromMinutes(4));
        Assert.True(cli.ExitCode == 0, cli.ToString());
        var done = await api.GetRebalanceAsync();
        Assert.NotEqual("running", done.State);
        Assert.Equal(0, done.MovesInFlight);
        Assert.True(done.SpreadPercent < plan.SpreadPercent, $"spread {done.SpreadPercent} points after the rebalance, {plan.SpreadPercent} before");

        var vdisks = await api.ListVirtualDisksAsync();
        Assert.Contains(vdisks.SelectMany(v => v.Layout!), c => c.HostName == added.Name && c.Role == "data");
        foreach (var vdisk in vdisks)
        {
            Assert.Equal("compliant", vdisk.Compliance);
            Assert.All(vdisk.Layout!, c => Assert.Null(c.Replaces));
            await ClusterTests.AssertReplicasIdenticalAsync(cluster, vdisk.Name);
            await ClusterTests.CompareThroughAsync(added, vdisk.Name, images[vdisk.Name]);
        }
    }

    /// <summary>Active data components that hold their replica's range (a move's new copy does not count until it completes).</summary>
    private static int ActiveCopies(VirtualDiskInfo info) =>
        info.Layout!.Count(c => c.Role == "data" && c.Replaces is null && c.State == "active");

    /// <summary>
    /// Polls the layout until cancelled: the fewest active copies seen (and the layout that had them, so a failure says
    /// which component was not active and why), and whether a move was seen under way.
    /// </summary>
    private static async Task<(int Fewest, string FewestSeen, bool SawMove)> WatchAsync(ConvergeApiClient api, string vdisk, CancellationToken cancellationToken)
    {
        var fewest = int.MaxValue;
        var fewestSeen = string.Empty;
        var sawMove = false;
        var clock = Stopwatch.StartNew();
        while (!cancellationToken.IsCancellationRequested && clock.Elapsed < TimeSpan.FromMinutes(10))
        {
            try
            {
                var info = await api.GetVirtualDiskAsync(vdisk, cancellationToken);
                var active = ActiveCopies(info);
                if (active < fewest)
                {
                    fewest = active;
                    fewestSeen = $"at {clock.Elapsed.TotalSeconds:0.0} s, generation {info.Generation}: " + string.Join("; ", info.Layout!.Select(c =>
                        $"{c.Role} {c.Id} on {c.HostName} {c.State}" + (c.Replaces is null ? string.Empty : $" (replacing {c.Replaces})")));
                }

                sawMove |= info.Layout!.Any(c => c.Replaces is not null);
                await Task.Delay(50, cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or TaskCanceledException)
            {
                // A slow answer is no evidence either way; ask again.
            }
        }

        return (fewest, fewestSeen, sawMove);
    }
}
