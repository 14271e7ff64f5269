using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Converge.Management.Contracts;

/// <summary>
/// The management API of one host, typed. <see cref="HttpClient.BaseAddress"/> must be the API base URL
/// (e.g. <c>http://127.0.0.1:7480</c>). Every method throws <see cref="ConvergeApiException"/> when the host
/// answers with an error (its <see cref="ConvergeApiException.Detail"/> is the message to show) and
/// <see cref="HttpRequestException"/> when the host cannot be reached.
/// </summary>
public sealed partial class ConvergeApiClient
{
    private readonly HttpClient http;

    public ConvergeApiClient(HttpClient http, string? token = null)
    {
        ArgumentNullException.ThrowIfNull(http);
        this.http = http;
        Token = token;
    }

    /// <summary>The bearer token sent with every request (changes need an admin token, reads beyond loopback any token); null sends none.</summary>
    public string? Token { get; set; }

    /// <summary>Sends a request with the token attached (for callers that need the raw response).</summary>
    public Task<HttpResponseMessage> SendRawAsync(HttpRequestMessage request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        Authorize(request);
        return http.SendAsync(request, cancellationToken);
    }

    public Task<HealthInfo> GetHealthAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/health", ContractsJsonContext.Default.HealthInfo, cancellationToken);

    public Task<HostInfo> GetHostAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/host", ContractsJsonContext.Default.HostInfo, cancellationToken);

    public Task<IReadOnlyList<DiskInfo>> ListDisksAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/disks", ContractsJsonContext.Default.IReadOnlyListDiskInfo, cancellationToken);

    public Task<DiskInfo> AddDiskAsync(string path, string? size, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Post,
            "/api/v1/disks",
            JsonContent.Create(new AddDiskRequest { Path = path, Size = size }, ContractsJsonContext.Default.AddDiskRequest),
            ContractsJsonContext.Default.DiskInfo,
            cancellationToken);

    public Task<IReadOnlyList<VirtualDiskInfo>> ListVirtualDisksAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/vdisks", ContractsJsonContext.Default.IReadOnlyListVirtualDiskInfo, cancellationToken);

    public Task<VirtualDiskInfo> GetVirtualDiskAsync(string name, CancellationToken cancellationToken = default) =>
        GetAsync(VirtualDiskPath(name), ContractsJsonContext.Default.VirtualDiskInfo, cancellationToken);

    /// <summary>Like <see cref="GetVirtualDiskAsync"/>, but null when the host answers 404.</summary>
    public async Task<VirtualDiskInfo?> TryGetVirtualDiskAsync(string name, CancellationToken cancellationToken = default)
    {
        try
        {
            return await GetVirtualDiskAsync(name, cancellationToken).ConfigureAwait(false);
        }
        catch (ConvergeApiException e) when (e.Status == (int)HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    /// <summary>Creates a virtual disk; <paramref name="size"/> is a size string such as <c>10GiB</c>.</summary>
    public Task<VirtualDiskInfo> CreateVirtualDiskAsync(string name, string size, CancellationToken cancellationToken = default) =>
        CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create(name, size), cancellationToken);

    public Task<VirtualDiskInfo> CreateVirtualDiskAsync(string name, long sizeBytes, CancellationToken cancellationToken = default) =>
        CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create(name, sizeBytes), cancellationToken);

    public Task<VirtualDiskInfo> CreateVirtualDiskAsync(CreateVirtualDiskRequest request, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Post,
            "/api/v1/vdisks",
            JsonContent.Create(request, ContractsJsonContext.Default.CreateVirtualDiskRequest),
            ContractsJsonContext.Default.VirtualDiskInfo,
            cancellationToken);

    public Task<VirtualDiskInfo> ResizeVirtualDiskAsync(string name, string size, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Patch,
            VirtualDiskPath(name),
            JsonContent.Create(new ResizeVirtualDiskRequest { Size = size }, ContractsJsonContext.Default.ResizeVirtualDiskRequest),
            ContractsJsonContext.Default.VirtualDiskInfo,
            cancellationToken);

    public async Task DeleteVirtualDiskAsync(string name, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Delete, VirtualDiskPath(name));
        Authorize(request);
        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        await ThrowIfErrorAsync(request, response, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Cluster mode only: the cluster view; null when the host is standalone (404).</summary>
    public async Task<ClusterStatusInfo?> TryGetClusterAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await GetAsync("/api/v1/cluster", ContractsJsonContext.Default.ClusterStatusInfo, cancellationToken).ConfigureAwait(false);
        }
        catch (ConvergeApiException e) when (e.Status == (int)HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    public Task<IReadOnlyList<ClusterHostInfo>> ListHostsAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/hosts", ContractsJsonContext.Default.IReadOnlyListClusterHostInfo, cancellationToken);

    public Task<IReadOnlyList<PolicyInfo>> ListPoliciesAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/policies", ContractsJsonContext.Default.IReadOnlyListPolicyInfo, cancellationToken);

    public Task<PolicyInfo> GetPolicyAsync(string name, CancellationToken cancellationToken = default) =>
        GetAsync(PolicyPath(name), ContractsJsonContext.Default.PolicyInfo, cancellationToken);

    /// <summary>Creates or replaces a policy (the name comes from <paramref name="name"/>).</summary>
    public Task<PolicyInfo> PutPolicyAsync(string name, PolicyInfo policy, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Put,
            PolicyPath(name),
            JsonContent.Create(policy, ContractsJsonContext.Default.PolicyInfo),
            ContractsJsonContext.Default.PolicyInfo,
            cancellationToken);

    public async Task DeletePolicyAsync(string name, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Delete, PolicyPath(name));
        Authorize(request);
        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        await ThrowIfErrorAsync(request, response, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Internal endpoint (cluster mode): SHA-256 of a component this host stores.</summary>
    public Task<ComponentDigestInfo> GetComponentDigestAsync(string componentId, CancellationToken cancellationToken = default) =>
        GetAsync("/internal/v1/components/" + Uri.EscapeDataString(componentId) + "/digest", ContractsJsonContext.Default.ComponentDigestInfo, cancellationToken);

    /// <summary>Points a virtual disk at another policy with the same layout shape (409 when a re-layout would be needed).</summary>
    public Task<VirtualDiskInfo> SetVirtualDiskPolicyAsync(string name, string policy, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Put,
            VirtualDiskPath(name) + "/policy",
            JsonContent.Create(new SetPolicyRequest { Policy = policy }, ContractsJsonContext.Default.SetPolicyRequest),
            ContractsJsonContext.Default.VirtualDiskInfo,
            cancellationToken);

    public Task<IReadOnlyList<ComponentInfo>> GetLayoutAsync(string name, CancellationToken cancellationToken = default) =>
        GetAsync(VirtualDiskPath(name) + "/layout", ContractsJsonContext.Default.IReadOnlyListComponentInfo, cancellationToken);

    public Task<IReadOnlyList<ComplianceInfo>> GetComplianceAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/compliance", ContractsJsonContext.Default.IReadOnlyListComplianceInfo, cancellationToken);

    public Task<IReadOnlyList<FaultDomainInfo>> ListFaultDomainsAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/fault-domains", ContractsJsonContext.Default.IReadOnlyListFaultDomainInfo, cancellationToken);

    public Task<ClusterHostInfo> EnterMaintenanceAsync(string host, string? mode, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Post,
            HostPath(host) + "/maintenance",
            JsonContent.Create(new MaintenanceRequest { Mode = mode }, ContractsJsonContext.Default.MaintenanceRequest),
            ContractsJsonContext.Default.ClusterHostInfo,
            cancellationToken);

    public Task<ClusterHostInfo> ExitMaintenanceAsync(string host, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Delete, HostPath(host) + "/maintenance", content: null, ContractsJsonContext.Default.ClusterHostInfo, cancellationToken);

    /// <summary>Starts emptying a host (409 when it cannot be emptied or is a Raft voter); returns the progress.</summary>
    public Task<DecommissionInfo> DecommissionHostAsync(string host, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, HostPath(host) + "/decommission", content: null, ContractsJsonContext.Default.DecommissionInfo, cancellationToken);

    public Task<DecommissionInfo> GetHostDecommissionAsync(string host, CancellationToken cancellationToken = default) =>
        GetAsync(HostPath(host) + "/decommission", ContractsJsonContext.Default.DecommissionInfo, cancellationToken);

    /// <summary>Starts emptying a disk of the cluster (by id); returns the progress.</summary>
    public Task<DecommissionInfo> DecommissionDiskAsync(string diskId, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, ClusterDiskPath(diskId) + "/decommission", content: null, ContractsJsonContext.Default.DecommissionInfo, cancellationToken);

    public Task<DecommissionInfo> GetDiskDecommissionAsync(string diskId, CancellationToken cancellationToken = default) =>
        GetAsync(ClusterDiskPath(diskId) + "/decommission", ContractsJsonContext.Default.DecommissionInfo, cancellationToken);

    /// <summary>Plans (dry run) or starts a rebalance.</summary>
    public Task<RebalanceInfo> RebalanceAsync(bool dryRun, double? thresholdPercent = null, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Post,
            "/api/v1/cluster/rebalance",
            JsonContent.Create(new RebalanceRequest { DryRun = dryRun, ThresholdPercent = thresholdPercent }, ContractsJsonContext.Default.RebalanceRequest),
            ContractsJsonContext.Default.RebalanceInfo,
            cancellationToken);

    public Task<RebalanceInfo> GetRebalanceAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/cluster/rebalance", ContractsJsonContext.Default.RebalanceInfo, cancellationToken);

    public Task<RebalanceInfo> StopRebalanceAsync(CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Delete, "/api/v1/cluster/rebalance", content: null, ContractsJsonContext.Default.RebalanceInfo, cancellationToken);

    public Task<ClusterHostInfo> GetClusterHostAsync(string host, CancellationToken cancellationToken = default) =>
        GetAsync(HostPath(host), ContractsJsonContext.Default.ClusterHostInfo, cancellationToken);

    /// <summary>Events, newest last; <paramref name="after"/> returns only those with a larger sequence.</summary>
    public Task<IReadOnlyList<EventInfo>> ListEventsAsync(long? after = null, int? limit = null, CancellationToken cancellationToken = default)
    {
        var query = new List<string>();
        if (after is { } a)
        {
            query.Add("after=" + a.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (limit is { } l)
        {
            query.Add("limit=" + l.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        return GetAsync("/api/v1/events" + (query.Count == 0 ? string.Empty : "?" + string.Join('&', query)), ContractsJsonContext.Default.IReadOnlyListEventInfo, cancellationToken);
    }

    public Task<HealthReport> GetHealthChecksAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/health/checks", ContractsJsonContext.Default.HealthReport, cancellationToken);

    public Task<ResyncReport> GetResyncAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/resync", ContractsJsonContext.Default.ResyncReport, cancellationToken);

    public Task<PerfReport> GetPerfAsync(int seconds = 120, CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/perf?seconds=" + seconds.ToString(System.Globalization.CultureInfo.InvariantCulture), ContractsJsonContext.Default.PerfReport, cancellationToken);

    public Task<IReadOnlyList<ApiTokenInfo>> ListTokensAsync(CancellationToken cancellationToken = default) =>
        GetAsync("/api/v1/tokens", ContractsJsonContext.Default.IReadOnlyListApiTokenInfo, cancellationToken);

    /// <summary>Makes a token with <paramref name="role"/> (<c>admin</c> or <c>read-only</c>); the answer holds its secret, once.</summary>
    public Task<CreatedApiTokenInfo> CreateTokenAsync(string name, string role, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Post,
            "/api/v1/tokens",
            JsonContent.Create(new CreateApiTokenRequest { Name = name, Role = role }, ContractsJsonContext.Default.CreateApiTokenRequest),
            ContractsJsonContext.Default.CreatedApiTokenInfo,
            cancellationToken);

    public async Task RevokeTokenAsync(string id, CancellationToken cancellationToken = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Delete, "/api/v1/tokens/" + Uri.EscapeDataString(id));
        Authorize(request);
        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        await ThrowIfErrorAsync(request, response, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Replaces the admin token this client sends by a new one (returned once); the old one stops working.</summary>
    public Task<CreatedApiTokenInfo> RotateAdminTokenAsync(CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, "/api/v1/tokens/admin/rotate", content: null, ContractsJsonContext.Default.CreatedApiTokenInfo, cancellationToken);

    private static string HostPath(string name) => "/api/v1/hosts/" + Uri.EscapeDataString(name);

    private static string ClusterDiskPath(string diskId) => "/api/v1/cluster/disks/" + Uri.EscapeDataString(diskId);

    /// <summary>Header the API requires on changes that have no JSON body, so that a cross-site HTML form cannot make them.</summary>
    public const string ClientHeader = "X-Converge-Client";

    private void Authorize(HttpRequestMessage request)
    {
        request.Headers.TryAddWithoutValidation(ClientHeader, "1");
        if (!string.IsNullOrEmpty(Token))
        {
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Token);
        }
    }

    private static string PolicyPath(string name) => "/api/v1/policies/" + Uri.EscapeDataString(name);

    private static string VirtualDiskPath(string name) => "/api/v1/vdisks/" + Uri.EscapeDataString(name);

    private async Task<T> GetAsync<T>(string path, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken) =>
        await SendAsync(HttpMethod.Get, path, content: null, typeInfo, cancellationToken).ConfigureAwait(false);

    private async Task<T> SendAsync<T>(
        HttpMethod method, string path, HttpContent? content, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        Authorize(request);
        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        await ThrowIfErrorAsync(request, response, cancellationToken).ConfigureAwait(false);
        try
        {
            var result = await response.Content.ReadFromJsonAsync(typeInfo, cancellationToken).ConfigureAwait(false);
            return result ?? throw new ConvergeApiException(
                (int)response.StatusCode, "Empty response", $"{method} {path} returned no body");
        }
        catch (JsonException e)
        {
            throw new ConvergeApiException(
                (int)response.StatusCode, "Unreadable response", $"{method} {path} returned a body that is not the expected JSON: {e.Message}");
        }
    }

    private static async Task ThrowIfErrorAsync(HttpRequestMessage request, HttpResponseMessage response, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        var status = (int)response.StatusCode;
        var title = response.ReasonPhrase ?? response.StatusCode.ToString();
        var detail = $"{request.Method} {request.RequestUri} failed with HTTP {status} {title}";
        var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        if (body.Length > 0)
        {
            try
            {
                var problem = JsonSerializer.Deserialize(body, ContractsJsonContext.Default.ProblemInfo);
                if (problem is not null)
                {
                    title = problem.Title ?? title;
                    detail = problem.Detail ?? problem.Title ?? detail;
                }
            }
            catch (JsonException)
            {
                detail = $"{detail}: {Truncate(body, 300)}";
            }
        }

        throw new ConvergeApiException(status, title, detail);
    }

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max] + "…";
}

/// <summary>The host refused or failed a request; <see cref="Detail"/> says why in words meant for an operator.</summary>
public sealed class ConvergeApiException : Exception
{
    public ConvergeApiException(int status, string title, string detail)
        : base(detail)
    {
        Status = status;
        Title = title;
        Detail = detail;
    }

    public int Status { get; }
    public string Title { get; }
    public string Detail { get; }
}
