using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Converge.Management.Contracts;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>What <c>GET /internal/v1/resync</c> reported, summed over the hosts that answered.</summary>
public sealed record ResyncTotals(long BytesCopied, long CopiesCompleted, int Running, long Repairs, long RepairedBytes, string Detail)
{
    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture,
        $"bytesCopied {BytesCopied}, copiesCompleted {CopiesCompleted}, running {Running}, repairs {Repairs}, repairedBytes {RepairedBytes}");
}

/// <summary>Helpers of the fault-injection tests: component states, coordinator, replica digests, resync counters.</summary>
public static class FaultKit
{
    public const long MiB = 1L << 20;

    /// <summary>A host whose API answers (running, not paused), other than <paramref name="except"/>.</summary>
    public static ClusterHost Serving(this TestCluster cluster, params ClusterHost[] except) =>
        cluster.Hosts.FirstOrDefault(h => h.IsServing && !except.Contains(h))
        ?? throw new InvalidOperationException("no serving host left");

    /// <summary>Two ids name the same thing (GUIDs compare whatever their format: the APIs print them with or without dashes).</summary>
    public static bool SameId(string a, string b) =>
        Guid.TryParse(a, out var x) && Guid.TryParse(b, out var y) ? x == y : string.Equals(a, b, StringComparison.OrdinalIgnoreCase);

    public static ClusterHost Host(this TestCluster cluster, string name) => cluster.Hosts.Single(h => h.Name == name);

    public static Task<VirtualDiskInfo> VdiskAsync(this TestCluster cluster, string name, ClusterHost? via = null) =>
        (via ?? cluster.Serving()).Api.GetVirtualDiskAsync(name);

    /// <summary>One line per component: host, role, replica, stripe, state; plus generation, compliance and coordinator.</summary>
    public static string Describe(VirtualDiskInfo info)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"{info.Name} gen {info.Generation} compliance {info.Compliance} ({info.ComplianceDetail}) coordinator {info.Coordinator ?? "-"}:");
        foreach (var c in info.Layout ?? [])
        {
            sb.Append(CultureInfo.InvariantCulture, $" [{c.HostName} {c.Role} r{c.Replica} s{c.Stripe} {c.State}]");
        }

        return sb.ToString();
    }

    /// <summary>Polls the virtual disk (through a serving host) until <paramref name="condition"/> holds; the timeout message shows the last layout.</summary>
    public static async Task<VirtualDiskInfo> WaitVdiskAsync(
        this TestCluster cluster, string name, Func<VirtualDiskInfo, bool> condition, string what, TimeSpan timeout, ClusterHost? via = null)
    {
        var stopwatch = Stopwatch.StartNew();
        VirtualDiskInfo? last = null;
        Exception? lastError = null;
        while (stopwatch.Elapsed < timeout)
        {
            try
            {
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                last = await (via ?? cluster.Serving()).Api.GetVirtualDiskAsync(name, attempt.Token);
                if (condition(last))
                {
                    return last;
                }
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or OperationCanceledException)
            {
                lastError = e;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException(
            $"timed out after {timeout.TotalSeconds:0} s waiting for {what}; last seen: {(last is null ? "nothing" : Describe(last))}" +
            (lastError is null ? string.Empty : $" (last error: {lastError.Message})") + "\n" + cluster.LogTails(25));
    }

    /// <summary>Every component of <paramref name="host"/> in <paramref name="vdisk"/> is in one of <paramref name="states"/>.</summary>
    public static Task<VirtualDiskInfo> WaitHostComponentsAsync(
        this TestCluster cluster, string vdisk, ClusterHost host, string[] states, TimeSpan timeout, ClusterHost? via = null) =>
        cluster.WaitVdiskAsync(
            vdisk,
            v => v.Layout!.Where(c => c.HostName == host.Name).All(c => states.Contains(c.State)) && v.Layout!.Any(c => c.HostName == host.Name),
            $"the components of {host.Name} in {vdisk} to be {string.Join(" or ", states)}",
            timeout,
            via);

    /// <summary>Compliance is back: every component active and the vdisk <c>compliant</c>.</summary>
    public static Task<VirtualDiskInfo> WaitCompliantAsync(this TestCluster cluster, string vdisk, TimeSpan timeout, ClusterHost? via = null) =>
        cluster.WaitVdiskAsync(
            vdisk,
            v => v.Compliance == "compliant" && v.Layout!.All(c => c.State == "active"),
            $"{vdisk} to be compliant with every component active",
            timeout,
            via);

    /// <summary>The host holding the virtual disk's lease, or null when nobody does.</summary>
    public static async Task<ClusterHost?> CoordinatorAsync(this TestCluster cluster, string vdisk, ClusterHost? via = null)
    {
        var info = await cluster.VdiskAsync(vdisk, via);
        return info.Coordinator is { } name ? cluster.Hosts.SingleOrDefault(h => h.Name == name || h.Name == name.Split(' ')[0]) : null;
    }

    /// <summary>Waits until some host holds the lease and returns it.</summary>
    public static async Task<ClusterHost> WaitCoordinatorAsync(this TestCluster cluster, string vdisk, TimeSpan timeout, Func<ClusterHost, bool>? accept = null)
    {
        ClusterHost? found = null;
        await cluster.WaitVdiskAsync(
            vdisk,
            v =>
            {
                found = v.Coordinator is { } name ? cluster.Hosts.SingleOrDefault(h => h.Name == name) : null;
                return found is not null && (accept is null || accept(found));
            },
            $"a coordinator for {vdisk}",
            timeout);
        return found!;
    }

    /// <summary>The data components of the virtual disk with the host holding each.</summary>
    public static IReadOnlyList<(ComponentInfo Component, ClusterHost Host)> DataComponents(this TestCluster cluster, VirtualDiskInfo info) =>
        [.. info.Layout!.Where(c => c.Role == "data").Select(c => (c, cluster.Host(c.HostName)))];

    /// <summary>
    /// For every stripe piece, every data component that the layout lists as <c>active</c> holds the same bytes
    /// (SHA-256 from its host's local store). With <paramref name="requireAll"/>, every data component must be active.
    /// </summary>
    public static async Task AssertReplicasAgreeAsync(this TestCluster cluster, string vdisk, bool requireAll = true)
    {
        var info = await cluster.VdiskAsync(vdisk);
        var data = cluster.DataComponents(info);
        if (requireAll)
        {
            Assert.True(data.All(d => d.Component.State == "active"), $"not every data component is active: {Describe(info)}");
        }

        foreach (var piece in data.Where(d => d.Component.State == "active").GroupBy(d => (d.Component.Stripe, d.Component.StripeOffset)))
        {
            var digests = new List<string>();
            foreach (var (component, host) in piece)
            {
                var digest = await host.RpcApi.GetComponentDigestAsync(component.Id);
                Assert.Equal(component.Length, digest.SizeBytes);
                digests.Add($"{host.Name}:{digest.Sha256}");
            }

            Assert.True(
                digests.Select(d => d.Split(':')[1]).Distinct().Count() == 1,
                $"{vdisk} stripe {piece.Key.Stripe.ToString(CultureInfo.InvariantCulture)}: active replicas differ ({string.Join(", ", digests)})");
        }
    }

    /// <summary>Sums <c>GET /internal/v1/resync</c> over every serving host (each reports the copies it ran as a coordinator).</summary>
    public static async Task<ResyncTotals> ResyncTotalsAsync(this TestCluster cluster)
    {
        long bytes = 0, copies = 0, repairs = 0, repairedBytes = 0;
        var running = 0;
        var detail = new StringBuilder();
        foreach (var host in cluster.Hosts.Where(h => h.IsServing))
        {
            using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            using var response = await host.RpcHttp.GetAsync("/internal/v1/resync", attempt.Token);
            var body = await response.Content.ReadAsStringAsync(attempt.Token);
            if (!response.IsSuccessStatusCode)
            {
                throw new InvalidOperationException(
                    $"GET {host.RpcUrl}/internal/v1/resync answered {(int)response.StatusCode}: {body} (the resync counters are not served)");
            }

            using var json = JsonDocument.Parse(body);
            var root = json.RootElement;
            bytes += root.GetProperty("bytesCopied").GetInt64();
            copies += root.TryGetProperty("copiesCompleted", out var c) ? c.GetInt64() : 0;
            running += root.TryGetProperty("running", out var r) && r.ValueKind == JsonValueKind.Array ? r.GetArrayLength() : 0;
            repairs += root.TryGetProperty("repairs", out var rp) ? rp.GetInt64() : 0;
            repairedBytes += root.TryGetProperty("repairedBytes", out var rb) ? rb.GetInt64() : 0;
            detail.Append(CultureInfo.InvariantCulture, $"{host.Name}: {body}\n");
        }

        return new ResyncTotals(bytes, copies, running, repairs, repairedBytes, detail.ToString());
    }

    /// <summary>Waits until no host reports a running copy.</summary>
    public static async Task<ResyncTotals> WaitResyncIdleAsync(this TestCluster cluster, TimeSpan timeout)
    {
        var stopwatch = Stopwatch.StartNew();
        while (true)
        {
            var totals = await cluster.ResyncTotalsAsync();
            if (totals.Running == 0)
            {
                return totals;
            }

            if (stopwatch.Elapsed > timeout)
            {
                throw new TimeoutException($"copies still running after {timeout.TotalSeconds:0} s:\n{totals.Detail}");
            }

            await Task.Delay(200);
        }
    }

    public static string LogTails(this TestCluster cluster, int lines = 30) =>
        string.Join('\n', cluster.Hosts.Select(h => h.LogTail(lines)));

    /// <summary>Reads the whole virtual disk through <paramref name="host"/> and compares it with <paramref name="image"/>.</summary>
    public static async Task CompareThroughAsync(ClusterHost host, string vdisk, string image)
    {
        var result = await NbdClients.QemuImgAsync(["compare", "-f", "raw", "-F", "raw", image, host.NbdUri(vdisk)], TimeSpan.FromMinutes(2));
        Assert.True(result.ExitCode == 0, $"{vdisk} through {host.Name} differs from {image}:\n{result}");
    }

    public static async Task WriteImageAsync(ClusterHost host, string vdisk, string image) =>
        (await NbdClients.QemuImgAsync(["convert", "-n", "-f", "raw", "-O", "raw", image, host.NbdUri(vdisk)], TimeSpan.FromMinutes(2))).EnsureSuccess();

    /// <summary>Reads <paramref name="length"/> bytes at <paramref name="offset"/> through <paramref name="host"/> and compares them with the same range of <paramref name="image"/>.</summary>
    public static async Task CompareRangeThroughAsync(ClusterHost host, string vdisk, string image, long offset, long length)
    {
        const string Script = """
            import nbd, sys
            uri, image, offset, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
            h = nbd.NBD()
            h.connect_uri(uri)
            with open(image, 'rb') as f:
                pos = offset
                while pos < offset + length:
                    n = min(1 << 20, offset + length - pos)
                    f.seek(pos)
                    want = f.read(n)
                    got = h.pread(n, pos)
                    if got != want:
                        bad = next(i for i in range(n) if got[i] != want[i])
                        sys.exit('differs at byte %d' % (pos + bad))
                    pos += n
            h.shutdown()
            print('SAME', length)
            """;
        var result = await Tool.RunAsync(
            NbdClients.SystemPython,
            ["-c", Script, host.NbdUri(vdisk), image, offset.ToString(CultureInfo.InvariantCulture), length.ToString(CultureInfo.InvariantCulture)],
            TimeSpan.FromMinutes(2),
            NbdClients.SystemPath);
        Assert.True(result.ExitCode == 0, $"{vdisk} [{offset}, +{length}) through {host.Name} differs from {image}:\n{result}");
    }

    /// <summary>
    /// Writes <paramref name="count"/> distinct 4 KiB blocks of seeded random data through <paramref name="host"/> (QD1,
    /// then a flush) and applies the same writes to the local <paramref name="image"/>. Returns the bytes changed.
    /// </summary>
    public static async Task<long> WriteRandomBlocksAsync(ClusterHost host, string vdisk, string image, int count, int seed, long regionBytes)
    {
        const string Script = """
            import nbd, random, sys
            uri, image, seed, count, region = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
            h = nbd.NBD()
            h.connect_uri(uri)
            rng = random.Random(seed)
            blocks = rng.sample(range(region // 4096), count)
            with open(image, 'r+b') as f:
                for b in blocks:
                    data = rng.randbytes(4096)
                    h.pwrite(data, b * 4096)
                    f.seek(b * 4096)
                    f.write(data)
            h.flush()
            h.shutdown()
            print('WROTE', len(blocks))
            """;
        var result = await Tool.RunAsync(
            NbdClients.SystemPython,
            ["-c", Script, host.NbdUri(vdisk), image, seed.ToString(CultureInfo.InvariantCulture), count.ToString(CultureInfo.InvariantCulture), regionBytes.ToString(CultureInfo.InvariantCulture)],
            TimeSpan.FromMinutes(2),
            NbdClients.SystemPath);
        Assert.True(result.ExitCode == 0, $"writing {count} blocks through {host.Name} failed:\n{result}");
        return count * 4096L;
    }

}

/// <summary>The test output with timestamps, and the count of faults injected and survived.</summary>
public sealed class FaultLog(ITestOutputHelper output)
{
    private readonly Stopwatch clock = Stopwatch.StartNew();

    public int Injected { get; private set; }

    public int Survived { get; private set; }

    public void Line(string line) => output.WriteLine($"[{clock.Elapsed.TotalSeconds,7:0.0} s] {line}");

    public void Inject(string what)
    {
        Injected++;
        Line($"INJECT #{Injected.ToString(CultureInfo.InvariantCulture)}: {what}");
    }

    public void Survive(string what)
    {
        Survived++;
        Line($"SURVIVED #{Survived.ToString(CultureInfo.InvariantCulture)}: {what}");
    }
}
