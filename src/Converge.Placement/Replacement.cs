namespace Converge.Placement;

/// <summary>
/// Where a replacement for one failed component goes (rebuild): pure and deterministic like <see cref="PlacementEngine"/>.
/// </summary>
public static class Replacement
{
    /// <summary>
    /// A new placement for <paramref name="failedComponentId"/>: same role, replica, stripe range, votes and
    /// reservation, on a usable disk with room, in a fault domain that no other replica or witness of the object uses
    /// (the failed component's own host and disk excluded). Among candidates: a fault domain the object does not use
    /// at all first, then the disk with the most free bytes, then by id.
    /// </summary>
    public static PlacementResult Place(ObjectLayout layout, Guid failedComponentId, Guid newComponentId, ClusterTopology topology)
    {
        var failed = layout.Components.SingleOrDefault(c => c.ComponentId == failedComponentId);
        if (failed is null)
        {
            return PlacementResult.Fail($"component {failedComponentId:N} is not part of object {layout.ObjectId:N}");
        }

        // Domains of the other replicas and witnesses are off limits: a replacement there would break FTT.
        var forbidden = layout.Components
            .Where(c => c.ComponentId != failedComponentId && (c.Role == ComponentRole.Witness || c.Replica != failed.Replica || failed.Role == ComponentRole.Witness))
            .Select(c => c.FaultDomain)
            .ToHashSet(StringComparer.Ordinal);
        var used = layout.Components.Select(c => c.FaultDomain).ToHashSet(StringComparer.Ordinal);
        var need = Math.Max(failed.Length, failed.ReservedBytes);
        var hosts = topology.Hosts.Where(h => h.Usable && h.HostId != failed.HostId).ToDictionary(h => h.HostId, StringComparer.Ordinal);
        var candidate = topology.Disks
            .Where(d => d.Usable && d.DiskId != failed.DiskId && hosts.ContainsKey(d.HostId) && d.FreeBytes >= need)
            .Select(d => (Disk: d, Domain: hosts[d.HostId].EffectiveFaultDomain))
            .Where(x => !forbidden.Contains(x.Domain))
            .OrderBy(x => used.Contains(x.Domain) ? 1 : 0)
            .ThenByDescending(x => x.Disk.FreeBytes)
            .ThenBy(x => x.Disk.DiskId, StringComparer.Ordinal)
            .FirstOrDefault();
        if (candidate.Disk is null)
        {
            return PlacementResult.Fail(
                $"no usable disk with {need} free bytes in a fault domain that keeps the object's replicas apart " +
                $"(the object uses {string.Join(", ", used.Order(StringComparer.Ordinal))})");
        }

        var replacement = failed with
        {
            ComponentId = newComponentId,
            HostId = candidate.Disk.HostId,
            FaultDomain = candidate.Domain,
            DiskId = candidate.Disk.DiskId,
        };
        return new PlacementResult(
            layout with { Components = [.. layout.Components.Select(c => c.ComponentId == failedComponentId ? replacement : c)] }, null);
    }
}
