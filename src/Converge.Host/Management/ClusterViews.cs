using System.Diagnostics;
using System.Globalization;
using Converge.Host.Cluster;
using Converge.Management.Contracts;
using Converge.Metadata;
using MetaHostState = Converge.Metadata.HostState;

namespace Converge.Host.Management;

/// <summary>
/// Views that need every host: resync progress and performance samples (each host reports its own through
/// <c>/internal/v1</c>, the answering host merges them) and reachability with clock offsets (a ping of each host's
/// <c>/api/v1/health</c>, whose <see cref="ClockHeader"/> carries the host's clock).
/// </summary>
internal sealed class ClusterViews(IoMeters meters, HostInventory inventory, IServiceProvider services) : IDisposable
{
    /// <summary>Every API response carries the answering host's clock (Unix milliseconds).</summary>
    public const string ClockHeader = "X-Converge-Time";

    private static readonly TimeSpan HostTimeout = TimeSpan.FromSeconds(2);
    private readonly HttpClient http = new() { Timeout = HostTimeout };
    private readonly ClusterNode? cluster = services.GetService<ClusterNode>();

    // The per-host views come over host RPC (mutual TLS, this host's certificate); the health pings stay on the API.
    private HttpClient Rpc => cluster?.RpcClient ?? http;

    public ClusterNode? Cluster => cluster;

    public HostPerfInfo LocalPerf(int seconds) => new()
    {
        Host = inventory.HostName,
        VirtualDisks = [.. meters.All.OrderBy(m => m.Name, StringComparer.Ordinal).Select(m => new PerfSeries { Name = m.Name, Samples = m.Samples(seconds) })],
    };

    /// <summary>This host's copies in the shape <c>/internal/v1/resync</c> (ClusterApi) serves them.</summary>
    public HostResyncState LocalResyncState() => cluster is null
        ? new HostResyncState()
        : new HostResyncState
        {
            Running = [.. cluster.Resyncs.Snapshot().Select(c => new HostResyncCopy
            {
                VirtualDiskId = c.VirtualDiskId,
                VirtualDiskName = c.VirtualDiskName,
                ComponentId = c.ComponentId.ToString("N"),
                TargetHostId = c.TargetHostId,
                Kind = c.Kind.ToString().ToLowerInvariant(),
                TotalBytes = c.TotalBytes,
                DoneBytes = c.DoneBytes,
                RemainingBytes = c.RemainingBytes,
                BytesPerSecond = c.BytesPerSecond,
                EtaSeconds = c.EstimatedTimeLeft?.TotalSeconds,
                StartedAt = c.StartedAt,
            })],
            BytesCopied = cluster.Resyncs.BytesCopied,
            CopiesCompleted = cluster.Resyncs.CopiesCompleted,
            Repairs = cluster.Coordinators.Repairs,
            RepairedBytes = cluster.Coordinators.RepairedBytes,
            ScrubbedBytes = cluster.Coordinators.ScrubbedBytes,
            ScrubErrors = cluster.Coordinators.ScrubErrors,
            ScrubPasses = cluster.Coordinators.ScrubPasses,
        };

    /// <summary>Merged over every host of the cluster (a standalone host runs no copies).</summary>
    public async Task<ResyncReport> ResyncAsync(CancellationToken cancellationToken)
    {
        List<(HostRecord? Host, HostResyncState? Value)> results = cluster is null
            ? [(null, LocalResyncState())]
            : [.. (await FanOutAsync("/internal/v1/resync", ContractsJsonContext.Default.HostResyncState, LocalResyncState(), cancellationToken).ConfigureAwait(false))
                .Select(r => ((HostRecord?)r.Host, r.Value))];
        var state = cluster?.Registered == true ? cluster.Metadata.Current : null;
        var copies = results.Where(r => r.Value is not null)
            .SelectMany(r => r.Value!.Running.Select(c => new ResyncInfo
            {
                VirtualDiskId = c.VirtualDiskId,
                VirtualDisk = c.VirtualDiskName,
                ComponentId = c.ComponentId,
                TargetHostId = c.TargetHostId,
                TargetHost = state?.Hosts.GetValueOrDefault(c.TargetHostId)?.Name,
                Host = r.Host?.Name ?? inventory.HostName,
                Kind = c.Kind,
                TotalBytes = c.TotalBytes,
                DoneBytes = c.DoneBytes,
                BytesPerSecond = c.BytesPerSecond,
                EtaSeconds = c.EtaSeconds,
                StartedAt = c.StartedAt,
            }))
            .OrderBy(c => c.VirtualDisk, StringComparer.Ordinal).ToList();
        var total = copies.Sum(c => c.TotalBytes);
        var done = copies.Sum(c => c.DoneBytes);
        var rate = copies.Sum(c => c.BytesPerSecond);
        var remaining = Math.Max(0, total - done);
        return new ResyncReport
        {
            TotalBytes = total,
            DoneBytes = done,
            RemainingBytes = remaining,
            BytesPerSecond = rate,
            EtaSeconds = copies.Count == 0 ? 0 : rate > 0 ? remaining / rate : null,
            BytesCopied = results.Sum(r => r.Value?.BytesCopied ?? 0),
            CopiesCompleted = results.Sum(r => r.Value?.CopiesCompleted ?? 0),
            Repairs = results.Sum(r => r.Value?.Repairs ?? 0),
            Copies = copies,
            UnreachableHosts = [.. results.Where(r => r.Value is null).Select(r => r.Host!.Name)],
        };
    }

    public async Task<PerfReport> PerfAsync(int seconds, CancellationToken cancellationToken)
    {
        seconds = Math.Clamp(seconds, 1, IoMeters.WindowSeconds - 1);
        var local = LocalPerf(seconds);
        var reports = cluster is null
            ? [(Name: inventory.HostName, Value: (HostPerfInfo?)local)]
            : (await FanOutAsync($"/internal/v1/perf?seconds={seconds.ToString(CultureInfo.InvariantCulture)}", ContractsJsonContext.Default.HostPerfInfo, local, cancellationToken).ConfigureAwait(false))
                .Select(r => (r.Host.Name, r.Value)).ToList();

        var hosts = reports.Where(r => r.Value is not null)
            .Select(r => new PerfSeries { Name = r.Name, Samples = Sum(r.Value!.VirtualDisks.Select(v => v.Samples), seconds) })
            .OrderBy(s => s.Name, StringComparer.Ordinal).ToList();
        var vdisks = reports.Where(r => r.Value is not null).SelectMany(r => r.Value!.VirtualDisks)
            .GroupBy(v => v.Name, StringComparer.Ordinal)
            .Select(g => new PerfSeries { Name = g.Key, Samples = Sum(g.Select(v => v.Samples), seconds) })
            .OrderBy(s => s.Name, StringComparer.Ordinal).ToList();
        return new PerfReport { Seconds = seconds, Hosts = hosts, VirtualDisks = vdisks, UnreachableHosts = [.. reports.Where(r => r.Value is null).Select(r => r.Name)] };
    }

    /// <summary>Pings every other host's API: reachable, round trip, and its clock minus ours (midpoint estimate).</summary>
    public async Task<IReadOnlyList<HostPing>> PingAsync(ClusterState state, CancellationToken cancellationToken)
    {
        var hosts = state.Hosts.Values.Where(h => h.State != MetaHostState.Decommissioned).ToList();
        return await Task.WhenAll(hosts.Select(async h =>
        {
            if (cluster is not null && h.HostId == cluster.HostId)
            {
                return new HostPing(h, true, TimeSpan.Zero, TimeSpan.Zero, null);
            }

            var sent = DateTimeOffset.UtcNow;
            var stopwatch = Stopwatch.StartNew();
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                timeout.CancelAfter(HostTimeout);
                using var response = await http.GetAsync(h.Endpoints.Api.TrimEnd('/') + "/api/v1/health", timeout.Token).ConfigureAwait(false);
                var rtt = stopwatch.Elapsed;
                TimeSpan? offset = null;
                long remoteMs = 0;
                if (response.Headers.TryGetValues(ClockHeader, out var values) &&
                    long.TryParse(values.FirstOrDefault(), NumberStyles.Integer, CultureInfo.InvariantCulture, out remoteMs))
                {
                    var midpoint = sent + (rtt / 2);
                    offset = DateTimeOffset.FromUnixTimeMilliseconds(remoteMs) - midpoint;
                }

                return new HostPing(h, true, rtt, offset, response.IsSuccessStatusCode ? null : $"answered HTTP {(int)response.StatusCode}");
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                return new HostPing(h, false, stopwatch.Elapsed, null, e is OperationCanceledException ? $"no answer within {HostTimeout.TotalSeconds:0} s" : e.Message);
            }
        })).ConfigureAwait(false);
    }

    public void Dispose() => http.Dispose();

    /// <summary>Adds series sample by sample (by time); latency is the request-weighted mean.</summary>
    private static List<PerfSample> Sum(IEnumerable<IReadOnlyList<PerfSample>> series, int seconds)
    {
        var byTime = new SortedDictionary<long, (double R, double W, double O, double Rb, double Wb, double LatencyOps)>();
        foreach (var samples in series)
        {
            foreach (var s in samples)
            {
                var a = byTime.GetValueOrDefault(s.Time);
                var ops = s.ReadIops + s.WriteIops + s.OtherIops;
                byTime[s.Time] = (a.R + s.ReadIops, a.W + s.WriteIops, a.O + s.OtherIops, a.Rb + s.ReadBytesPerSecond, a.Wb + s.WriteBytesPerSecond, a.LatencyOps + (s.LatencyMs * ops));
            }
        }

        if (byTime.Count == 0)
        {
            // Nothing served yet: an idle line of zeros over the window, so charts and clients see every host.
            var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            for (var t = now - seconds; t < now; t++)
            {
                byTime[t] = default;
            }
        }

        return [.. byTime.TakeLast(seconds).Select(kv =>
        {
            var (r, w, o, rb, wb, lo) = kv.Value;
            var ops = r + w + o;
            return new PerfSample { Time = kv.Key, ReadIops = r, WriteIops = w, OtherIops = o, ReadBytesPerSecond = rb, WriteBytesPerSecond = wb, LatencyMs = ops == 0 ? 0 : lo / ops };
        })];
    }

    private async Task<List<(HostRecord Host, T? Value)>> FanOutAsync<T>(
        string path, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo, T local, CancellationToken cancellationToken)
        where T : class
    {
        var node = cluster!;
        var hosts = node.Metadata.Current.Hosts.Values.Where(h => h.State != MetaHostState.Decommissioned).OrderBy(h => h.Name, StringComparer.Ordinal).ToList();
        var results = await Task.WhenAll(hosts.Select(async h =>
        {
            if (h.HostId == node.HostId)
            {
                return (h, local);
            }

            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                timeout.CancelAfter(HostTimeout);
                if (h.Endpoints.Rpc is null)
                {
                    return (h, (T?)null);
                }

                return (h, await Rpc.GetFromJsonAsync(h.Endpoints.Rpc.TrimEnd('/') + path, typeInfo, timeout.Token).ConfigureAwait(false));
            }
            catch (Exception e) when (e is HttpRequestException or System.Text.Json.JsonException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                return (h, (T?)null);
            }
        })).ConfigureAwait(false);
        return [.. results];
    }
}

/// <summary>One host's answer to a ping: <see cref="ClockOffset"/> = its clock minus the asking host's.</summary>
internal sealed record HostPing(HostRecord Host, bool Reachable, TimeSpan RoundTrip, TimeSpan? ClockOffset, string? Error);
