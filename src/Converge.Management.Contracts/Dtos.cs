using System.Text.Json;

namespace Converge.Management.Contracts;

/// <summary><c>GET /api/v1/health</c>: <c>ready</c> once every disk was opened (or reported) and the listeners are up.</summary>
public sealed record HealthInfo
{
    public required string Status { get; init; }
}

/// <summary><c>GET /api/v1/host</c>.</summary>
public sealed record HostInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required string Version { get; init; }

    /// <summary><c>host:port</c> of the NBD listener.</summary>
    public required string NbdEndpoint { get; init; }

    /// <summary>Base URL of this API, e.g. <c>http://127.0.0.1:7480</c>.</summary>
    public required string ApiEndpoint { get; init; }

    public required DateTimeOffset StartedAt { get; init; }
    public required int DiskCount { get; init; }
    public required int VirtualDiskCount { get; init; }

    /// <summary>
    /// Absolute data directory of the host. A CLI on the same machine reads the admin token from
    /// <c>DIR/admin-token</c> when it may (mode 0600: the same user).
    /// </summary>
    public string? DataDirectory { get; init; }
}

/// <summary>Values of <see cref="DiskInfo.State"/>.</summary>
public static class DiskStates
{
    public const string Online = "online";
    public const string Missing = "missing";
    public const string Corrupt = "corrupt";
    public const string Failed = "failed";
}

/// <summary>One physical disk (a file today) of a host.</summary>
public sealed record DiskInfo
{
    public required string Id { get; init; }
    public required string Path { get; init; }

    /// <summary>One of <see cref="DiskStates"/>.</summary>
    public required string State { get; init; }

    /// <summary>Why the disk is not online; null when it is.</summary>
    public string? Error { get; init; }

    public long CapacityBytes { get; init; }
    public long UsedBytes { get; init; }
    public long ProvisionedBytes { get; init; }
    public long FreeBytes { get; init; }
    public int ComponentCount { get; init; }
    public long ChecksumErrors { get; init; }
    public long IoErrors { get; init; }
}

/// <summary>Values of <see cref="VirtualDiskInfo.State"/>.</summary>
public static class VirtualDiskStates
{
    public const string Online = "online";
    public const string Unavailable = "unavailable";
}

public sealed record VirtualDiskInfo
{
    public required string Name { get; init; }
    public required string Id { get; init; }
    public required long SizeBytes { get; init; }
    public long UsedBytes { get; init; }

    /// <summary>One of <see cref="VirtualDiskStates"/>.</summary>
    public required string State { get; init; }

    public required string DiskId { get; init; }
    public required string DiskPath { get; init; }
    public long ChecksumErrors { get; init; }

    /// <summary>e.g. <c>nbd://127.0.0.1:10809/demo</c>.</summary>
    public required string NbdUri { get; init; }

    /// <summary>Cluster mode: the storage policy the virtual disk is placed by (null on a standalone host).</summary>
    public string? Policy { get; init; }

    /// <summary>Cluster mode: configuration generation of the layout.</summary>
    public long? Generation { get; init; }

    /// <summary>Cluster mode: every component with where it lives and its state.</summary>
    public IReadOnlyList<ComponentInfo>? Layout { get; init; }

    /// <summary>Cluster mode: <c>compliant</c> or <c>noncompliant</c> (see <see cref="ComplianceDetail"/>).</summary>
    public string? Compliance { get; init; }

    /// <summary>Why the virtual disk is not compliant; null when it is.</summary>
    public string? ComplianceDetail { get; init; }

    /// <summary>Cluster mode: the host whose lease currently coordinates the virtual disk's I/O (null when none).</summary>
    public string? Coordinator { get; init; }
}

/// <summary>One component of a virtual disk's layout (cluster mode).</summary>
public sealed record ComponentInfo
{
    public required string Id { get; init; }

    /// <summary><c>data</c> or <c>witness</c>.</summary>
    public required string Role { get; init; }

    public int Replica { get; init; }
    public int Stripe { get; init; }
    public long StripeOffset { get; init; }
    public long Length { get; init; }
    public required string HostId { get; init; }
    public required string HostName { get; init; }
    public required string FaultDomain { get; init; }
    public required string DiskId { get; init; }
    public int Votes { get; init; }

    /// <summary><c>active</c>, <c>absent</c>, <c>degraded</c>, <c>stale</c> or <c>resyncing</c>.</summary>
    public required string State { get; init; }

    /// <summary>
    /// While this component is the new copy of a make-before-break move: the id of the component it replaces (it holds
    /// no votes and serves no reads until the move completes). Null otherwise.
    /// </summary>
    public string? Replaces { get; init; }
}

/// <summary><c>GET/PUT /api/v1/policies[/{name}]</c>: the rules a virtual disk is placed and served by.</summary>
public sealed record PolicyInfo
{
    /// <summary>Taken from the URL on PUT.</summary>
    public string? Name { get; init; }

    public int FailuresToTolerate { get; init; } = 1;
    public int StripeWidth { get; init; } = 1;
    public int ObjectSpaceReservationPercent { get; init; }
    public bool ChecksumEnabled { get; init; } = true;
    public int IopsLimit { get; init; }

    /// <summary><c>raid1</c> (mirroring), <c>raid5</c> or <c>raid6</c>.</summary>
    public string Method { get; init; } = "raid1";

    /// <summary>Read only: fault domains a layout of this policy needs.</summary>
    public int RequiredFaultDomains { get; init; }

    /// <summary>Read only: the cluster's default policy.</summary>
    public bool IsDefault { get; init; }
}

/// <summary>One host of a cluster (<c>GET /api/v1/hosts</c>).</summary>
public sealed record ClusterHostInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public string? FaultDomain { get; init; }
    public required string Api { get; init; }
    public required string Nbd { get; init; }
    public required string Peer { get; init; }
    public string? Raft { get; init; }

    /// <summary>A Raft member (votes on metadata); otherwise a metadata client.</summary>
    public bool Voter { get; init; }

    /// <summary>The current metadata leader.</summary>
    public bool Leader { get; init; }

    /// <summary><c>active</c>, <c>maintenance</c>, <c>decommissioning</c> or <c>decommissioned</c>.</summary>
    public required string State { get; init; }

    /// <summary>Answered the peer protocol within 2 s just now.</summary>
    public bool Reachable { get; init; }

    public int DiskCount { get; init; }

    /// <summary>While in maintenance: <c>ensure-accessibility</c>, <c>full-data-migration</c> or <c>no-data-migration</c>.</summary>
    public string? MaintenanceMode { get; init; }

    /// <summary>Components of virtual disks placed on this host's disks.</summary>
    public int ComponentCount { get; init; }
}

/// <summary>One disk of a cluster with its usage as its host reports it.</summary>
public sealed record ClusterDiskInfo
{
    public required string Id { get; init; }
    public required string HostId { get; init; }
    public required string HostName { get; init; }
    public required string Path { get; init; }
    public required string State { get; init; }
    public long CapacityBytes { get; init; }
    public long UsedBytes { get; init; }
    public long FreeBytes { get; init; }

    /// <summary>False when the host did not report usage (the numbers are then 0 except capacity).</summary>
    public bool Reachable { get; init; }

    /// <summary>Bytes promised to components placed on this disk (their full lengths; thin, so not yet used).</summary>
    public long ProvisionedBytes { get; init; }

    public int ComponentCount { get; init; }
}

/// <summary><c>GET /api/v1/cluster</c> (cluster mode only; 404 on a standalone host).</summary>
public sealed record ClusterStatusInfo
{
    public required string ClusterId { get; init; }
    public required string Name { get; init; }
    public required string DefaultPolicy { get; init; }
    public int VoterTarget { get; init; }
    public string? Leader { get; init; }
    public long AppliedIndex { get; init; }
    public required IReadOnlyList<ClusterHostInfo> Hosts { get; init; }
    public required IReadOnlyList<ClusterDiskInfo> Disks { get; init; }
    public required IReadOnlyList<VirtualDiskInfo> VirtualDisks { get; init; }
    public required IReadOnlyList<PolicyInfo> Policies { get; init; }

    /// <summary>Sum over every disk of the cluster (free and used only over disks whose host answered).</summary>
    public long CapacityBytes { get; init; }
    public long UsedBytes { get; init; }
    public long ProvisionedBytes { get; init; }
    public long FreeBytes { get; init; }
}

/// <summary>
/// <c>POST /internal/v1/cluster/join</c> (host RPC, mutual TLS with the certificate the join token got): a new host asks
/// to join (sent by <c>converge host run --join</c>).
/// </summary>
public sealed record JoinRequest
{
    public required string HostId { get; init; }
    public required string Name { get; init; }
    public string? FaultDomain { get; init; }
    public required string Api { get; init; }
    public required string Nbd { get; init; }
    public required string Peer { get; init; }

    /// <summary>The joiner's Raft endpoint (it runs a member that waits to be added), or null to join as a client.</summary>
    public string? Raft { get; init; }

    /// <summary>The joiner's host RPC URL (<c>https://ADDR:PORT</c>).</summary>
    public string? Rpc { get; init; }
}

public sealed record JoinResponse
{
    /// <summary><c>voter</c> or <c>client</c>.</summary>
    public required string Role { get; init; }

    public required string ClusterId { get; init; }

    /// <summary>RPC URLs of the metadata members (where a client reads and proposes).</summary>
    public required IReadOnlyList<string> Members { get; init; }

    /// <summary>The cluster CA key (PEM), sent only to a host that becomes a Raft voter: voters sign joins.</summary>
    public string? CaKey { get; init; }
}

/// <summary><c>GET /internal/v1/components/{id}/digest</c>: SHA-256 of a component's contents read from the local store.</summary>
public sealed record ComponentDigestInfo
{
    public required string ComponentId { get; init; }
    public required string Name { get; init; }
    public long SizeBytes { get; init; }
    public required string Sha256 { get; init; }
}

/// <summary><c>POST /api/v1/vdisks</c>. <see cref="Size"/> is a size string (<c>"10GiB"</c>) or a number of bytes.</summary>
public sealed record CreateVirtualDiskRequest
{
    public required string Name { get; init; }
    public JsonElement Size { get; init; }

    /// <summary>Cluster mode: storage policy name (default: the cluster's default policy).</summary>
    public string? Policy { get; init; }

    public static CreateVirtualDiskRequest Create(string name, string size) =>
        new() { Name = name, Size = JsonSerializer.SerializeToElement(size, ContractsJsonContext.Default.String) };

    public static CreateVirtualDiskRequest Create(string name, long sizeBytes) =>
        new() { Name = name, Size = JsonSerializer.SerializeToElement(sizeBytes, ContractsJsonContext.Default.Int64) };
}

/// <summary><c>PATCH /api/v1/vdisks/{name}</c>.</summary>
public sealed record ResizeVirtualDiskRequest
{
    public required string Size { get; init; }
}

/// <summary><c>POST /api/v1/disks</c>. Without <see cref="Size"/> an existing formatted disk is adopted.</summary>
public sealed record AddDiskRequest
{
    public required string Path { get; init; }
    public string? Size { get; init; }
}

/// <summary>RFC 7807 problem details as the API returns them.</summary>
public sealed record ProblemInfo
{
    public string? Type { get; init; }
    public string? Title { get; init; }
    public int? Status { get; init; }
    public string? Detail { get; init; }
}

/// <summary>What <c>converge status --json</c> prints.</summary>
public sealed record StatusInfo
{
    public required HostInfo Host { get; init; }
    public required IReadOnlyList<DiskInfo> Disks { get; init; }
    public required IReadOnlyList<VirtualDiskInfo> VirtualDisks { get; init; }

    /// <summary>Cluster mode: the cluster view (hosts, all disks, policies).</summary>
    public ClusterStatusInfo? Cluster { get; init; }
}

/// <summary><c>DIR/cluster.json</c>, written by <c>converge up</c> and read by <c>converge down</c> and the CLI's default <c>--api</c>.</summary>
public sealed record ClusterFile
{
    public required IReadOnlyList<ClusterHostEntry> Hosts { get; init; }
}

public sealed record ClusterHostEntry
{
    public required string Name { get; init; }
    public required int Pid { get; init; }

    /// <summary>API base URL, e.g. <c>http://127.0.0.1:7480</c>.</summary>
    public required string Api { get; init; }

    /// <summary>NBD <c>host:port</c>, e.g. <c>127.0.0.1:10809</c>.</summary>
    public required string Nbd { get; init; }

    /// <summary>Absolute data directory of the host.</summary>
    public required string Data { get; init; }
}

/// <summary><c>POST /api/v1/hosts/{name}/maintenance</c>.</summary>
public sealed record MaintenanceRequest
{
    /// <summary><c>ensure-accessibility</c> (default), <c>full-data-migration</c> or <c>no-data-migration</c>.</summary>
    public string? Mode { get; init; }
}

/// <summary><c>PUT /api/v1/vdisks/{name}/policy</c>.</summary>
public sealed record SetPolicyRequest
{
    public required string Policy { get; init; }
}

/// <summary><c>GET /api/v1/fault-domains</c>: hosts grouped by fault domain (a host without one is its own).</summary>
public sealed record FaultDomainInfo
{
    public required string Name { get; init; }
    public required IReadOnlyList<string> Hosts { get; init; }

    /// <summary>False when the domain was derived from a host with no explicit fault domain.</summary>
    public bool Explicit { get; init; }
}

/// <summary><c>GET /api/v1/compliance</c>: one line per virtual disk.</summary>
public sealed record ComplianceInfo
{
    public required string VirtualDisk { get; init; }
    public required string Policy { get; init; }

    /// <summary><c>compliant</c> or <c>noncompliant</c>.</summary>
    public required string Compliance { get; init; }

    public string? Detail { get; init; }

    /// <summary><c>online</c> or <c>unavailable</c>.</summary>
    public required string State { get; init; }

    public int ActiveComponents { get; init; }
    public int Components { get; init; }
}

/// <summary>One event derived from a metadata change (<c>GET /api/v1/events</c>).</summary>
public sealed record EventInfo
{
    /// <summary>Increases by one per event on the answering host (since it started).</summary>
    public long Sequence { get; init; }

    public DateTimeOffset Time { get; init; }

    /// <summary><c>info</c>, <c>warning</c> or <c>error</c>.</summary>
    public required string Severity { get; init; }

    /// <summary>e.g. <c>vdisk.created</c>, <c>component.state</c>, <c>host.maintenance</c>.</summary>
    public required string Kind { get; init; }

    public required string Message { get; init; }
    public string? VirtualDisk { get; init; }
    public string? Host { get; init; }
}

/// <summary>One check of <c>GET /api/v1/health/checks</c>.</summary>
public sealed record HealthCheckInfo
{
    /// <summary>Stable id, e.g. <c>host-connectivity</c>.</summary>
    public required string Name { get; init; }

    public required string Title { get; init; }

    /// <summary><c>ok</c>, <c>warning</c> or <c>error</c>.</summary>
    public required string Status { get; init; }

    public required string Message { get; init; }

    /// <summary>What to do about it in plain words (empty when ok).</summary>
    public required string Remedy { get; init; }
}

/// <summary><c>GET /api/v1/health/checks</c>: the worst status and every check.</summary>
public sealed record HealthReport
{
    public required string Status { get; init; }
    public required string Host { get; init; }
    public DateTimeOffset CheckedAt { get; init; }
    public required IReadOnlyList<HealthCheckInfo> Checks { get; init; }
}

/// <summary>One running copy (resync, rebuild, reconcile, repair).</summary>
public sealed record ResyncInfo
{
    public required string VirtualDiskId { get; init; }
    public required string VirtualDisk { get; init; }
    public required string ComponentId { get; init; }
    public required string TargetHostId { get; init; }
    public string? TargetHost { get; init; }

    /// <summary>The host running the copy (the virtual disk's coordinator).</summary>
    public string? Host { get; init; }

    /// <summary><c>resync</c>, <c>rebuild</c>, <c>reconcile</c>, <c>repair</c> or <c>move</c> (the new copy of a make-before-break move).</summary>
    public required string Kind { get; init; }

    public long TotalBytes { get; init; }
    public long DoneBytes { get; init; }
    public double BytesPerSecond { get; init; }
    public double? EtaSeconds { get; init; }
    public DateTimeOffset StartedAt { get; init; }
}

/// <summary><c>GET /api/v1/resync</c> (cluster, merged over hosts) and <c>/internal/v1/resync</c> (one host).</summary>
public sealed record ResyncReport
{
    public long TotalBytes { get; init; }
    public long DoneBytes { get; init; }
    public long RemainingBytes { get; init; }
    public double BytesPerSecond { get; init; }
    public double? EtaSeconds { get; init; }

    /// <summary>Bytes copied by resyncs since each host started, summed.</summary>
    public long BytesCopied { get; init; }

    /// <summary>Copies finished since each host started, summed.</summary>
    public long CopiesCompleted { get; init; }

    /// <summary>Bad blocks rewritten from a good replica since each host started, summed.</summary>
    public long Repairs { get; init; }

    public required IReadOnlyList<ResyncInfo> Copies { get; init; }

    /// <summary>Hosts that did not answer (their copies are missing from the list).</summary>
    public IReadOnlyList<string> UnreachableHosts { get; init; } = [];
}

/// <summary>One second of I/O as the NBD front end of a host saw it.</summary>
public sealed record PerfSample
{
    /// <summary>Unix time in seconds (the second the sample covers).</summary>
    public long Time { get; init; }

    public double ReadIops { get; init; }
    public double WriteIops { get; init; }

    /// <summary>Other requests: flush, trim, write-zeroes, block status.</summary>
    public double OtherIops { get; init; }

    public double ReadBytesPerSecond { get; init; }
    public double WriteBytesPerSecond { get; init; }

    /// <summary>Mean request latency over the second, milliseconds (0 without requests).</summary>
    public double LatencyMs { get; init; }
}

/// <summary>A series of <see cref="PerfSample"/> for one host or one virtual disk.</summary>
public sealed record PerfSeries
{
    public required string Name { get; init; }
    public required IReadOnlyList<PerfSample> Samples { get; init; }
}

/// <summary><c>GET /api/v1/perf</c>: per-second samples of the last minutes, per host and per virtual disk.</summary>
public sealed record PerfReport
{
    public int Seconds { get; init; }
    public required IReadOnlyList<PerfSeries> Hosts { get; init; }
    public required IReadOnlyList<PerfSeries> VirtualDisks { get; init; }
    public IReadOnlyList<string> UnreachableHosts { get; init; } = [];
}

/// <summary><c>GET /internal/v1/perf</c>: one host's samples per virtual disk.</summary>
public sealed record HostPerfInfo
{
    public required string Host { get; init; }
    public required IReadOnlyList<PerfSeries> VirtualDisks { get; init; }
}

/// <summary><c>GET /internal/v1/resync</c>: the copies one host runs now and what it has copied since it started.</summary>
public sealed record HostResyncState
{
    public IReadOnlyList<HostResyncCopy> Running { get; init; } = [];
    public long BytesCopied { get; init; }
    public long CopiesCompleted { get; init; }
    public long Repairs { get; init; }
    public long RepairedBytes { get; init; }
    public long ScrubbedBytes { get; init; }
    public long ScrubErrors { get; init; }
    public long ScrubPasses { get; init; }
}

/// <summary>One entry of <see cref="HostResyncState.Running"/>.</summary>
public sealed record HostResyncCopy
{
    public required string VirtualDiskId { get; init; }
    public required string VirtualDiskName { get; init; }
    public required string ComponentId { get; init; }
    public required string TargetHostId { get; init; }
    public required string Kind { get; init; }
    public long TotalBytes { get; init; }
    public long DoneBytes { get; init; }
    public long RemainingBytes { get; init; }
    public double BytesPerSecond { get; init; }
    public double? EtaSeconds { get; init; }
    public DateTimeOffset StartedAt { get; init; }
}

/// <summary>
/// <c>POST/GET /api/v1/hosts/{name}/decommission</c> and <c>POST/GET /api/v1/cluster/disks/{id}/decommission</c>:
/// how far emptying a host or a disk has come.
/// </summary>
public sealed record DecommissionInfo
{
    /// <summary><c>host</c> or <c>disk</c>.</summary>
    public required string Kind { get; init; }

    /// <summary>The host's name, or the disk's id.</summary>
    public required string Target { get; init; }

    /// <summary>
    /// Host: <c>decommissioning</c>, then <c>decommissioned</c> once empty. Disk: <c>evacuating</c>, then <c>removed</c>.
    /// </summary>
    public required string State { get; init; }

    /// <summary>Components still placed there (they leave by make-before-break moves, or rebuilds for failed ones).</summary>
    public int ComponentsLeft { get; init; }

    /// <summary>Moves under way off this host or disk right now.</summary>
    public int Moving { get; init; }

    /// <summary>Nothing is left: the host is decommissioned / the disk removed.</summary>
    public bool Done { get; init; }
}

/// <summary><c>POST /api/v1/cluster/rebalance</c>.</summary>
public sealed record RebalanceRequest
{
    /// <summary>Only compute and return the plan; change nothing.</summary>
    public bool DryRun { get; init; }

    /// <summary>Balanced when the fullest and emptiest disks differ by at most this many percentage points (default 10).</summary>
    public double? ThresholdPercent { get; init; }
}

/// <summary>One planned move of a rebalance.</summary>
public sealed record RebalanceMoveInfo
{
    public required string VirtualDisk { get; init; }
    public required string ComponentId { get; init; }
    public required string FromHost { get; init; }
    public required string FromDisk { get; init; }
    public required string ToHost { get; init; }
    public required string ToDisk { get; init; }
    public long Bytes { get; init; }
}

/// <summary><c>GET/POST/DELETE /api/v1/cluster/rebalance</c>: the rebalance state and the plan from here.</summary>
public sealed record RebalanceInfo
{
    /// <summary>
    /// <c>running</c> (the leader moves components one at a time), <c>balanced</c> (nothing can move: within the
    /// threshold, or no move would keep the rules) or <c>unbalanced</c> (moves are possible; not running).
    /// </summary>
    public required string State { get; init; }

    public double ThresholdPercent { get; init; }

    /// <summary>Percentage points between the fullest and the emptiest usable disk (provisioned bytes over capacity).</summary>
    public double SpreadPercent { get; init; }

    /// <summary>The spread once the planned moves are done.</summary>
    public double PlannedSpreadPercent { get; init; }

    /// <summary>Moves under way in the cluster right now (rebalance, decommission or evacuation).</summary>
    public int MovesInFlight { get; init; }

    /// <summary>The plan from the current state (recomputed after every move).</summary>
    public IReadOnlyList<RebalanceMoveInfo> Moves { get; init; } = [];
}
