using System.Diagnostics;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>
/// Gray failures: a data-replica host frozen with SIGSTOP (as a GC pause, a hung kernel or a brown-out link would) costs
/// readers latency, never an error or a wrong read. The client enters through the witness host (which coordinates,
/// so every replica read is remote) and through a host that holds no component of the disk; each data host is paused
/// in turn for 12 s while both read. (Writers during such a pause saw EIO in 1 of 2 runs and a 23 s write: not fixed
/// yet, so this test has no writers.)
/// </summary>
public sealed class GrayFailureTests(ITestOutputHelper output)
{
    private const long MiB = FaultKit.MiB;
    private static readonly TimeSpan Pause = TimeSpan.FromSeconds(12);
    private readonly FaultLog log = new(output);

    [Fact]
    public async Task Gray_sigstop_of_each_data_host_in_turn_costs_readers_no_error_and_no_wrong_read()
    {
        await using var cluster = await TestCluster.StartAsync(4);
        var info = await cluster[0].Api.CreateVirtualDiskAsync("gray", 64 * MiB);
        var data = cluster.DataComponents(info).Select(d => d.Host).ToList();
        var witness = cluster.Host(info.Layout!.Single(c => c.Role == "witness").HostName);
        var bystander = cluster.Hosts.Single(h => !info.Layout!.Any(c => c.HostName == h.Name));
        var image = cluster.TempPath("gray.img");
        NbdClients.WriteRandomFile(image, 64 * MiB, seed: 61);

        // Written through the witness host first, so it takes the lease: every replica read it serves is remote.
        await FaultKit.WriteImageAsync(witness, "gray", image);
        var coordinator = await cluster.WaitCoordinatorAsync("gray", TimeSpan.FromSeconds(10));
        Assert.Equal(witness.Name, coordinator.Name);
        log.Line($"data on {string.Join(", ", data.Select(h => h.Name))}; witness and coordinator {witness.Name}; no component on {bystander.Name}");

        foreach (var paused in data)
        {
            log.Inject($"SIGSTOP of {paused.Name} (data replica) for {Pause.TotalSeconds:0} s");
            await paused.PauseAsync();
            var clock = Stopwatch.StartNew();
            var reads = 0;
            while (clock.Elapsed < Pause)
            {
                // Every read must succeed with the right bytes, whichever replica the coordinator tries first.
                foreach (var entry in new[] { witness, bystander })
                {
                    await FaultKit.CompareRangeThroughAsync(entry, "gray", image, 0, 64 * MiB);
                    reads++;
                }
            }

            await paused.ResumeAsync();
            log.Line($"SIGCONT {paused.Name}: {reads} whole-range reads through {witness.Name} and {bystander.Name} while it was frozen, all identical");
            var compliant = await cluster.WaitCompliantAsync("gray", TimeSpan.FromSeconds(90), via: witness);
            log.Survive($"{paused.Name} resynced: {FaultKit.Describe(compliant)}");
        }

        foreach (var host in cluster.Hosts)
        {
            await FaultKit.CompareThroughAsync(host, "gray", image);
        }

        await cluster.AssertReplicasAgreeAsync("gray");
    }
}
