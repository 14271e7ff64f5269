using System.Collections.Immutable;
using Converge.Placement;

namespace Converge.Metadata;

/// <summary>The cluster itself: set once by <see cref="InitializeCluster"/>.</summary>
/// <param name="VoterTarget">How many hosts are Raft members: 3 or 5 (1 for a single-host lab).</param>
/// <param name="AdminTokenHash">
/// Unsalted SHA-256 (lower-case hex) of the admin token of a cluster founded before salted tokens
/// (<see cref="ClusterState.ApiTokens"/>): still accepted, listed as <see cref="ApiTokenRoles.LegacyAdminId"/>, cleared
/// when that token is revoked or rotated. Never set for clusters founded since. Never served by the management API.
/// </param>
/// <param name="CaFingerprint">SHA-256 (hex) of the cluster CA certificate <paramref name="CaCertificatePem"/>; the founder checks it is its own.</param>
public sealed record ClusterInfo(
    string ClusterId,
    string Name,
    DateTimeOffset CreatedAt,
    string DefaultPolicyName,
    int VoterTarget,
    string? AdminTokenHash = null,
    string? CaCertificatePem = null,
    string? CaFingerprint = null);

public enum HostState
{
    Active,
    Maintenance,
    Decommissioned,

    /// <summary>Being emptied by make-before-break moves; committed <see cref="Decommissioned"/> once no component is left.</summary>
    Decommissioning,
}

/// <summary>Where a host listens. <see cref="Raft"/> is null for hosts that are metadata clients, not Raft members.</summary>
/// <param name="Rpc">Host-to-host RPC (<c>/internal/v1</c>, mutual TLS) as an https URL; null for hosts from before it existed.</param>
public sealed record HostEndpoints(string Api, string Nbd, string PeerData, string? Raft, string? Rpc = null);

/// <param name="MaintenanceMode">
/// While <see cref="State"/> is <see cref="HostState.Maintenance"/>: how the operator asked to enter it
/// (<see cref="MaintenanceModes"/>); null otherwise.
/// </param>
public sealed record HostRecord(
    string HostId,
    string Name,
    string? FaultDomain,
    HostEndpoints Endpoints,
    bool Voter,
    HostState State,
    DateTimeOffset JoinedAt,
    string? MaintenanceMode = null);

/// <summary>How a host enters maintenance (what the data of its components should do meanwhile).</summary>
public static class MaintenanceModes
{
    /// <summary>Every virtual disk stays accessible without the host (no full copy is made).</summary>
    public const string EnsureAccessibility = "ensure-accessibility";

    /// <summary>Every component on the host is moved elsewhere first.</summary>
    public const string FullDataMigration = "full-data-migration";

    /// <summary>Nothing moves; virtual disks may become inaccessible.</summary>
    public const string NoDataMigration = "no-data-migration";

    public static readonly IReadOnlyList<string> All = [EnsureAccessibility, FullDataMigration, NoDataMigration];
}

/// <summary>
/// <see cref="Evacuating"/>: being decommissioned (its components move away; nothing new is placed there);
/// <see cref="Removed"/>: decommissioned and empty. The record stays as a tombstone so that its host does not register
/// the disk again when it restarts.
/// </summary>
public enum DiskState
{
    Online,
    Missing,
    Corrupt,
    Failed,
    Evacuating,
    Removed,
}

/// <summary>A disk of a host. Usage is not replicated (it changes with every write); hosts report it directly.</summary>
/// <param name="DiskId">The store's disk Guid in "N" format.</param>
public sealed record DiskRecord(string DiskId, string HostId, string Path, long CapacityBytes, DiskState State);

public enum ComponentState
{
    Active,
    Absent,
    Degraded,
    Stale,
    Resyncing,
}

/// <summary>The right to coordinate one virtual disk's I/O until <see cref="ExpiresAt"/> (a time carried by the command).</summary>
public sealed record CoordinatorLease(string HostId, long Epoch, DateTimeOffset ExpiresAt)
{
    public bool IsExpiredAt(DateTimeOffset now) => now >= ExpiresAt;
}

/// <summary>A virtual disk: one object with its layout and the state of each component.</summary>
/// <param name="VirtualDiskId">The object id, a Guid in "N" format (equals <see cref="ObjectLayout.ObjectId"/>).</param>
/// <param name="ComponentStates">State per component, keyed by component Guid in "N" format.</param>
/// <param name="Generation">Configuration generation: bumped by every layout or component-state change.</param>
/// <param name="Lease">The current coordinator lease, or null when released (an expired lease stays until replaced).</param>
/// <param name="LeaseEpoch">The highest coordinator epoch ever granted; survives release so epochs never repeat.</param>
public sealed record VirtualDiskRecord(
    string VirtualDiskId,
    string Name,
    long SizeBytes,
    string PolicyName,
    ObjectLayout Layout,
    ImmutableSortedDictionary<string, ComponentState> ComponentStates,
    long Generation,
    CoordinatorLease? Lease,
    long LeaseEpoch,
    DateTimeOffset CreatedAt)
{
    public ComponentState StateOf(Guid componentId) =>
        ComponentStates.TryGetValue(ComponentKey(componentId), out var state) ? state : ComponentState.Absent;

    public static string ComponentKey(Guid componentId) => componentId.ToString("N");
}

/// <summary>A rebalance the operator asked for: the leader moves components until the spread is within the threshold.</summary>
public sealed record RebalanceRun(DateTimeOffset RequestedAt, double ThresholdPercent);
