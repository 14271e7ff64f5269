namespace Converge.Placement;

/// <summary>An object as the rebalance planner sees it: its layout and whether its components may move now.</summary>
/// <param name="Movable">False while the object is short of a copy or already moving a component: it is left alone.</param>
public sealed record RebalanceObject(string Name, ObjectLayout Layout, bool Movable = true);

/// <summary>One planned move: a data component to another disk.</summary>
public sealed record PlannedMove(string ObjectName, Guid ObjectId, ComponentPlacement Component, string TargetHostId, string TargetFaultDomain, string TargetDiskId)
{
    /// <summary>The component at its new place (a new id is given when the move starts).</summary>
    public ComponentPlacement Target(Guid newComponentId) =>
        Component with { ComponentId = newComponentId, HostId = TargetHostId, FaultDomain = TargetFaultDomain, DiskId = TargetDiskId };
}

public sealed record RebalanceOptions
{
    /// <summary>Balanced when the fullest and the emptiest usable disk differ by at most this many percentage points.</summary>
    public double ThresholdPercent { get; init; } = 10;

    /// <summary>At most this many moves per plan.</summary>
    public int MaxMoves { get; init; } = 32;
}

/// <summary>The plan and the spread of disk fullness before and after it, in percentage points.</summary>
public sealed record RebalancePlan(IReadOnlyList<PlannedMove> Moves, double SpreadBefore, double SpreadAfter);

/// <summary>
/// Plans moves of data components from the fullest disks to the emptiest, so that new hosts and disks take a share.
/// Pure and deterministic like <see cref="PlacementEngine"/>. Fullness is provisioned bytes (the full lengths of the
/// components placed on a disk, what thin provisioning promised) over capacity.
/// </summary>
/// <remarks>
/// A move never breaks fault-domain separation (the target's domain is not used by another replica or a witness of the
/// object), never goes to a disk without room for the whole component (by provisioned bytes and by the free bytes its
/// host reports), and brings its two disks closer without crossing them over (the target ends emptier than the source
/// was, the source fuller than the target was). So the spread never grows, and every move strictly lowers the sum over
/// disks of provisioned² / capacity: repeated planning ends.
/// Witnesses hold no data and stay where they are. One move per object per plan: moves of one object run one at a time.
/// </remarks>
public static class RebalancePlanner
{
    public static RebalancePlan Plan(IReadOnlyList<RebalanceObject> objects, ClusterTopology topology, RebalanceOptions? options = null)
    {
        options ??= new RebalanceOptions();
        var hosts = topology.Hosts.Where(h => h.Usable).ToDictionary(h => h.HostId, StringComparer.Ordinal);
        var disks = topology.Disks
            .Where(d => d.Usable && d.CapacityBytes > 0 && hosts.ContainsKey(d.HostId))
            .OrderBy(d => d.DiskId, StringComparer.Ordinal)
            .Select(d => new DiskLoad(d, hosts[d.HostId].EffectiveFaultDomain))
            .ToDictionary(d => d.Disk.DiskId, StringComparer.Ordinal);
        foreach (var component in objects.SelectMany(o => o.Layout.Components))
        {
            if (disks.TryGetValue(component.DiskId, out var load))
            {
                load.Provisioned += Size(component);
            }
        }

        var before = Spread(disks.Values);
        var moves = new List<PlannedMove>();
        var moved = new HashSet<Guid>();
        var layouts = objects.Where(o => o.Movable).OrderBy(o => o.Name, StringComparer.Ordinal).ToList();
        while (moves.Count < options.MaxMoves && Spread(disks.Values) > options.ThresholdPercent)
        {
            var move = NextMove(layouts, disks, moved);
            if (move is null)
            {
                break;
            }

            moves.Add(move);
            moved.Add(move.ObjectId);
            var size = Size(move.Component);
            disks[move.Component.DiskId].Provisioned -= size;
            disks[move.TargetDiskId].Provisioned += size;
            disks[move.TargetDiskId].Free -= size;
        }

        return new RebalancePlan(moves, before, Spread(disks.Values));
    }

    /// <summary>The fullest disk first; its largest component that fits on a disk it can move to goes to the emptiest such disk.</summary>
    private static PlannedMove? NextMove(List<RebalanceObject> objects, Dictionary<string, DiskLoad> disks, HashSet<Guid> moved)
    {
        var bySource = objects
            .Where(o => !moved.Contains(o.Layout.ObjectId))
            .SelectMany(o => o.Layout.PrimaryDataComponents.Select(c => (Object: o, Component: c)))
            .Where(x => disks.ContainsKey(x.Component.DiskId))
            .ToLookup(x => x.Component.DiskId, StringComparer.Ordinal);
        foreach (var source in disks.Values.OrderByDescending(d => d.Fill).ThenBy(d => d.Disk.DiskId, StringComparer.Ordinal))
        {
            var candidates = bySource[source.Disk.DiskId]
                .OrderByDescending(x => x.Component.Length)
                .ThenBy(x => x.Object.Name, StringComparer.Ordinal)
                .ThenBy(x => x.Component.ComponentId);
            foreach (var (obj, component) in candidates)
            {
                // Domains of the other replicas and of the witnesses are off limits; the same replica's other stripes are not.
                var forbidden = obj.Layout.Components
                    .Where(c => c.ComponentId != component.ComponentId && (c.Role == ComponentRole.Witness || c.Replica != component.Replica))
                    .Select(c => c.FaultDomain)
                    .ToHashSet(StringComparer.Ordinal);
                var size = Size(component);

                // Among equally empty disks the emptiest host first: a new host takes a share before the spare disks of
                // busy hosts do.
                var target = disks.Values
                    .Where(d => d.Disk.DiskId != source.Disk.DiskId && !forbidden.Contains(d.Domain))
                    .Where(d => d.Provisioned + size <= d.Disk.CapacityBytes && d.Free >= size)
                    .Where(d => d.FillWith(size) < source.Fill && source.FillWith(-size) > d.Fill)
                    .OrderBy(d => d.Fill)
                    .ThenBy(d => HostFill(disks.Values, d.Disk.HostId))
                    .ThenBy(d => d.Disk.DiskId, StringComparer.Ordinal)
                    .FirstOrDefault();
                if (target is not null)
                {
                    return new PlannedMove(obj.Name, obj.Layout.ObjectId, component, target.Disk.HostId, target.Domain, target.Disk.DiskId);
                }
            }
        }

        return null;
    }

    private static double HostFill(IEnumerable<DiskLoad> disks, string hostId)
    {
        var own = disks.Where(d => d.Disk.HostId == hostId).ToList();
        return 100.0 * own.Sum(d => d.Provisioned) / own.Sum(d => d.Disk.CapacityBytes);
    }

    /// <summary>Percentage points between the fullest and the emptiest disk (0 with fewer than two disks).</summary>
    private static double Spread(IEnumerable<DiskLoad> disks)
    {
        var fills = disks.Select(d => d.Fill).ToList();
        return fills.Count < 2 ? 0 : fills.Max() - fills.Min();
    }

    private static long Size(ComponentPlacement component) => Math.Max(component.Length, component.ReservedBytes);

    private sealed class DiskLoad(DiskCandidate disk, string domain)
    {
        public DiskCandidate Disk { get; } = disk;

        public string Domain { get; } = domain;

        public long Provisioned { get; set; }

        public long Free { get; set; } = disk.FreeBytes;

        public double Fill => 100.0 * Provisioned / Disk.CapacityBytes;

        public double FillWith(long bytes) => 100.0 * (Provisioned + bytes) / Disk.CapacityBytes;
    }
}
