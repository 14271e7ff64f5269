using System.Globalization;
using System.Text.RegularExpressions;
using Converge.Management.Contracts;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>
/// A rebuild that runs while a client writes: writes behind the copy reach the new component, writes ahead of it are
/// left to the copy (docs/failures.md, "Client writes ahead of the copy skip its target"). Whatever went where, fio's
/// verify must pass and the replicas must be identical once the rebuild is done.
/// </summary>
public sealed partial class RebuildUnderWritesTests(ITestOutputHelper output)
{
    private const long MiB = 1L << 20;
    private const long Size = 48 * MiB;

    [Fact]
    public async Task A_rebuild_under_fio_writes_leaves_identical_replicas_and_fio_verifies()
    {
        // A slow copy (4 MiB/s: 12 s for the 48 MiB) so that fio's writes land ahead of it, behind it and on it.
        await using var cluster = await TestCluster.StartAsync(
            4, hostArgs: ["--repair-delay", "2s", "--heartbeat-timeout", "3s", "--resync-bandwidth", "4MiB", "--resync-bandwidth-idle", "4MiB"]);
        var coordinator = cluster[0];
        await coordinator.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("rbw", Size));
        var image = cluster.TempPath("rbw.img");
        NbdClients.WriteRandomFile(image, Size, seed: 31);
        await ClusterTests.WriteThroughAsync(coordinator, "rbw", image);

        var info = await coordinator.Api.GetVirtualDiskAsync("rbw");
        var lost = info.Layout!.First(c => c.Role == "data" && c.HostName != coordinator.Name);
        var lostHost = cluster.Hosts.Single(h => h.Name == lost.HostName);

        // 400 writes/s for the whole 48 MiB (each block once, about 30 s), then fio reads everything back and verifies.
        await using var fio = FioRun.Start(coordinator.NbdUri("rbw"), offset: 0, size: Size, seed: 32, writeIops: 400);
        await fio.WaitWrittenAsync(MiB, TimeSpan.FromSeconds(60));
        await lostHost.KillAsync();
        await TestCluster.Eventually(
            async () => (await coordinator.Api.GetVirtualDiskAsync("rbw")) is { Compliance: "compliant" } v && v.Layout!.All(c => c.HostName != lostHost.Name),
            $"the component on {lostHost.Name} to be rebuilt elsewhere",
            TimeSpan.FromSeconds(120));
        var written = fio.WrittenBytes;
        Assert.False(fio.HasExited, "fio finished before the rebuild did: the rebuild ran without client writes");

        var summary = await fio.FinishAsync(TimeSpan.FromMinutes(3), () => cluster.LogTails());
        await ClusterTests.AssertReplicasIdenticalAsync(cluster, "rbw");

        // The rebuild did leave writes to the copy (else this test proves nothing about that path).
        string log;
        using (var stream = new FileStream(coordinator.LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        using (var reader = new StreamReader(stream))
        {
            log = await reader.ReadToEndAsync();
        }

        var finished = CopyFinished().Match(log);
        Assert.True(finished.Success, "no finished rebuild in the coordinator's log");
        var carried = long.Parse(finished.Groups["carried"].Value, CultureInfo.InvariantCulture);
        output.WriteLine(
            $"rebuild under fio: {finished.Groups["bytes"].Value} bytes copied, {carried} client writes left to the copy; fio wrote " +
            $"{written / MiB} MiB by the end of the rebuild, {summary.WriteBytes / MiB} MiB in all, verified {summary.ReadBytes / MiB} MiB");
        Assert.True(carried > 0, "no client write was left to the copy");

        // fio kept the coordinator busy the whole time, so the copy ran at the contended rate (ResyncPacer's wiring).
        Assert.True(long.Parse(finished.Groups["paced"].Value, CultureInfo.InvariantCulture) > 0, "the copy was not paced for a busy client");
    }

    [GeneratedRegex(@"rebuild of component \w+ finished: (?<bytes>\d+) bytes in [\d.]+ s \((?<paced>\d+) of them paced for busy clients; (?<carried>\d+) client writes left to the copy\)")]
    private static partial Regex CopyFinished();
}
