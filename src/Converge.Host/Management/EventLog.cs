using Converge.Common;
using Converge.Management.Contracts;
using Converge.Metadata;
using MetaHostState = Converge.Metadata.HostState;

namespace Converge.Host.Management;

/// <summary>
/// Events derived from the cluster metadata: every applied state is compared with the previous one (virtual disks
/// created, resized, deleted, re-pointed at a policy; component states; coordinator leases moving; hosts joining,
/// entering or leaving maintenance; disks registered or changing state; policies). Every host applies the same
/// states, so every host can answer. Kept in a bounded ring, newest last.
/// </summary>
internal sealed class EventLog(TimeProvider time, int capacity = 1000)
{
    private readonly Lock gate = new();
    private readonly Queue<EventInfo> ring = new();
    private ClusterState? previous;
    private long sequence;

    public void Attach(IMetadataService service)
    {
        lock (gate)
        {
            previous = service.Current;
        }

        service.Changed += (_, state) => Observe(state);
    }

    public IReadOnlyList<EventInfo> List(long after, int limit)
    {
        lock (gate)
        {
            return [.. ring.Where(e => e.Sequence > after).TakeLast(Math.Clamp(limit, 1, capacity))];
        }
    }

    /// <summary>Adds an event that does not come from a metadata change (e.g. this host started).</summary>
    public void Add(string severity, string kind, string message, string? vdisk = null, string? host = null)
    {
        lock (gate)
        {
            Append(severity, kind, message, vdisk, host);
        }
    }

    internal void Observe(ClusterState state)
    {
        lock (gate)
        {
            var before = previous;
            previous = state;
            if (before is null || ReferenceEquals(before, state))
            {
                return;
            }

            Diff(before, state);
        }
    }

    private static string What(Placement.ComponentPlacement component) =>
        component.Role == Placement.ComponentRole.Witness ? "witness" : $"replica {component.Replica} stripe {component.Stripe}";

    private void Diff(ClusterState a, ClusterState b)
    {
        string HostName(string id) => b.Hosts.TryGetValue(id, out var h) ? h.Name : a.Hosts.TryGetValue(id, out var o) ? o.Name : id;

        if (a.Cluster is null && b.Cluster is { } cluster)
        {
            Append("info", "cluster.created", $"cluster '{cluster.Name}' founded with default policy '{cluster.DefaultPolicyName}'");
        }

        foreach (var (id, host) in b.Hosts)
        {
            if (!a.Hosts.TryGetValue(id, out var old))
            {
                Append("info", "host.joined", $"host {host.Name} joined as a {(host.Voter ? "metadata voter" : "metadata client")}" +
                    (host.FaultDomain is null ? string.Empty : $" in fault domain {host.FaultDomain}"), host: host.Name);
                continue;
            }

            if (old.State != host.State || old.MaintenanceMode != host.MaintenanceMode)
            {
                var (severity, text) = host.State switch
                {
                    MetaHostState.Maintenance => ("warning", $"host {host.Name} entered maintenance ({host.MaintenanceMode})"),
                    MetaHostState.Active when old.State == MetaHostState.Maintenance => ("info", $"host {host.Name} left maintenance"),
                    MetaHostState.Decommissioning => ("info", $"host {host.Name} is being decommissioned: its components move to other hosts"),
                    MetaHostState.Decommissioned => ("info", $"host {host.Name} is decommissioned: no component is left on it"),
                    _ => ("warning", $"host {host.Name} is now {host.State.ToString().ToLowerInvariant()}"),
                };
                Append(severity, host.State == MetaHostState.Maintenance || old.State == MetaHostState.Maintenance ? "host.maintenance" : "host.state", text, host: host.Name);
            }

            if (old.Endpoints != host.Endpoints)
            {
                Append("info", "host.endpoints", $"host {host.Name} now listens on API {host.Endpoints.Api}, NBD {host.Endpoints.Nbd}", host: host.Name);
            }
        }

        foreach (var (id, host) in a.Hosts)
        {
            if (!b.Hosts.ContainsKey(id))
            {
                Append("warning", "host.removed", $"host {host.Name} was removed", host: host.Name);
            }
        }

        foreach (var (id, disk) in b.Disks)
        {
            if (!a.Disks.TryGetValue(id, out var old))
            {
                Append("info", "disk.added", $"disk {disk.Path} ({ByteSize.Format(disk.CapacityBytes)}) of host {HostName(disk.HostId)} added", host: HostName(disk.HostId));
            }
            else if (old.State != disk.State)
            {
                Append(
                    disk.State is DiskState.Online or DiskState.Evacuating or DiskState.Removed ? "info" : "error",
                    "disk.state",
                    $"disk {disk.Path} of host {HostName(disk.HostId)} is now {disk.State.ToString().ToLowerInvariant()} (was {old.State.ToString().ToLowerInvariant()})",
                    host: HostName(disk.HostId));
            }
        }

        foreach (var (name, policy) in b.Policies)
        {
            if (!a.Policies.TryGetValue(name, out var old))
            {
                Append("info", "policy.created", $"policy {name} created (FTT={policy.FailuresToTolerate}, stripe width {policy.StripeWidth})");
            }
            else if (old != policy)
            {
                Append("info", "policy.changed", $"policy {name} changed (FTT={policy.FailuresToTolerate}, stripe width {policy.StripeWidth})");
            }
        }

        foreach (var name in a.Policies.Keys.Where(n => !b.Policies.ContainsKey(n)))
        {
            Append("info", "policy.deleted", $"policy {name} deleted");
        }

        foreach (var (id, vdisk) in b.VirtualDisks)
        {
            if (!a.VirtualDisks.TryGetValue(id, out var old))
            {
                Append("info", "vdisk.created", $"virtual disk {vdisk.Name} created ({ByteSize.Format(vdisk.SizeBytes)}, policy {vdisk.PolicyName}, {vdisk.Layout.Components.Count} components)", vdisk.Name);
                continue;
            }

            if (old.SizeBytes != vdisk.SizeBytes)
            {
                Append("info", "vdisk.resized", $"virtual disk {vdisk.Name} grew from {ByteSize.Format(old.SizeBytes)} to {ByteSize.Format(vdisk.SizeBytes)}", vdisk.Name);
            }

            if (old.PolicyName != vdisk.PolicyName)
            {
                Append("info", "vdisk.policy", $"virtual disk {vdisk.Name} now follows policy {vdisk.PolicyName} (was {old.PolicyName})", vdisk.Name);
            }

            foreach (var component in vdisk.Layout.Components)
            {
                var now = vdisk.StateOf(component.ComponentId);
                var was = old.Layout.Components.Any(c => c.ComponentId == component.ComponentId) ? old.StateOf(component.ComponentId) : (ComponentState?)null;
                if (was is not null && was != now)
                {
                    Append(
                        now == ComponentState.Active ? "info" : now is ComponentState.Absent or ComponentState.Degraded ? "error" : "warning",
                        "component.state",
                        $"virtual disk {vdisk.Name}: {(component.Role == Placement.ComponentRole.Witness ? "witness" : $"replica {component.Replica} stripe {component.Stripe}")} " +
                        $"on host {HostName(component.HostId)} is now {now.ToString().ToLowerInvariant()} (was {was.Value.ToString().ToLowerInvariant()})",
                        vdisk.Name,
                        HostName(component.HostId));
                }
            }

            // Make-before-break moves: started (a new copy appears beside the old one), completed or cancelled.
            foreach (var incoming in vdisk.Layout.Components.Where(c => c.IsIncoming && !old.Layout.Components.Any(o => o.ComponentId == c.ComponentId)))
            {
                var from = old.Layout.Components.FirstOrDefault(o => o.ComponentId == incoming.Replaces);
                Append("info", "component.move", $"virtual disk {vdisk.Name}: moving {What(incoming)} from host {HostName(from?.HostId ?? "?")} to host {HostName(incoming.HostId)}", vdisk.Name, HostName(incoming.HostId));
            }

            foreach (var incoming in old.Layout.Components.Where(c => c.IsIncoming))
            {
                var after = vdisk.Layout.Components.FirstOrDefault(c => c.ComponentId == incoming.ComponentId);
                if (after is null)
                {
                    Append("warning", "component.move", $"virtual disk {vdisk.Name}: move of {What(incoming)} to host {HostName(incoming.HostId)} cancelled", vdisk.Name, HostName(incoming.HostId));
                }
                else if (!after.IsIncoming)
                {
                    Append("info", "component.move", $"virtual disk {vdisk.Name}: {What(incoming)} moved to host {HostName(incoming.HostId)}", vdisk.Name, HostName(incoming.HostId));
                }
            }

            var oldHolder = old.Lease?.HostId;
            var newHolder = vdisk.Lease?.HostId;
            if (newHolder is not null && old.Lease?.Epoch != vdisk.Lease?.Epoch)
            {
                Append(
                    "info",
                    "vdisk.coordinator",
                    oldHolder is null || oldHolder == newHolder
                        ? $"host {HostName(newHolder)} coordinates virtual disk {vdisk.Name} (epoch {vdisk.Lease!.Epoch})"
                        : $"coordination of virtual disk {vdisk.Name} moved from host {HostName(oldHolder)} to host {HostName(newHolder)} (epoch {vdisk.Lease!.Epoch})",
                    vdisk.Name,
                    HostName(newHolder));
            }
        }

        foreach (var (id, vdisk) in a.VirtualDisks)
        {
            if (!b.VirtualDisks.ContainsKey(id))
            {
                Append("info", "vdisk.deleted", $"virtual disk {vdisk.Name} deleted", vdisk.Name);
            }
        }
    }

    private void Append(string severity, string kind, string message, string? vdisk = null, string? host = null)
    {
        ring.Enqueue(new EventInfo
        {
            Sequence = ++sequence,
            Time = time.GetUtcNow(),
            Severity = severity,
            Kind = kind,
            Message = message,
            VirtualDisk = vdisk,
            Host = host,
        });
        while (ring.Count > capacity)
        {
            ring.Dequeue();
        }
    }
}
