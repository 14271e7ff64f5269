using System.Collections.Immutable;
using System.Text.Json;
using Converge.Placement;

namespace Converge.Metadata;

/// <summary>
/// The replicated cluster metadata: an immutable value changed only by <see cref="Apply"/>, plus the Raft index it
/// was applied at. Collections are sorted by ordinal key so that equal states serialize to equal bytes.
/// </summary>
public sealed partial record ClusterState
{
    /// <summary>How many successfully applied command ids are remembered to deduplicate retried proposals.</summary>
    public const int DedupeWindow = 4096;

    public static ClusterState Empty { get; } = new();

    /// <summary>Raft index of the last log entry applied to this state (0 before any).</summary>
    public long AppliedIndex { get; init; }

    public ClusterInfo? Cluster { get; init; }

    public ImmutableSortedDictionary<string, HostRecord> Hosts { get; init; } = EmptyMap<HostRecord>();

    public ImmutableSortedDictionary<string, DiskRecord> Disks { get; init; } = EmptyMap<DiskRecord>();

    public ImmutableSortedDictionary<string, StoragePolicy> Policies { get; init; } = EmptyMap<StoragePolicy>();

    public ImmutableSortedDictionary<string, VirtualDiskRecord> VirtualDisks { get; init; } = EmptyMap<VirtualDiskRecord>();

    /// <summary>The rebalance under way, or null.</summary>
    public RebalanceRun? Rebalance { get; init; }

    /// <summary>Results of the most recent successful commands, oldest first, at most <see cref="DedupeWindow"/>.</summary>
    public ImmutableList<AppliedCommand> RecentCommands { get; init; } = [];

    public VirtualDiskRecord? FindVirtualDiskByName(string name) =>
        VirtualDisks.Values.FirstOrDefault(v => string.Equals(v.Name, name, StringComparison.Ordinal));

    public HostRecord? FindHostByName(string name) =>
        Hosts.Values.FirstOrDefault(h => string.Equals(h.Name, name, StringComparison.Ordinal));

    /// <summary>
    /// Whether a component must leave where it is: its host is being decommissioned or is in maintenance with full data
    /// migration, or its disk is being decommissioned.
    /// </summary>
    public bool MustEvacuate(ComponentPlacement component)
    {
        var host = Hosts.GetValueOrDefault(component.HostId);
        return host?.State == HostState.Decommissioning ||
               (host?.State == HostState.Maintenance && host.MaintenanceMode == MaintenanceModes.FullDataMigration) ||
               Disks.GetValueOrDefault(component.DiskId)?.State == DiskState.Evacuating;
    }

    /// <summary>Components placed on a host (the incoming copies of moves included).</summary>
    public int ComponentsOnHost(string hostId) => VirtualDisks.Values.Sum(v => v.Layout.Components.Count(c => c.HostId == hostId));

    /// <summary>Components placed on a disk (the incoming copies of moves included).</summary>
    public int ComponentsOnDisk(string diskId) => VirtualDisks.Values.Sum(v => v.Layout.Components.Count(c => c.DiskId == diskId));

    /// <summary>The state as JSON (the snapshot format).</summary>
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, MetadataJsonContext.Default.ClusterState);

    public static ClusterState FromJson(ReadOnlySpan<byte> utf8Json) =>
        (JsonSerializer.Deserialize(utf8Json, MetadataJsonContext.Default.ClusterState)
            ?? throw new JsonException("cluster state snapshot is null")).Normalize();

    /// <summary>
    /// Content equality: same entities and remembered commands, whatever the index. Records with immutable collections
    /// compare those by reference, so this compares the serialized forms.
    /// </summary>
    public bool ContentEquals(ClusterState other) =>
        (this with { AppliedIndex = 0 }).ToJson().AsSpan().SequenceEqual((other with { AppliedIndex = 0 }).ToJson());

    /// <summary>Restores ordinal key ordering after deserialization (the serializer builds default-comparer maps).</summary>
    private ClusterState Normalize() => this with
    {
        Hosts = Hosts.WithComparers(StringComparer.Ordinal),
        Disks = Disks.WithComparers(StringComparer.Ordinal),
        Policies = Policies.WithComparers(StringComparer.Ordinal),
        ApiTokens = ApiTokens.WithComparers(StringComparer.Ordinal),
        JoinTokens = JoinTokens.WithComparers(StringComparer.Ordinal),
        Certificates = Certificates.WithComparers(StringComparer.Ordinal),
        VirtualDisks = VirtualDisks
            .Select(p => KeyValuePair.Create(p.Key, p.Value with { ComponentStates = p.Value.ComponentStates.WithComparers(StringComparer.Ordinal) }))
            .ToImmutableSortedDictionary(StringComparer.Ordinal),
    };

    internal static ImmutableSortedDictionary<string, T> EmptyMap<T>() => ImmutableSortedDictionary.Create<string, T>(StringComparer.Ordinal);
}

/// <summary>A successful command remembered for deduplication.</summary>
public sealed record AppliedCommand(Guid CommandId, CommandResult Result);
