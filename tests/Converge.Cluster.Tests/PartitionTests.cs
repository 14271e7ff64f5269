using System.Diagnostics;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>
/// A real network partition: h3 runs in a network namespace of the test's own and reaches h1 and h2 only through a
/// veth pair, which is cut. The cut-off host (a minority of the votes) must refuse writes through its NBD port — a
/// write through it fails or never completes, it is never acknowledged — while the majority keeps serving; once healed,
/// every host reads what the majority wrote and the replicas agree.
/// </summary>
public sealed class PartitionTests(ITestOutputHelper output)
{
    private const long MiB = FaultKit.MiB;
    private readonly FaultLog log = new(output);

    [Fact]
    public async Task Partition_the_cut_off_coordinator_refuses_writes_and_data_is_consistent_after_healing()
    {
        await using var net = await NetworkPartition.CreateAsync();
        await using var cluster = await TestCluster.StartAsync(3, configure: h =>
        {
            if (h.Name == "h3")
            {
                h.Address = net.InsideAddress;
                h.NetworkNamespace = net.Namespace;
            }
            else
            {
                h.Address = net.OutsideAddress;
            }

            // Plain NBD on purpose: this test is about the partition (NBD TLS beyond loopback is LanTests').
            h.ExtraArgs.AddRange(["--nbd-tls", "off"]);
        });
        var (h1, h2, h3) = (cluster[0], cluster[1], cluster[2]);
        log.Line($"h1, h2 on {net.OutsideAddress}; h3 in namespace {net.Namespace} on {net.InsideAddress}");

        // h3 writes first, so the minority side also holds the lease when the cut comes (the hard case: an old
        // coordinator cut off from the others).
        var info = await h1.Api.CreateVirtualDiskAsync("split", 32 * MiB);
        log.Line($"layout: {FaultKit.Describe(info)}");
        var image = cluster.TempPath("split.img");
        NbdClients.WriteRandomFile(image, 32 * MiB, seed: 51);
        await FaultKit.WriteImageAsync(h3, "split", image);
        var lease = await cluster.WaitCoordinatorAsync("split", TimeSpan.FromSeconds(10));
        Assert.Equal("h3", lease.Name);

        log.Inject($"network partition: {net.OutsideLink}/{net.InsideLink} down, h3 cut off from h1 and h2");
        await net.CutAsync();
        var cutAt = Stopwatch.StartNew();

        // The minority write: a client inside h3's namespace writes 0xee over the first MiB through h3. Given 45 s
        // (longer than the 10 s lease and the 15 s proxy retry), it must fail or still be waiting — never succeed.
        var minority = net.ExecAsync("qemu-io", ["-f", "raw", "-c", "write -P 0xee 0 1M", "-c", "flush", h3.NbdUri("split")], TimeSpan.FromSeconds(45));

        // The majority keeps serving: a write through h1 succeeds (h1 proxies to h3 until its lease runs out, then a
        // majority host takes the lease over — the documented ~10 s stall); h3's components are marked absent.
        var image2 = cluster.TempPath("split2.img");
        NbdClients.WriteRandomFile(image2, 32 * MiB, seed: 52);
        await FaultKit.WriteImageAsync(h1, "split", image2);
        log.Line($"majority wrote a new image through h1 ({cutAt.Elapsed.TotalSeconds:0.0} s after the cut)");
        var moved = await cluster.WaitCoordinatorAsync("split", TimeSpan.FromSeconds(10), h => h != h3);
        var absent = await cluster.WaitHostComponentsAsync("split", h3, ["absent"], TimeSpan.FromSeconds(40), via: h1);
        log.Line($"majority after {cutAt.Elapsed.TotalSeconds:0.0} s: lease on {moved.Name}; {FaultKit.Describe(absent)}");
        await FaultKit.CompareThroughAsync(h2, "split", image2);

        string minorityOutcome;
        try
        {
            var result = await minority;
            Assert.True(result.ExitCode != 0, $"a write through the cut-off host h3 succeeded:\n{result}\n{h3.LogTail()}");
            Assert.DoesNotContain("wrote 1048576/1048576 bytes", result.Stdout, StringComparison.Ordinal);
            minorityOutcome = $"failed (exit {result.ExitCode}): {result.Stderr.Trim()} {result.Stdout.Trim()}";
        }
        catch (TimeoutException)
        {
            minorityOutcome = "never completed within 45 s (client killed)";
        }

        log.Line($"minority write through h3: {minorityOutcome}");

        await net.HealAsync();
        log.Line("partition healed");
        var compliant = await cluster.WaitCompliantAsync("split", TimeSpan.FromSeconds(90), via: h1);
        log.Survive($"partition healed and h3 resynced: {FaultKit.Describe(compliant)}");

        // Every host (h3 included) reads what the majority wrote; no trace of the refused write; replicas agree.
        foreach (var host in cluster.Hosts)
        {
            await FaultKit.CompareThroughAsync(host, "split", image2);
        }

        await cluster.AssertReplicasAgreeAsync("split");
    }
}
