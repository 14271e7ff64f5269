using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Converge.Management.Contracts;

namespace Converge.Management.Tests;

/// <summary>
/// The REST API of a real 3-host cluster: every endpoint answers, mutating calls without or with a wrong token are
/// refused with 401 problem details and change nothing, bad input gets a clear problem and changes nothing.
/// </summary>
public sealed class ApiTests(ApiClusterFixture fixture) : IClassFixture<ApiClusterFixture>
{
    /// <summary>Every public endpoint (method, route template) the OpenAPI document must list.</summary>
    public static readonly (string Method, string Path)[] PublicEndpoints =
    [
        ("GET", "/api/v1/health"), ("GET", "/api/v1/host"), ("GET", "/api/v1/disks"), ("POST", "/api/v1/disks"),
        ("GET", "/api/v1/vdisks"), ("POST", "/api/v1/vdisks"), ("GET", "/api/v1/vdisks/{name}"), ("PATCH", "/api/v1/vdisks/{name}"),
        ("DELETE", "/api/v1/vdisks/{name}"), ("GET", "/api/v1/vdisks/{name}/layout"), ("PUT", "/api/v1/vdisks/{name}/policy"),
        ("GET", "/api/v1/policies"), ("GET", "/api/v1/policies/{name}"), ("PUT", "/api/v1/policies/{name}"), ("DELETE", "/api/v1/policies/{name}"),
        ("GET", "/api/v1/hosts"), ("GET", "/api/v1/hosts/{name}"), ("POST", "/api/v1/hosts/{name}/maintenance"), ("DELETE", "/api/v1/hosts/{name}/maintenance"),
        ("GET", "/api/v1/cluster"), ("POST", "/api/v1/cluster/join-tokens"), ("POST", "/api/v1/hosts/{name}/revoke"), ("GET", "/api/v1/fault-domains"), ("GET", "/api/v1/compliance"),
        ("GET", "/api/v1/events"), ("GET", "/api/v1/health/checks"), ("GET", "/api/v1/resync"), ("GET", "/api/v1/perf"),
        ("POST", "/api/v1/hosts/{name}/decommission"), ("GET", "/api/v1/hosts/{name}/decommission"),
        ("POST", "/api/v1/cluster/disks/{id}/decommission"), ("GET", "/api/v1/cluster/disks/{id}/decommission"),
        ("GET", "/api/v1/cluster/rebalance"), ("POST", "/api/v1/cluster/rebalance"), ("DELETE", "/api/v1/cluster/rebalance"),
        ("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/{id}"), ("POST", "/api/v1/tokens/admin/rotate"),
    ];

    /// <summary>Every change, with a body where it takes one: none may be made without an admin token.</summary>
    public static IReadOnlyList<(HttpMethod Method, string Path, string? Body)> MutationCalls => Mutations;

    private static readonly (HttpMethod Method, string Path, string? Body)[] Mutations =
    [
        (HttpMethod.Post, "/api/v1/vdisks", """{"name":"sneaky","size":"64MiB"}"""),
        (HttpMethod.Patch, "/api/v1/vdisks/alpha", """{"size":"128MiB"}"""),
        (HttpMethod.Delete, "/api/v1/vdisks/alpha", null),
        (HttpMethod.Put, "/api/v1/vdisks/alpha/policy", """{"policy":"default"}"""),
        (HttpMethod.Put, "/api/v1/policies/sneaky", """{"failuresToTolerate":0}"""),
        (HttpMethod.Delete, "/api/v1/policies/default", null),
        (HttpMethod.Post, "/api/v1/hosts/h2/maintenance", """{"mode":"no-data-migration"}"""),
        (HttpMethod.Delete, "/api/v1/hosts/h2/maintenance", null),
        (HttpMethod.Post, "/api/v1/hosts/h3/decommission", null),
        (HttpMethod.Post, "/api/v1/hosts/h3/revoke", null),
        (HttpMethod.Post, "/api/v1/cluster/join-tokens", """{"ttl":"1h"}"""),
        (HttpMethod.Post, "/api/v1/cluster/disks/0123456789abcdef/decommission", null),
        (HttpMethod.Post, "/api/v1/cluster/rebalance", """{"dryRun":false}"""),
        (HttpMethod.Delete, "/api/v1/cluster/rebalance", null),
        (HttpMethod.Post, "/api/v1/disks", """{"path":"/tmp/converge-sneaky.img","size":"1GiB"}"""),
        (HttpMethod.Post, "/api/v1/tokens", """{"name":"sneaky","role":"admin"}"""),
        (HttpMethod.Delete, "/api/v1/tokens/0123456789ab", null),
        (HttpMethod.Post, "/api/v1/tokens/admin/rotate", null),
    ];

    private TestCluster Cluster => fixture.Cluster;

    private ClusterHost H1 => Cluster[0];

    [Fact]
    public async Task OpenApi_document_lists_every_public_endpoint_and_no_internal_one()
    {
        var document = JsonNode.Parse(await H1.Http.GetStringAsync("/openapi/v1.json"))!;
        var paths = document["paths"]!.AsObject();
        var listed = paths.SelectMany(p => p.Value!.AsObject().Select(m => (m.Key.ToUpperInvariant(), p.Key))).ToHashSet();
        foreach (var endpoint in PublicEndpoints)
        {
            Assert.True(listed.Contains(endpoint), $"the OpenAPI document does not list {endpoint.Method} {endpoint.Path}");
        }

        Assert.DoesNotContain(listed, e => e.Item2.StartsWith("/internal", StringComparison.Ordinal));
        Assert.Equal(PublicEndpoints.Length, listed.Count);
    }

    [Fact]
    public async Task Every_read_endpoint_answers_on_every_host()
    {
        foreach (var host in Cluster.Hosts)
        {
            var api = host.Api;
            Assert.Equal("ready", (await api.GetHealthAsync()).Status);
            Assert.Equal(host.Name, (await api.GetHostAsync()).Name);
            Assert.Equal(2, (await api.ListDisksAsync()).Count);
            Assert.Contains(await api.ListVirtualDisksAsync(), v => v.Name == "alpha");
            var alpha = await api.GetVirtualDiskAsync("alpha");
            var layout = await api.GetLayoutAsync("alpha");
            Assert.Equal(alpha.Layout!.Select(c => c.Id), layout.Select(c => c.Id));
            Assert.Equal(3, layout.Count);
            Assert.Contains(await api.ListPoliciesAsync(), p => p.Name == "default" && p.IsDefault);
            Assert.Equal(1, (await api.GetPolicyAsync("default")).FailuresToTolerate);
            Assert.Equal(3, (await api.ListHostsAsync()).Count);
            Assert.Equal("h2", (await api.GetClusterHostAsync("h2")).Name);
            var status = (await api.TryGetClusterAsync())!;
            Assert.Equal(6, status.Disks.Count);
            Assert.Equal(status.Disks.Sum(d => d.CapacityBytes), status.CapacityBytes);
            Assert.True(status.ProvisionedBytes >= 2 * (64L << 20), $"provisioned {status.ProvisionedBytes}");
            Assert.Equal(3, (await api.ListFaultDomainsAsync()).Count);
            var compliance = Assert.Single(await api.GetComplianceAsync(), c => c.VirtualDisk == "alpha");
            Assert.Equal("compliant", compliance.Compliance);
            Assert.Equal(3, compliance.ActiveComponents);
            Assert.Contains(await api.ListEventsAsync(), e => e.Kind == "vdisk.created" && e.VirtualDisk == "alpha");
            var health = await api.GetHealthChecksAsync();
            Assert.Equal(
                ["host-connectivity", "metadata-quorum", "disk-health", "disk-capacity", "object-health", "clock-skew", "resync-backlog", "maintenance", "admin-token"],
                health.Checks.Select(c => c.Name));
            Assert.All(health.Checks, c => Assert.False(string.IsNullOrWhiteSpace(c.Message)));
            Assert.Equal("ok", health.Status);
            var resync = await api.GetResyncAsync();
            Assert.Empty(resync.Copies);
            Assert.Empty(resync.UnreachableHosts);
            var perf = await api.GetPerfAsync(10);
            Assert.Equal(["h1", "h2", "h3"], perf.Hosts.Select(h => h.Name));
            Assert.All(perf.Hosts, h => Assert.Equal(10, h.Samples.Count));
        }

        using var metrics = await H1.Http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        using var ui = await H1.Http.GetAsync("/");
        Assert.Equal("text/html", ui.Content.Headers.ContentType?.MediaType);
        Assert.Contains("Converge", await ui.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Mutating_calls_without_or_with_a_wrong_token_are_refused_and_change_nothing()
    {
        var before = await SnapshotAsync();
        var calls = Mutations.Concat(new (HttpMethod Method, string Path, string? Body)[]
        {
            // Routes match case-insensitively, so the token check must too (it once matched "/api/v1" exactly).
            (HttpMethod.Delete, "/API/v1/vdisks/alpha", null),
            (HttpMethod.Delete, "/Api/V1/vdisks/alpha", null),
            (HttpMethod.Post, "/API/V1/VDISKS", """{"name":"sneaky","size":"64MiB"}"""),
            (HttpMethod.Patch, "/aPi/v1/vdisks/alpha", """{"size":"128MiB"}"""),
            (HttpMethod.Put, "/API/v1/policies/sneaky", """{"failuresToTolerate":0}"""),
            (HttpMethod.Post, "/API/v1/hosts/h2/maintenance", """{"mode":"no-data-migration"}"""),
            (HttpMethod.Post, "/api/V1/CLUSTER/JOIN/../rebalance", """{"dryRun":false}"""),
            (HttpMethod.Post, "/API/V1/TOKENS", """{"name":"sneaky","role":"admin"}"""),
            (HttpMethod.Post, "/Api/v1/Tokens/Admin/Rotate", null),
            (HttpMethod.Delete, "/API/V1/HOSTS/h2/MAINTENANCE", null),
        });
        foreach (var (method, path, body) in calls)
        {
            foreach (var authorization in new AuthenticationHeaderValue?[] { null, new("Bearer", "cvg_not-the-token"), new("Basic", "YWRtaW46YWRtaW4=") })
            {
                foreach (var host in Cluster.Hosts)
                {
                    using var request = new HttpRequestMessage(method, host.ApiUrl + path);
                    if (body is not null)
                    {
                        request.Content = new StringContent(body, Encoding.UTF8, "application/json");
                    }

                    request.Headers.Authorization = authorization;
                    using var response = await host.Http.SendAsync(request);
                    var problem = await ProblemAsync(response);
                    Assert.True(response.StatusCode == HttpStatusCode.Unauthorized, $"{method} {path} ({authorization?.Scheme ?? "no token"}) on {host.Name}: {(int)response.StatusCode} {problem.Detail}");
                    Assert.Equal("Bearer realm=\"converge\"", response.Headers.WwwAuthenticate.ToString());
                    Assert.Equal(401, problem.Status);
                    Assert.Contains(authorization is null ? "needs the admin token" : authorization.Scheme == "Bearer" ? "token is wrong" : "Bearer TOKEN", problem.Detail, StringComparison.Ordinal);
                }
            }
        }

        Assert.False(File.Exists("/tmp/converge-sneaky.img"));
        Assert.Equal(before, await SnapshotAsync());

        // GETs stay open; the join moved to host RPC (mutual TLS, join tokens): the API port no longer has it.
        using var open = new HttpClient { BaseAddress = new Uri(H1.ApiUrl) };
        Assert.Equal(HttpStatusCode.OK, (await open.GetAsync("/api/v1/vdisks")).StatusCode);
        using var join = await open.PostAsync("/api/v1/cluster/join", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.NotFound, join.StatusCode);
    }

    [Fact]
    public async Task Bad_input_gets_a_clear_problem_and_changes_nothing()
    {
        var before = await SnapshotAsync();
        var cases = new (HttpMethod Method, string Path, string? Body, HttpStatusCode Status, string Detail)[]
        {
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":"Bad Name","size":"64MiB"}""", HttpStatusCode.BadRequest, "virtual disk name"),
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":"ok1","size":"lots"}""", HttpStatusCode.BadRequest, "lots"),
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":"ok1","size":"1000"}""", HttpStatusCode.BadRequest, "4096"),
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":"ok1","size":"64MiB","policy":"nope"}""", HttpStatusCode.NotFound, "policy 'nope' does not exist"),
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":"alpha","size":"64MiB"}""", HttpStatusCode.Conflict, "already exists"),
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":"ok1","size":"1PiB"}""", HttpStatusCode.InsufficientStorage, "cannot create"),
            (HttpMethod.Post, "/api/v1/vdisks", """{"name":""", HttpStatusCode.BadRequest, "not a valid"),
            (HttpMethod.Post, "/api/v1/vdisks", "", HttpStatusCode.BadRequest, "body"),
            (HttpMethod.Patch, "/api/v1/vdisks/alpha", """{"size":"4MiB"}""", HttpStatusCode.BadRequest, "cannot shrink"),
            (HttpMethod.Patch, "/api/v1/vdisks/nope", """{"size":"1GiB"}""", HttpStatusCode.NotFound, "'nope' does not exist"),
            (HttpMethod.Delete, "/api/v1/vdisks/nope", null, HttpStatusCode.NotFound, "'nope' does not exist"),
            (HttpMethod.Put, "/api/v1/vdisks/alpha/policy", """{"policy":"nope"}""", HttpStatusCode.NotFound, "policy 'nope' does not exist"),
            (HttpMethod.Put, "/api/v1/vdisks/alpha/policy", """{}""", HttpStatusCode.BadRequest, "policy"),
            (HttpMethod.Put, "/api/v1/vdisks/nope/policy", """{"policy":"default"}""", HttpStatusCode.NotFound, "'nope' does not exist"),
            (HttpMethod.Put, "/api/v1/policies/bad", """{"failuresToTolerate":9}""", HttpStatusCode.BadRequest, "invalid"),
            (HttpMethod.Put, "/api/v1/policies/bad", """{"failuresToTolerate":1,"method":"raid9"}""", HttpStatusCode.BadRequest, "raid9"),
            (HttpMethod.Delete, "/api/v1/policies/default", null, HttpStatusCode.Conflict, "default policy"),
            (HttpMethod.Delete, "/api/v1/policies/nope", null, HttpStatusCode.NotFound, "does not exist"),
            (HttpMethod.Post, "/api/v1/hosts/h9/maintenance", """{"mode":"no-data-migration"}""", HttpStatusCode.NotFound, "host 'h9' is not in the cluster"),
            (HttpMethod.Post, "/api/v1/hosts/h2/maintenance", """{"mode":"sideways"}""", HttpStatusCode.BadRequest, "not one of ensure-accessibility"),
            (HttpMethod.Delete, "/api/v1/hosts/h2/maintenance", null, HttpStatusCode.Conflict, "is not in maintenance"),
            (HttpMethod.Post, "/api/v1/hosts/h9/decommission", null, HttpStatusCode.NotFound, "host 'h9' is not in the cluster"),
            (HttpMethod.Get, "/api/v1/hosts/h9/decommission", null, HttpStatusCode.NotFound, "host 'h9' is not in the cluster"),
            (HttpMethod.Post, "/api/v1/hosts/h2/decommission", null, HttpStatusCode.Conflict, "cannot decommission host h2"),
            (HttpMethod.Post, "/api/v1/cluster/disks/0123456789abcdef/decommission", null, HttpStatusCode.NotFound, "is not in the cluster"),
            (HttpMethod.Get, "/api/v1/cluster/disks/nope/decommission", null, HttpStatusCode.NotFound, "disk 'nope' is not in the cluster"),
            (HttpMethod.Post, "/api/v1/cluster/rebalance", """{"thresholdPercent":0}""", HttpStatusCode.BadRequest, "thresholdPercent"),
            (HttpMethod.Post, "/api/v1/cluster/rebalance", """{"thresholdPercent":"x"}""", HttpStatusCode.BadRequest, "not a valid"),
            (HttpMethod.Get, "/api/v1/events?limit=0", null, HttpStatusCode.BadRequest, "limit"),
            (HttpMethod.Get, "/api/v1/vdisks/nope/layout", null, HttpStatusCode.NotFound, "does not exist"),
            (HttpMethod.Get, "/api/v1/hosts/h9", null, HttpStatusCode.NotFound, "not in the cluster"),
            (HttpMethod.Get, "/api/v1/nothing-here", null, HttpStatusCode.NotFound, "there is no endpoint"),
        };
        foreach (var (method, path, body, status, detail) in cases)
        {
            using var request = new HttpRequestMessage(method, path);
            if (body is not null)
            {
                request.Content = new StringContent(body, Encoding.UTF8, "application/json");
            }

            using var response = await H1.Api.SendRawAsync(request);
            var problem = await ProblemAsync(response);
            Assert.True(status == response.StatusCode, $"{method} {path} {body}: expected {(int)status}, got {(int)response.StatusCode} {problem.Detail}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            Assert.Equal((int)status, problem.Status);
            Assert.False(string.IsNullOrWhiteSpace(problem.Title));
            Assert.Contains(detail, problem.Detail, StringComparison.OrdinalIgnoreCase);
        }

        Assert.Equal(before, await SnapshotAsync());
    }

    [Fact]
    public async Task Vdisk_lifecycle_policy_change_and_events_seen_from_another_host()
    {
        var api = H1.Api;
        await api.PutPolicyAsync("limited", new PolicyInfo { FailuresToTolerate = 1, IopsLimit = 500, ObjectSpaceReservationPercent = 10 });
        await api.PutPolicyAsync("striped", new PolicyInfo { FailuresToTolerate = 1, StripeWidth = 2 });
        await api.CreateVirtualDiskAsync("life", "64MiB");
        var resized = await api.ResizeVirtualDiskAsync("life", "128MiB");
        Assert.Equal(128L << 20, resized.SizeBytes);

        // Same layout shape: committed. A different shape: 409 with the reason, nothing changes.
        var changed = await api.SetVirtualDiskPolicyAsync("life", "limited");
        Assert.Equal("limited", changed.Policy);
        Assert.Equal(resized.Generation, changed.Generation);
        var refused = await Assert.ThrowsAsync<ConvergeApiException>(() => api.SetVirtualDiskPolicyAsync("life", "striped"));
        Assert.Equal(409, refused.Status);
        Assert.Contains("online re-layout is not built yet", refused.Detail, StringComparison.Ordinal);
        Assert.Equal("limited", (await Cluster[2].Api.GetVirtualDiskAsync("life")).Policy);

        await api.DeleteVirtualDiskAsync("life");
        await api.DeletePolicyAsync("striped");

        // Events are derived from metadata on every host: h3 saw what h1 did.
        await TestCluster.Eventually(async () =>
        {
            var all = await Cluster[2].Api.ListEventsAsync();
            var kinds = all.Where(e => e.VirtualDisk == "life").Select(e => e.Kind).ToList();
            return kinds.SequenceEqual(["vdisk.created", "vdisk.resized", "vdisk.policy", "vdisk.deleted"]) &&
                   all.Any(e => e.Kind == "policy.deleted" && e.Message.Contains("striped", StringComparison.Ordinal));
        }, "h3 to list the created, resized, policy and deleted events of 'life' and the deleted policy");
        var events = await Cluster[2].Api.ListEventsAsync();
        var after = await Cluster[2].Api.ListEventsAsync(after: events[^2].Sequence);
        Assert.Equal(events[^1].Sequence, after[0].Sequence);
        Assert.All(after, e => Assert.True(e.Sequence > events[^2].Sequence));
    }

    [Fact]
    public async Task Maintenance_enter_and_exit_are_committed_and_refused_when_they_cannot_be_done()
    {
        var api = H1.Api;

        // Without h2, every FTT=1 object still has a replica and the witness: ensure-accessibility is allowed.
        var entered = await api.EnterMaintenanceAsync("h2", "ensure-accessibility");
        Assert.Equal("maintenance", entered.State);
        Assert.Equal("ensure-accessibility", entered.MaintenanceMode);
        var again = await Assert.ThrowsAsync<ConvergeApiException>(() => api.EnterMaintenanceAsync("h2", "no-data-migration"));
        Assert.Equal(409, again.Status);
        Assert.Contains("already in maintenance", again.Detail, StringComparison.Ordinal);
        await TestCluster.Eventually(async () => (await Cluster[2].Api.GetClusterHostAsync("h2")).State == "maintenance", "h3 to see h2 in maintenance");
        var health = await api.GetHealthChecksAsync();
        Assert.Equal("warning", health.Checks.Single(c => c.Name == "maintenance").Status);

        // Placement no longer uses h2: FTT=1 needs three fault domains, only two hosts are active.
        var placement = await Assert.ThrowsAsync<ConvergeApiException>(() => api.CreateVirtualDiskAsync("during", "64MiB"));
        Assert.Equal(400, placement.Status);
        Assert.Null(await api.TryGetVirtualDiskAsync("during"));

        var exited = await api.ExitMaintenanceAsync("h2");
        Assert.Equal("active", exited.State);
        Assert.Null(exited.MaintenanceMode);

        // An FTT=0 disk whose only copy is on h3: ensure-accessibility is refused there, no-data-migration is accepted.
        await api.PutPolicyAsync("single", new PolicyInfo { FailuresToTolerate = 0 });
        var single = await api.CreateVirtualDiskAsync(new CreateVirtualDiskRequest { Name = "single", Size = JsonSerializer.SerializeToElement("64MiB"), Policy = "single" });
        var holder = single.Layout!.Single().HostName;
        var refused = await Assert.ThrowsAsync<ConvergeApiException>(() => api.EnterMaintenanceAsync(holder, null));
        Assert.Equal(409, refused.Status);
        Assert.Contains("single would be inaccessible", refused.Detail, StringComparison.Ordinal);
        Assert.Equal("active", (await api.GetClusterHostAsync(holder)).State);
        Assert.Equal("no-data-migration", (await api.EnterMaintenanceAsync(holder, "no-data-migration")).MaintenanceMode);
        await api.ExitMaintenanceAsync(holder);
        await api.DeleteVirtualDiskAsync("single");
        await api.DeletePolicyAsync("single");
        await TestCluster.Eventually(
            async () => (await Cluster[1].Api.ListEventsAsync()).Count(e => e.Kind == "host.maintenance") >= 4,
            "h2 to list the maintenance events");
    }

    [Fact]
    public async Task Metrics_count_nbd_io_per_vdisk_and_report_capacity()
    {
        // 1 MiB written and read back through h2's NBD server.
        var uri = Cluster[1].NbdUri("alpha");
        (await NbdClients.QemuIoAsync(uri, ["write -P 0x5a 0 1M", "read -P 0x5a 0 1M"])).EnsureSuccess();
        var text = await Cluster[1].Http.GetStringAsync("/metrics");
        Assert.True(Metric(text, "converge_vdisk_io_bytes_total{vdisk=\"alpha\",op=\"write\"}") >= 1 << 20, text);
        Assert.True(Metric(text, "converge_vdisk_io_bytes_total{vdisk=\"alpha\",op=\"read\"}") >= 1 << 20, text);
        Assert.True(Metric(text, "converge_vdisk_io_ops_total{vdisk=\"alpha\",op=\"write\"}") >= 1, text);
        Assert.True(Metric(text, "converge_vdisk_io_latency_seconds_count{vdisk=\"alpha\",op=\"write\"}") >= 1, text);
        Assert.Contains("converge_disk_capacity_bytes{", text, StringComparison.Ordinal);
        Assert.Contains("converge_disk_checksum_errors_total{", text, StringComparison.Ordinal);
        Assert.Contains("converge_resync_bytes_total", text, StringComparison.Ordinal);
        Assert.Equal(3, Metric(text, "converge_components{state=\"active\"}"));

        // The same I/O in the per-second samples, merged by the cluster endpoint (asked on h1).
        // Samples cover complete seconds only: wait for the seconds of both the write and the
        // read (which may fall in the next second) to close.
        await TestCluster.Eventually(
            async () =>
            {
                var sampled = await H1.Api.GetPerfAsync(60);
                return sampled.VirtualDisks.Any(v => v.Name == "alpha" && v.Samples.Sum(x => x.WriteBytesPerSecond) >= 1 << 20)
                    && sampled.Hosts.Any(h => h.Name == "h2" && h.Samples.Sum(x => x.ReadBytesPerSecond) >= 1 << 20);
            },
            "alpha's write bytes and h2's read bytes in the per-second samples",
            TimeSpan.FromSeconds(10));
        var perf = await H1.Api.GetPerfAsync(60);
        var alpha = Assert.Single(perf.VirtualDisks, v => v.Name == "alpha");
        Assert.True(alpha.Samples.Sum(s => s.WriteBytesPerSecond) >= 1 << 20, "no write bytes in alpha's samples");
        Assert.True(perf.Hosts.Single(h => h.Name == "h2").Samples.Sum(s => s.ReadBytesPerSecond) >= 1 << 20, "no read bytes in h2's samples");
        Assert.Equal(0, perf.Hosts.Single(h => h.Name == "h3").Samples.Sum(s => s.ReadBytesPerSecond));
    }

    private static double Metric(string text, string series)
    {
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        Assert.True(line is not null, $"no series {series}");
        return double.Parse(line![(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>What a change would alter: virtual disks (with generation, policy, size), policies, host states, disks.</summary>
    private async Task<string> SnapshotAsync()
    {
        var status = (await H1.Api.TryGetClusterAsync())!;
        return string.Join('\n',
            status.VirtualDisks.Select(v => $"vdisk {v.Name} {v.SizeBytes} {v.Policy} {v.Generation}")
                .Concat(status.Policies.OrderBy(p => p.Name).Select(p => $"policy {p.Name} {p.FailuresToTolerate} {p.StripeWidth} {p.IopsLimit}"))
                .Concat(status.Hosts.Select(h => $"host {h.Name} {h.State} {h.MaintenanceMode}"))
                .Concat(status.Disks.Select(d => $"disk {d.Path} {d.State}")));
    }

    internal static async Task<ProblemInfo> ProblemAsync(HttpResponseMessage response)
    {
        var body = await response.Content.ReadAsStringAsync();
        return body.Length == 0 ? new ProblemInfo() : JsonSerializer.Deserialize(body, ContractsJsonContext.Default.ProblemInfo) ?? new ProblemInfo();
    }
}
