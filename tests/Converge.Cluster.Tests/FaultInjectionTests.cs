using System.Globalization;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>
/// Faults injected into real host processes of a 3-host cluster with an FTT=1 virtual disk (two data replicas and a
/// witness, one per host): kill -9 and SIGSTOP of a replica host and of the coordinator, a disk failing every I/O, bit
/// rot in one replica, a full disk, and the delta resync after a short absence. Every test checks that nothing
/// acknowledged was lost (fio crc32c verify, whole-disk compares through every host, replica digests) and prints what
/// it injected.
/// </summary>
public sealed class FaultInjectionTests(ITestOutputHelper output)
{
    private const long MiB = FaultKit.MiB;
    private static readonly TimeSpan AbsentTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ResyncTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan FioTimeout = TimeSpan.FromMinutes(3);

    private readonly FaultLog log = new(output);

    /// <summary>The FTT=1 layout: the data host the test writes through first (so it takes the lease), the other data host, the witness host.</summary>
    private sealed record Roles(ClusterHost Coordinator, ClusterHost Replica, ClusterHost Witness, string Image);

    [Fact]
    public async Task Fault_kill9_of_a_replica_host_during_fio_loses_nothing_and_it_resyncs()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var roles = await SetUpAsync(cluster, "k9", 64 * MiB);

        // fio writes (and then verifies) the first half through the witness host, which is never touched.
        await using var fio = FioRun.Start(roles.Witness.NbdUri("k9"), offset: 0, size: 32 * MiB, seed: 11, writeIops: 600);
        await fio.WaitWrittenAsync(2 * MiB, TimeSpan.FromSeconds(60));
        log.Inject($"kill -9 of {roles.Replica.Name} (data replica, not the coordinator) after fio wrote {fio.WrittenBytes / MiB} MiB");
        await roles.Replica.KillAsync();
        var absent = await cluster.WaitHostComponentsAsync("k9", roles.Replica, ["absent"], AbsentTimeout, via: roles.Coordinator);
        log.Line($"absent: {FaultKit.Describe(absent)}");

        var before = fio.WrittenBytes;
        await fio.WaitWrittenAsync(before + (4 * MiB), TimeSpan.FromSeconds(60));
        log.Line($"fio kept writing without {roles.Replica.Name}: {before / MiB} -> {fio.WrittenBytes / MiB} MiB");
        await roles.Replica.RestartAsync();
        var compliant = await cluster.WaitCompliantAsync("k9", ResyncTimeout, via: roles.Coordinator);
        log.Survive($"{roles.Replica.Name} back and resynced: {FaultKit.Describe(compliant)}");

        var summary = await fio.FinishAsync(FioTimeout, () => cluster.LogTails());
        log.Line($"fio: {summary.WriteBytes / MiB} MiB written, {summary.ReadBytes / MiB} MiB verified (crc32c), longest write {summary.MaxWriteLatencyMs:0} ms");
        await AssertAllConsistentAsync(cluster, "k9", roles.Image, untouchedFrom: 32 * MiB);
    }

    [Fact]
    public async Task Fault_sigstop_of_a_replica_host_marks_it_absent_and_sigcont_resyncs_it()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var roles = await SetUpAsync(cluster, "hang", 64 * MiB);

        await using var fio = FioRun.Start(roles.Witness.NbdUri("hang"), offset: 0, size: 32 * MiB, seed: 12, writeIops: 600);
        await fio.WaitWrittenAsync(2 * MiB, TimeSpan.FromSeconds(60));
        log.Inject($"SIGSTOP of {roles.Replica.Name} (data replica, not the coordinator)");
        await roles.Replica.PauseAsync();
        var absent = await cluster.WaitHostComponentsAsync("hang", roles.Replica, ["absent"], AbsentTimeout, via: roles.Coordinator);
        log.Line($"absent: {FaultKit.Describe(absent)}");
        var before = fio.WrittenBytes;
        await fio.WaitWrittenAsync(before + (4 * MiB), TimeSpan.FromSeconds(60));
        log.Line($"fio kept writing while {roles.Replica.Name} hung: {before / MiB} -> {fio.WrittenBytes / MiB} MiB");

        await roles.Replica.ResumeAsync();
        log.Line($"SIGCONT {roles.Replica.Name}");
        var compliant = await cluster.WaitCompliantAsync("hang", ResyncTimeout, via: roles.Coordinator);
        log.Survive($"{roles.Replica.Name} resumed and resynced: {FaultKit.Describe(compliant)}");

        var summary = await fio.FinishAsync(FioTimeout, () => cluster.LogTails());
        log.Line($"fio: {summary.WriteBytes / MiB} MiB written, {summary.ReadBytes / MiB} MiB verified, longest write {summary.MaxWriteLatencyMs:0} ms");
        await AssertAllConsistentAsync(cluster, "hang", roles.Image, untouchedFrom: 32 * MiB);
    }

    [Fact]
    public async Task Fault_sigstop_of_the_coordinator_moves_the_lease_and_the_old_coordinator_is_fenced_when_it_resumes()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var roles = await SetUpAsync(cluster, "fence", 64 * MiB);

        // The client is on the witness host, which proxies to the coordinator.
        await using var fio = FioRun.Start(roles.Witness.NbdUri("fence"), offset: 0, size: 32 * MiB, seed: 13, writeIops: 600);
        await fio.WaitWrittenAsync(2 * MiB, TimeSpan.FromSeconds(60));
        log.Inject($"SIGSTOP of {roles.Coordinator.Name}, the coordinator (lease holder)");
        await roles.Coordinator.PauseAsync();
        var takeover = await cluster.WaitCoordinatorAsync("fence", TimeSpan.FromSeconds(45), h => h != roles.Coordinator);
        log.Line($"lease moved to {takeover.Name}");
        await cluster.WaitHostComponentsAsync("fence", roles.Coordinator, ["absent"], AbsentTimeout, via: roles.Witness);
        var before = fio.WrittenBytes;
        await fio.WaitWrittenAsync(before + (4 * MiB), TimeSpan.FromSeconds(60));
        log.Line($"fio (through {roles.Witness.Name}) kept writing: {before / MiB} -> {fio.WrittenBytes / MiB} MiB");

        // The old coordinator wakes up with writes it had in flight; it must not apply them over newer data.
        await roles.Coordinator.ResumeAsync();
        log.Line($"SIGCONT {roles.Coordinator.Name}");
        var compliant = await cluster.WaitCompliantAsync("fence", ResyncTimeout);
        log.Survive($"old coordinator {roles.Coordinator.Name} fenced and resynced: {FaultKit.Describe(compliant)}");

        var summary = await fio.FinishAsync(FioTimeout, () => cluster.LogTails());
        log.Line($"fio: {summary.WriteBytes / MiB} MiB written, {summary.ReadBytes / MiB} MiB verified, longest write {summary.MaxWriteLatencyMs:0} ms");
        await AssertAllConsistentAsync(cluster, "fence", roles.Image, untouchedFrom: 32 * MiB);
    }

    [Fact]
    public async Task Fault_a_disk_failing_every_io_degrades_its_component_and_io_carries_on()
    {
        await using var cluster = await TestCluster.StartAsync(3, hostArgs: ["--enable-fault-injection"]);
        var roles = await SetUpAsync(cluster, "eio", 64 * MiB);
        var info = await cluster.VdiskAsync("eio");
        var victim = info.Layout!.Single(c => c.Role == "data" && c.HostName == roles.Replica.Name);

        log.Inject($"disk {victim.DiskId} of {roles.Replica.Name} fails every I/O with EIO (holds data component {victim.Id})");
        using (var response = await roles.Replica.RpcHttp.PostAsync($"/internal/v1/test/disks/{victim.DiskId}/fail", null))
        {
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, $"POST /internal/v1/test/disks/{victim.DiskId}/fail on {roles.Replica.Name}: {(int)response.StatusCode} {body}");
        }

        // Writes and reads carry on (through the witness host, the replica host and the coordinator) without an error.
        var image2 = cluster.TempPath("eio2.img");
        NbdClients.WriteRandomFile(image2, 64 * MiB, seed: 22);
        await FaultKit.WriteImageAsync(roles.Witness, "eio", image2);
        var degraded = await cluster.WaitVdiskAsync(
            "eio", v => v.Layout!.FirstOrDefault(c => c.Id == victim.Id) is not { } still || still.State == "degraded",
            $"component {victim.Id} on the failing disk to be degraded (or replaced)", AbsentTimeout);
        log.Line($"after the failure: {FaultKit.Describe(degraded)}");
        foreach (var host in cluster.Hosts)
        {
            await FaultKit.CompareThroughAsync(host, "eio", image2);
        }

        // A device error does not come back: the replica is rebuilt at once (onto another disk) and compliance returns.
        var compliant = await cluster.WaitCompliantAsync("eio", ResyncTimeout);
        log.Survive($"rebuilt after the disk failure: {FaultKit.Describe(compliant)}");
        Assert.DoesNotContain(compliant.Layout!, c => FaultKit.SameId(c.DiskId, victim.DiskId) && c.HostName == roles.Replica.Name);
        await AssertAllConsistentAsync(cluster, "eio", image2, untouchedFrom: 0);
    }

    [Fact]
    public async Task Fault_bit_rot_in_one_replica_is_read_from_the_other_and_repaired()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var roles = await SetUpAsync(cluster, "rot", 32 * MiB);
        const long Target = 8 * MiB;
        const byte Pattern = 0x5c;

        // A block of a pattern the random image cannot hold, then find its copy in the coordinator's disk file: the
        // coordinator reads its local replica when it can, so that is the copy the reads below must trip over.
        (await NbdClients.QemuIoAsync(roles.Coordinator.NbdUri("rot"), [$"write -P 0x{Pattern:x2} {Target} 4k", "flush"])).EnsureSuccess();
        await PatchImageAsync(roles.Image, Target, Pattern, 4096);
        var info = await cluster.VdiskAsync("rot");
        var component = info.Layout!.Single(c => c.Role == "data" && c.HostName == roles.Coordinator.Name);
        var diskPath = (await roles.Coordinator.Api.ListDisksAsync()).Single(d => FaultKit.SameId(d.Id, component.DiskId)).Path;
        var physical = DiskFiles.FindFilledBlock(diskPath, Pattern);
        Assert.True(physical >= 0, $"no 4 KiB block of 0x{Pattern:x2} in {diskPath}");
        var checksumBefore = (await roles.Coordinator.Api.ListDisksAsync()).Single(d => FaultKit.SameId(d.Id, component.DiskId)).ChecksumErrors;
        var resyncBefore = await cluster.ResyncTotalsAsync();

        log.Inject($"bit rot: 2 bytes flipped at {diskPath}+{physical} ({roles.Coordinator.Name}, component {component.Id}, vdisk offset {Target})");
        using (var file = new FileStream(diskPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            var buffer = new byte[4096];
            file.Position = physical;
            file.ReadExactly(buffer);
            buffer[100] ^= 0xff;
            buffer[3000] ^= 0x10;
            file.Position = physical;
            file.Write(buffer);
            file.Flush();
        }

        // Every read succeeds with the right bytes (served from the other replica), through every host.
        foreach (var host in new[] { roles.Coordinator, roles.Witness, roles.Replica })
        {
            (await NbdClients.QemuIoAsync(host.NbdUri("rot"), [$"read -P 0x{Pattern:x2} {Target} 4k"])).EnsureSuccess();
        }

        foreach (var host in cluster.Hosts)
        {
            await FaultKit.CompareThroughAsync(host, "rot", roles.Image);
        }

        // The counters show it: a checksum error on the disk, a repair copy; and the bad copy was rewritten.
        await TestCluster.Eventually(
            async () => (await roles.Coordinator.Api.ListDisksAsync()).Single(d => FaultKit.SameId(d.Id, component.DiskId)).ChecksumErrors > checksumBefore,
            $"checksumErrors of disk {component.DiskId} on {roles.Coordinator.Name} to rise above {checksumBefore}",
            TimeSpan.FromSeconds(30));
        ResyncTotals? resyncAfter = null;
        await TestCluster.Eventually(
            async () =>
            {
                resyncAfter = await cluster.ResyncTotalsAsync();
                return resyncAfter.Repairs > resyncBefore.Repairs && resyncAfter.RepairedBytes >= resyncBefore.RepairedBytes + 4096;
            },
            $"a repair of at least 4 KiB to be counted (before: {resyncBefore})",
            TimeSpan.FromSeconds(30));
        var checksumAfter = (await roles.Coordinator.Api.ListDisksAsync()).Single(d => FaultKit.SameId(d.Id, component.DiskId)).ChecksumErrors;
        log.Line($"counters: disk checksumErrors {checksumBefore} -> {checksumAfter}; resync {resyncBefore} -> {resyncAfter}");
        await EventuallyAgreeAsync(cluster, "rot");
        log.Survive("bit rot repaired from the other replica (digests equal)");
        await AssertAllConsistentAsync(cluster, "rot", roles.Image, untouchedFrom: 0);
    }

    [Fact]
    public async Task Fault_a_full_disk_degrades_its_component_and_io_carries_on()
    {
        // Each host's disk files live on its own small tmpfs: sparse 256 MiB files, so placement sees room, but once the
        // file system is filled up every write into a new block of the file fails with ENOSPC — a disk that is full.
        await using var mounts = new TmpfsMounts();
        await using var cluster = await TestCluster.StartAsync(3, "256MiB", configure: h => h.DiskDirectory = mounts.Mount(Path.Combine(h.DataDir, "disks"), "600m"));
        var info = await cluster.Serving().Api.CreateVirtualDiskAsync("full", 64 * MiB);
        var data = cluster.DataComponents(info);
        var first = data.Single(d => d.Component.Replica == 0).Host;
        var victim = data.Single(d => d.Component.Replica == 1).Host;
        var filler = Path.Combine(victim.DiskDirectory!, "filler");
        var filled = await FillAsync(filler);
        log.Inject($"{victim.Name}'s file system filled up ({filled / MiB} MiB filler): its disks can no longer allocate");

        // Writes through the other data host (which takes the lease) and reads through every host carry on.
        var image = cluster.TempPath("full.img");
        NbdClients.WriteRandomFile(image, 64 * MiB, seed: 31);
        await FaultKit.WriteImageAsync(first, "full", image);
        var after = await cluster.WaitVdiskAsync(
            "full", v => v.Layout!.Where(c => c.HostName == victim.Name && c.Role == "data").All(c => c.State != "active"),
            $"the data component on the full disk of {victim.Name} to leave 'active'", AbsentTimeout);
        log.Line($"after the full disk: {FaultKit.Describe(after)}");
        foreach (var host in cluster.Hosts)
        {
            await FaultKit.CompareThroughAsync(host, "full", image);
        }

        await cluster.AssertReplicasAgreeAsync("full", requireAll: false);

        // Space comes back: compliance returns and the replicas agree.
        File.Delete(filler);
        log.Line($"filler removed on {victim.Name}");
        var compliant = await cluster.WaitCompliantAsync("full", ResyncTimeout);
        log.Survive($"full disk: {FaultKit.Describe(compliant)}");
        await AssertAllConsistentAsync(cluster, "full", image, untouchedFrom: 0);
    }

    [Fact]
    public async Task Fault_resync_after_a_short_absence_copies_only_the_changed_blocks()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var roles = await SetUpAsync(cluster, "delta", 128 * MiB);
        var before = await cluster.ResyncTotalsAsync();

        log.Inject($"kill -9 of {roles.Replica.Name} (data replica)");
        await roles.Replica.KillAsync();
        await cluster.WaitHostComponentsAsync("delta", roles.Replica, ["absent"], AbsentTimeout, via: roles.Coordinator);

        // 2048 distinct 4 KiB blocks (8 MiB of 128 MiB) change while it is away.
        var changed = await FaultKit.WriteRandomBlocksAsync(roles.Witness, "delta", roles.Image, count: 2048, seed: 41, regionBytes: 128 * MiB);
        await roles.Replica.RestartAsync();

        // Asked through the coordinator: the restarted host may still answer from the metadata it had when killed.
        var compliant = await cluster.WaitCompliantAsync("delta", ResyncTimeout, via: roles.Coordinator);
        var after = await cluster.WaitResyncIdleAsync(TimeSpan.FromSeconds(30));
        var copied = after.BytesCopied - before.BytesCopied;
        log.Survive($"{roles.Replica.Name} resynced: {FaultKit.Describe(compliant)}");
        log.Line($"delta resync: {changed} bytes changed while absent, {copied} bytes copied (ratio {(double)copied / changed:0.000}); {after}");

        Assert.True(copied >= changed, $"resync copied {copied} bytes, fewer than the {changed} bytes changed:\n{after.Detail}");
        Assert.True(copied <= changed * 1.1, $"resync copied {copied} bytes for {changed} bytes changed (more than 1.1x: not a delta):\n{after.Detail}");
        await AssertAllConsistentAsync(cluster, "delta", roles.Image, untouchedFrom: 0);
    }

    /// <summary>
    /// Creates an FTT=1 virtual disk, writes a random image through the host of replica 0 (which takes the lease) and
    /// checks every component is active.
    /// </summary>
    private async Task<Roles> SetUpAsync(TestCluster cluster, string name, long size)
    {
        var info = await cluster[0].Api.CreateVirtualDiskAsync(name, size);
        Assert.Equal("compliant", info.Compliance);
        var data = cluster.DataComponents(info);
        var coordinator = data.Single(d => d.Component.Replica == 0).Host;
        var replica = data.Single(d => d.Component.Replica == 1).Host;
        var witness = cluster.Host(info.Layout!.Single(c => c.Role == "witness").HostName);
        var image = cluster.TempPath(name + ".img");
        NbdClients.WriteRandomFile(image, size, seed: name.GetHashCode(StringComparison.Ordinal));
        await FaultKit.WriteImageAsync(coordinator, name, image);
        var lease = await cluster.WaitCoordinatorAsync(name, TimeSpan.FromSeconds(10));
        Assert.Equal(coordinator.Name, lease.Name);
        log.Line($"set up: {FaultKit.Describe(await cluster.VdiskAsync(name))}");
        return new Roles(coordinator, replica, witness, image);
    }

    /// <summary>The untouched range reads back as written through every host, and every replica holds the same bytes.</summary>
    private static async Task AssertAllConsistentAsync(TestCluster cluster, string vdisk, string image, long untouchedFrom)
    {
        var size = new FileInfo(image).Length;
        foreach (var host in cluster.Hosts.Where(h => h.IsServing))
        {
            if (untouchedFrom == 0)
            {
                await FaultKit.CompareThroughAsync(host, vdisk, image);
            }
            else
            {
                await FaultKit.CompareRangeThroughAsync(host, vdisk, image, untouchedFrom, size - untouchedFrom);
            }
        }

        await cluster.AssertReplicasAgreeAsync(vdisk);
    }

    private static async Task EventuallyAgreeAsync(TestCluster cluster, string vdisk)
    {
        Exception? last = null;
        try
        {
            await TestCluster.Eventually(
                async () =>
                {
                    try
                    {
                        await cluster.AssertReplicasAgreeAsync(vdisk);
                        return true;
                    }
                    catch (Exception e) when (e is Xunit.Sdk.XunitException)
                    {
                        last = e;
                        return false;
                    }
                },
                $"the replicas of {vdisk} to agree",
                TimeSpan.FromSeconds(30));
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException($"{e.Message}: {last?.Message}", e);
        }
    }

    private static async Task PatchImageAsync(string image, long offset, byte pattern, int length)
    {
        await using var file = new FileStream(image, FileMode.Open, FileAccess.Write);
        file.Position = offset;
        await file.WriteAsync(Enumerable.Repeat(pattern, length).ToArray());
    }

    /// <summary>Writes zeros to <paramref name="path"/> until the file system is full; returns the bytes written.</summary>
    private static async Task<long> FillAsync(string path)
    {
        var result = await Tool.RunAsync("dd", ["if=/dev/zero", $"of={path}", "bs=1M", "status=none"], TimeSpan.FromMinutes(1));
        Assert.Contains("No space left on device", result.Stderr, StringComparison.Ordinal);
        return new FileInfo(path).Length;
    }
}

/// <summary>tmpfs file systems mounted for a test (root only), unmounted and removed on dispose.</summary>
public sealed class TmpfsMounts : IAsyncDisposable
{
    private readonly List<string> mounted = [];

    /// <summary>Creates <paramref name="directory"/> and mounts a tmpfs of <paramref name="size"/> on it; returns the directory.</summary>
    public string Mount(string directory, string size)
    {
        Directory.CreateDirectory(directory);
        var startInfo = new System.Diagnostics.ProcessStartInfo("mount", ["-t", "tmpfs", "-o", $"size={size}", "tmpfs", directory])
        {
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var process = System.Diagnostics.Process.Start(startInfo)!;
        var error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"mount -t tmpfs on {directory} failed ({process.ExitCode.ToString(CultureInfo.InvariantCulture)}): {error}");
        }

        mounted.Add(directory);
        return directory;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var directory in mounted)
        {
            await Tool.RunAsync("umount", ["-l", directory], TimeSpan.FromSeconds(30));
        }

        mounted.Clear();
    }
}
