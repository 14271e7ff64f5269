using System.Globalization;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>
/// fio with <c>verify=crc32c</c> against an FTT=1 virtual disk on 3 hosts while hosts are killed (-9) and restarted
/// over and over — the first time the coordinator. fio connects to one host that is never killed (its nbd engine does
/// not reconnect; clients of a killed host must reconnect, which is documented), so it must see no error at all; each
/// round's verify must find nothing wrong, compliance must return after each resync and the replicas must agree.
/// Rounds: <c>CONVERGE_SOAK_ITERATIONS</c> (default 3). Prints the faults injected and survived and the bytes resynced.
/// </summary>
public sealed class SoakTests(ITestOutputHelper output)
{
    private const long MiB = FaultKit.MiB;
    private const long Size = 96 * MiB;
    private readonly FaultLog log = new(output);

    [Fact]
    public async Task Soak_fio_verify_survives_repeated_kill9_and_restart_including_the_coordinator()
    {
        var iterations = int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_SOAK_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 3;
        await using var cluster = await TestCluster.StartAsync(3);
        var info = await cluster[0].Api.CreateVirtualDiskAsync("soak", Size);

        // fio's host F is never killed. The first write goes through another host X so that X takes the lease and F
        // proxies to it: round 1 kills the coordinator.
        var client = cluster[0];
        var first = cluster[1];
        (await NbdClients.QemuIoAsync(first.NbdUri("soak"), ["write -P 0x11 0 1M"])).EnsureSuccess();
        var coordinator = await cluster.WaitCoordinatorAsync("soak", TimeSpan.FromSeconds(10));
        Assert.Equal(first.Name, coordinator.Name);
        log.Line($"soak: {iterations} rounds; fio through {client.Name}; layout {FaultKit.Describe(info)}");

        var resyncStart = await cluster.ResyncTotalsAsync();
        long verified = 0;
        var others = cluster.Hosts.Where(h => h != client).ToList();
        for (var round = 1; round <= iterations; round++)
        {
            // Each round's fio writes a fresh 32 MiB window with its own seed, then verifies it.
            var offset = (round - 1) % 3 * 32 * MiB;
            await using var fio = FioRun.Start(client.NbdUri("soak"), offset, 32 * MiB, seed: 100 + round, writeIops: 500);
            await fio.WaitWrittenAsync(2 * MiB, TimeSpan.FromSeconds(60));

            var lease = await cluster.CoordinatorAsync("soak", via: client);
            var victim = round == 1 ? coordinator : others[round % others.Count];
            var what = $"round {round}: kill -9 of {victim.Name}{(victim == lease ? " (the coordinator)" : string.Empty)} after fio wrote {fio.WrittenBytes / MiB} MiB";
            log.Inject(what);
            await victim.KillAsync();
            await cluster.WaitHostComponentsAsync("soak", victim, ["absent"], TimeSpan.FromSeconds(40), via: client);
            var before = fio.WrittenBytes;
            await fio.WaitWrittenAsync(before + (2 * MiB), TimeSpan.FromSeconds(60));
            log.Line($"round {round}: fio kept writing without {victim.Name} ({before / MiB} -> {fio.WrittenBytes / MiB} MiB); lease on {(await cluster.CoordinatorAsync("soak", via: client))?.Name}");

            await victim.RestartAsync();
            var compliant = await cluster.WaitCompliantAsync("soak", TimeSpan.FromSeconds(90), via: client);
            var summary = await fio.FinishAsync(TimeSpan.FromMinutes(3), () => cluster.LogTails());
            verified += summary.ReadBytes;
            await cluster.WaitCompliantAsync("soak", TimeSpan.FromSeconds(90), via: client);
            await cluster.AssertReplicasAgreeAsync("soak");
            var resync = await cluster.ResyncTotalsAsync();
            log.Survive(
                $"{what}: fio wrote {summary.WriteBytes / MiB} MiB and verified {summary.ReadBytes / MiB} MiB without an error " +
                $"(longest write {summary.MaxWriteLatencyMs:0} ms); compliant again ({FaultKit.Describe(compliant)}); replicas agree; " +
                $"resynced so far {(resync.BytesCopied - resyncStart.BytesCopied) / MiB} MiB");
        }

        var end = await cluster.ResyncTotalsAsync();
        var line = $"soak test: {log.Injected} faults injected, {log.Survived} survived, {verified / MiB} MiB verified by fio, " +
            $"{end.BytesCopied - resyncStart.BytesCopied} bytes resynced in {end.CopiesCompleted - resyncStart.CopiesCompleted} copies";
        log.Line(line);
        output.WriteLine(line);
        Assert.Equal(iterations, log.Survived);
    }
}
