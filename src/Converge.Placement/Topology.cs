namespace Converge.Placement;

/// <summary>A disk as placement sees it. Capacities in bytes.</summary>
/// <param name="FreeBytes">Capacity neither written nor reserved by existing components.</param>
public sealed record DiskCandidate(string DiskId, string HostId, long CapacityBytes, long FreeBytes, bool Usable = true);

/// <summary>A host as placement sees it. Hosts without a fault domain form one of their own.</summary>
public sealed record HostCandidate(string HostId, string? FaultDomain = null, bool Usable = true)
{
    public string EffectiveFaultDomain => string.IsNullOrEmpty(FaultDomain) ? HostId : FaultDomain;
}

public sealed record ClusterTopology(IReadOnlyList<HostCandidate> Hosts, IReadOnlyList<DiskCandidate> Disks)
{
    public IEnumerable<DiskCandidate> UsableDisksOf(string hostId) =>
        Disks.Where(d => d.Usable && d.HostId == hostId);
}

public sealed record PlacementOptions
{
    /// <summary>Largest component; a longer stripe is split into several (bounded rebuild and move units).</summary>
    public long MaxComponentBytes { get; init; } = 256L << 30;

    /// <summary>Space a witness takes: it holds votes and metadata, no data.</summary>
    public long WitnessBytes { get; init; } = 16L << 20;

    /// <summary>Unit of RAID-0 interleaving across stripes.</summary>
    public int StripeUnitBytes { get; init; } = 1 << 20;
}
