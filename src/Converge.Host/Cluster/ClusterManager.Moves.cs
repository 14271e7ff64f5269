using System.Globalization;
using Converge.Common;
using Converge.Management.Contracts;
using Converge.Metadata;
using Converge.Placement;
using MetaDiskState = Converge.Metadata.DiskState;
using MetaHostState = Converge.Metadata.HostState;

namespace Converge.Host.Cluster;

/// <summary>
/// Decommissioning hosts and disks, and rebalancing: both are made of make-before-break moves (docs/failures.md,
/// "Moves"). Evacuation moves are started by each virtual disk's coordinator; rebalance moves by the metadata leader,
/// one at a time in the whole cluster; the leader also commits a host decommissioned / a disk removed once empty.
/// </summary>
internal sealed partial class ClusterManager
{
    public const double DefaultRebalanceThreshold = 10;

    /// <summary>
    /// Starts emptying a host: refused (409, nothing changed) when some component would have nowhere to go without
    /// breaking its policy's fault-domain separation or capacity, or when the host is a Raft voter.
    /// </summary>
    public async Task<DecommissionInfo> DecommissionHostAsync(string nameOrId, CancellationToken cancellationToken)
    {
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var host = FindHost(state, nameOrId);
        if (host.State is MetaHostState.Decommissioning or MetaHostState.Decommissioned)
        {
            return HostProgress(state, host);
        }

        if (MovesOnto(state, c => c.HostId == host.HostId) > 0)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"a component is being moved onto host {host.Name} right now; retry when that move is over ('converge resync')");
        }

        var topology = await TopologyAsync(state, cancellationToken).ConfigureAwait(false);
        var without = topology with { Hosts = [.. topology.Hosts.Select(h => h.HostId == host.HostId ? h with { Usable = false } : h)] };
        CheckEvacuation(state, without, c => c.HostId == host.HostId, hostLost: true, $"host {host.Name}");

        // Removing a Raft member safely needs another host promoted in its place first; metadata clients cannot be
        // promoted at run time yet, so voters stay.
        if (host.Voter)
        {
            var voters = state.Hosts.Values.Count(h => h.Voter);
            throw new ClusterOperationException(
                HostErrorKind.Conflict,
                $"cannot decommission host {host.Name}: it is a Raft voter (one of the {voters} metadata members), and removing a voter " +
                "would need another host promoted to voter first, which is not available yet; nothing was changed");
        }

        await Metadata.ProposeOkAsync(new UpdateHost(Guid.NewGuid(), host.HostId, State: MetaHostState.Decommissioning), cancellationToken).ConfigureAwait(false);
        var now = State;
        Log.Decommission(node.Logger, "host", host.Name, $"decommissioning: {now.ComponentsOnHost(host.HostId)} component(s) to move away");
        return HostProgress(now, now.Hosts[host.HostId]);
    }

    public DecommissionInfo GetHostDecommission(string nameOrId)
    {
        var state = State;
        return HostProgress(state, FindHost(state, nameOrId));
    }

    /// <summary>Starts emptying a disk (its host stays): refused (409, nothing changed) when a component would have nowhere to go.</summary>
    public async Task<DecommissionInfo> DecommissionDiskAsync(string id, CancellationToken cancellationToken)
    {
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var disk = FindDisk(state, id);
        if (disk.State is MetaDiskState.Evacuating or MetaDiskState.Removed)
        {
            return DiskProgress(state, disk);
        }

        var where = $"disk {disk.DiskId} ({HostName(state, disk.HostId)}:{disk.Path})";
        if (disk.State != MetaDiskState.Online)
        {
            throw new ClusterOperationException(
                HostErrorKind.Conflict,
                $"cannot decommission {where}: it is {disk.State.ToString().ToLowerInvariant()}; only an online disk is decommissioned (the components of a failed disk are rebuilt elsewhere by themselves)");
        }

        if (state.Hosts.GetValueOrDefault(disk.HostId) is { State: MetaHostState.Decommissioning or MetaHostState.Decommissioned } host)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"cannot decommission {where}: its host {host.Name} is {host.State.ToString().ToLowerInvariant()}");
        }

        if (MovesOnto(state, c => c.DiskId == disk.DiskId) > 0)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"a component is being moved onto {where} right now; retry when that move is over ('converge resync')");
        }

        var topology = await TopologyAsync(state, cancellationToken).ConfigureAwait(false);
        var without = topology with { Disks = [.. topology.Disks.Select(d => d.DiskId == disk.DiskId ? d with { Usable = false } : d)] };
        CheckEvacuation(state, without, c => c.DiskId == disk.DiskId, hostLost: false, where);
        await Metadata.ProposeOkAsync(new UpdateDiskState(Guid.NewGuid(), disk.DiskId, MetaDiskState.Evacuating), cancellationToken).ConfigureAwait(false);
        var now = State;
        Log.Decommission(node.Logger, "disk", where, $"evacuating: {now.ComponentsOnDisk(disk.DiskId)} component(s) to move away");
        return DiskProgress(now, now.Disks[disk.DiskId]);
    }

    public DecommissionInfo GetDiskDecommission(string id)
    {
        var state = State;
        return DiskProgress(state, FindDisk(state, id));
    }

    /// <summary>Plans a rebalance (dry run) or starts one: the metadata leader then moves components one at a time.</summary>
    public async Task<RebalanceInfo> RebalanceAsync(RebalanceRequest request, CancellationToken cancellationToken)
    {
        var threshold = request.ThresholdPercent ?? DefaultRebalanceThreshold;
        if (double.IsNaN(threshold) || threshold <= 0 || threshold > 100)
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"thresholdPercent must be above 0 and at most 100 percentage points; got {threshold.ToString(CultureInfo.InvariantCulture)}");
        }

        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var plan = await PlanRebalanceAsync(state, threshold, cancellationToken).ConfigureAwait(false);
        if (request.DryRun || plan.Moves.Count == 0)
        {
            return RebalanceView(state, plan, threshold);
        }

        await Metadata.ProposeOkAsync(new SetRebalance(Guid.NewGuid(), true, DateTimeOffset.UtcNow, threshold), cancellationToken).ConfigureAwait(false);
        Log.Rebalance(node.Logger, $"started: spread {plan.SpreadBefore:0.#} points, threshold {threshold:0.#}, {plan.Moves.Count} move(s) planned");
        return RebalanceView(State, plan, threshold);
    }

    public async Task<RebalanceInfo> GetRebalanceAsync(CancellationToken cancellationToken)
    {
        var state = State;
        var threshold = state.Rebalance?.ThresholdPercent ?? DefaultRebalanceThreshold;
        return RebalanceView(state, await PlanRebalanceAsync(state, threshold, cancellationToken).ConfigureAwait(false), threshold);
    }

    /// <summary>Stops a running rebalance; a move under way finishes (or is cancelled) by itself.</summary>
    public async Task<RebalanceInfo> StopRebalanceAsync(CancellationToken cancellationToken)
    {
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        if (State.Rebalance is not null)
        {
            await Metadata.ProposeOkAsync(new SetRebalance(Guid.NewGuid(), false, DateTimeOffset.UtcNow), cancellationToken).ConfigureAwait(false);
            Log.Rebalance(node.Logger, "stopped by the operator");
        }

        return await GetRebalanceAsync(cancellationToken).ConfigureAwait(false);
    }

    internal async Task<RebalancePlan> PlanRebalanceAsync(ClusterState state, double threshold, CancellationToken cancellationToken)
    {
        var topology = await TopologyAsync(state, cancellationToken).ConfigureAwait(false);
        var objects = state.VirtualDisks.Values
            .Select(v => new RebalanceObject(v.Name, v.Layout, v.Layout.Components.All(c => !c.IsIncoming && v.StateOf(c.ComponentId) == ComponentState.Active)))
            .ToList();
        return RebalancePlanner.Plan(objects, topology, new RebalanceOptions { ThresholdPercent = threshold });
    }

    /// <summary>
    /// Starts a make-before-break move: creates the new component on its disk, then commits it beside the old one
    /// (compare-and-set on the generation). The coordinator fills it and completes the move. False when refused.
    /// </summary>
    internal async Task<bool> BeginMoveAsync(VirtualDiskRecord vdisk, ComponentPlacement old, ComponentPlacement target, string reason, CancellationToken cancellationToken)
    {
        var state = State;
        try
        {
            await EnsureComponentAsync(state, vdisk.Name, target, ComponentSize(target), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is VolumeException or HttpRequestException or IOException or InvalidOperationException or ArgumentException)
        {
            // The target cannot take it now (full, failing, unreachable): the move is tried again on a later round.
            Log.CopyFailed(node.Logger, vdisk.Name, "move", old.ComponentId.ToString("N"), $"creating the new copy on host {target.HostId} failed: {e.Message}");
            await DeleteComponentsAsync(state, vdisk.Name, [target]).ConfigureAwait(false);
            return false;
        }

        var result = await Metadata.ProposeAsync(
            new BeginMove(Guid.NewGuid(), vdisk.VirtualDiskId, old.ComponentId, target, vdisk.Generation), cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            // Nothing refers to the new component: it is garbage.
            await DeleteComponentsAsync(state, vdisk.Name, [target]).ConfigureAwait(false);
            Log.CopyFailed(node.Logger, vdisk.Name, "move", old.ComponentId.ToString("N"), result.Error ?? "refused");
            return false;
        }

        Log.MoveStarted(node.Logger, vdisk.Name, old.ComponentId.ToString("N"), target.ComponentId.ToString("N"), target.HostId, target.DiskId, result.Generation ?? 0, reason);
        return true;
    }

    /// <summary>
    /// The metadata leader's part, each heartbeat round: a decommissioning host or an evacuating disk with nothing left
    /// is committed decommissioned / removed; a requested rebalance starts its next move when no move is under way in
    /// the cluster (gentle: one copy at a time) and ends when its plan is empty.
    /// </summary>
    internal async Task LeaderStepAsync(CancellationToken cancellationToken)
    {
        var state = State;
        foreach (var host in state.Hosts.Values.Where(h => h.State == MetaHostState.Decommissioning && state.ComponentsOnHost(h.HostId) == 0))
        {
            var result = await Metadata.ProposeAsync(new UpdateHost(Guid.NewGuid(), host.HostId, State: MetaHostState.Decommissioned), cancellationToken).ConfigureAwait(false);
            if (result.Succeeded)
            {
                Log.Decommission(node.Logger, "host", host.Name, "decommissioned: no component is left on it; its process can be stopped");
            }
        }

        foreach (var disk in state.Disks.Values.Where(d => d.State == MetaDiskState.Evacuating && state.ComponentsOnDisk(d.DiskId) == 0))
        {
            var result = await Metadata.ProposeAsync(new UpdateDiskState(Guid.NewGuid(), disk.DiskId, MetaDiskState.Removed), cancellationToken).ConfigureAwait(false);
            if (result.Succeeded)
            {
                Log.Decommission(node.Logger, "disk", $"{disk.DiskId} ({HostName(state, disk.HostId)}:{disk.Path})", "removed: no component is left on it");
            }
        }

        if (state.Rebalance is not { } run || state.VirtualDisks.Values.Any(v => v.Layout.Components.Any(c => c.IsIncoming)))
        {
            return;
        }

        var plan = await PlanRebalanceAsync(state, run.ThresholdPercent, cancellationToken).ConfigureAwait(false);
        if (plan.Moves.Count == 0)
        {
            var ended = await Metadata.ProposeAsync(new SetRebalance(Guid.NewGuid(), false, DateTimeOffset.UtcNow), cancellationToken).ConfigureAwait(false);
            if (ended.Succeeded)
            {
                Log.Rebalance(node.Logger, $"done: spread {plan.SpreadBefore:0.#} percentage points (threshold {run.ThresholdPercent:0.#})");
            }

            return;
        }

        var move = plan.Moves[0];
        if (state.VirtualDisks.GetValueOrDefault(move.ObjectId.ToString("N")) is { } vdisk)
        {
            await BeginMoveAsync(vdisk, move.Component, move.Target(Guid.NewGuid()), $"rebalance, spread {plan.SpreadBefore:0.#} percentage points", cancellationToken)
                .ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Simulates the evacuation: every component leaving gets a place (as a move or rebuild would choose it) on the
    /// remaining disks, taking their free space as it goes. Throws 409 naming the first that has nowhere to go.
    /// </summary>
    private static void CheckEvacuation(ClusterState state, ClusterTopology topology, Func<ComponentPlacement, bool> leaving, bool hostLost, string what)
    {
        var free = topology.Disks.ToDictionary(d => d.DiskId, d => d.FreeBytes, StringComparer.Ordinal);
        foreach (var vdisk in state.VirtualDisks.Values.OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            var layout = vdisk.Layout;
            foreach (var component in vdisk.Layout.Components.Where(leaving))
            {
                var current = topology with { Disks = [.. topology.Disks.Select(d => d with { FreeBytes = free[d.DiskId] })] };
                var placed = Replacement.Place(layout, component.ComponentId, Guid.NewGuid(), current, hostLost);
                if (placed.Layout is null)
                {
                    throw new ClusterOperationException(
                        HostErrorKind.Conflict,
                        $"cannot decommission {what}: component {component.ComponentId:N} of virtual disk '{vdisk.Name}' (policy {vdisk.PolicyName}) " +
                        $"would have nowhere to go: {placed.Error}. Add a host or disk in another fault domain first; nothing was changed");
                }

                var target = placed.Layout.Components.Single(c => !layout.Components.Any(o => o.ComponentId == c.ComponentId));
                free[target.DiskId] -= Math.Max(target.Length, target.ReservedBytes);
                layout = placed.Layout;
            }
        }
    }

    /// <summary>Moves under way whose new copy lands where <paramref name="onto"/> says.</summary>
    private static int MovesOnto(ClusterState state, Func<ComponentPlacement, bool> onto) =>
        state.VirtualDisks.Values.Sum(v => v.Layout.Components.Count(c => c.IsIncoming && onto(c)));

    /// <summary>Moves under way whose old component is where <paramref name="from"/> says.</summary>
    private static int MovesFrom(ClusterState state, Func<ComponentPlacement, bool> from) =>
        state.VirtualDisks.Values.Sum(v => v.Layout.Components.Count(c => c.IsIncoming && v.Layout.Components.Any(o => o.ComponentId == c.Replaces && from(o))));

    private static DecommissionInfo HostProgress(ClusterState state, HostRecord host) => new()
    {
        Kind = "host",
        Target = host.Name,
        State = host.State.ToString().ToLowerInvariant(),
        ComponentsLeft = state.ComponentsOnHost(host.HostId),
        Moving = MovesFrom(state, c => c.HostId == host.HostId),
        Done = host.State == MetaHostState.Decommissioned,
    };

    private static DecommissionInfo DiskProgress(ClusterState state, DiskRecord disk) => new()
    {
        Kind = "disk",
        Target = disk.DiskId,
        State = disk.State.ToString().ToLowerInvariant(),
        ComponentsLeft = state.ComponentsOnDisk(disk.DiskId),
        Moving = MovesFrom(state, c => c.DiskId == disk.DiskId),
        Done = disk.State == MetaDiskState.Removed,
    };

    /// <summary>A disk by its id ("N" format, any case) or a unique prefix of at least 8 characters of it.</summary>
    private static DiskRecord FindDisk(ClusterState state, string id)
    {
        var wanted = id.Trim().Replace("-", string.Empty, StringComparison.Ordinal).ToLowerInvariant();
        if (state.Disks.TryGetValue(wanted, out var exact))
        {
            return exact;
        }

        var matches = wanted.Length >= 8 ? state.Disks.Values.Where(d => d.DiskId.StartsWith(wanted, StringComparison.Ordinal)).ToList() : [];
        return matches.Count switch
        {
            1 => matches[0],
            0 => throw new ClusterOperationException(HostErrorKind.NotFound, $"disk '{id}' is not in the cluster; see 'converge status' for the disk ids"),
            _ => throw new ClusterOperationException(HostErrorKind.Invalid, $"disk id prefix '{id}' matches {matches.Count} disks; give more of the id"),
        };
    }

    private static RebalanceInfo RebalanceView(ClusterState state, RebalancePlan plan, double threshold) => new()
    {
        State = state.Rebalance is not null ? "running" : plan.Moves.Count == 0 ? "balanced" : "unbalanced",
        ThresholdPercent = threshold,
        SpreadPercent = Math.Round(plan.SpreadBefore, 2),
        PlannedSpreadPercent = Math.Round(plan.SpreadAfter, 2),
        MovesInFlight = state.VirtualDisks.Values.Sum(v => v.Layout.Components.Count(c => c.IsIncoming)),
        Moves =
        [
            .. plan.Moves.Select(m => new RebalanceMoveInfo
            {
                VirtualDisk = m.ObjectName,
                ComponentId = m.Component.ComponentId.ToString("N"),
                FromHost = HostName(state, m.Component.HostId),
                FromDisk = m.Component.DiskId,
                ToHost = HostName(state, m.TargetHostId),
                ToDisk = m.TargetDiskId,
                Bytes = m.Component.Length,
            }),
        ],
    };
}
