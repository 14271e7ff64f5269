using System.Collections.Concurrent;
using Converge.Common;
using Converge.Metadata;
using Converge.Placement;

namespace Converge.Host.Cluster;

/// <summary>
/// Heartbeats: every host pings every other host's peer port each second and remembers when each last answered.
/// The metadata leader acts on it (docs/failures.md): components on a host silent for longer than the heartbeat
/// timeout, or on a failed disk, are committed absent or degraded even when no I/O notices; witnesses of a host that
/// answers again are active again at once (they hold no data); virtual disks that need a resync and have no
/// coordinator get one (the leader takes the lease), because resync is the coordinator's job.
/// </summary>
internal sealed class HostMonitor(ClusterNode node, TimeSpan heartbeatTimeout, TimeProvider time, ILogger logger) : IAsyncDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);
    private readonly ConcurrentDictionary<string, long> lastSeen = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> reported = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource stop = new();
    private readonly long started = time.GetTimestamp();
    private Task loop = Task.CompletedTask;

    public TimeSpan HeartbeatTimeout => heartbeatTimeout;

    public void Start() => loop = Task.Run(() => RunAsync(stop.Token), CancellationToken.None);

    /// <summary>How long ago the host last answered a heartbeat (null: never since this host started).</summary>
    public TimeSpan? SilentFor(string hostId) =>
        hostId == node.HostId ? TimeSpan.Zero : lastSeen.TryGetValue(hostId, out var seen) ? time.GetElapsedTime(seen) : null;

    /// <summary>Answered within the heartbeat timeout (this host always is).</summary>
    public bool IsReachable(string hostId) => SilentFor(hostId) is { } silent && silent <= heartbeatTimeout;

    private bool IsDown(string hostId) =>
        hostId != node.HostId && (SilentFor(hostId) ?? time.GetElapsedTime(started)) > heartbeatTimeout;

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                await PingAllAsync(cancellationToken).ConfigureAwait(false);
                if (node.Registered && node.Metadata.Service.IsLeader)
                {
                    try
                    {
                        await ActAsLeaderAsync(cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException or VolumeException or InvalidOperationException ||
                                              (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
                    {
                        Log.CopyFailed(logger, "-", "heartbeat action", "-", e.Message);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task PingAllAsync(CancellationToken cancellationToken)
    {
        var hosts = node.Metadata.Current.Hosts.Values.Where(h => h.HostId != node.HostId && h.State != Converge.Metadata.HostState.Decommissioned).ToList();
        await Task.WhenAll(hosts.Select(async host =>
        {
            if (await node.Peers.PingAsync(host.Endpoints.PeerData, Interval, cancellationToken).ConfigureAwait(false))
            {
                lastSeen[host.HostId] = time.GetTimestamp();
                if (reported.TryRemove(host.HostId, out _))
                {
                    Log.HostReachable(logger, host.Name, host.HostId);
                }
            }
            else if (IsDown(host.HostId) && reported.TryAdd(host.HostId, true))
            {
                Log.HostUnreachable(logger, host.Name, host.HostId, (SilentFor(host.HostId) ?? heartbeatTimeout).TotalSeconds);
            }
        })).ConfigureAwait(false);
    }

    private async Task ActAsLeaderAsync(CancellationToken cancellationToken)
    {
        var state = node.Metadata.Current;
        var now = time.GetUtcNow();
        foreach (var vdisk in state.VirtualDisks.Values)
        {
            var needsResync = false;
            foreach (var component in vdisk.Layout.Components)
            {
                var componentState = vdisk.StateOf(component.ComponentId);
                var diskFailed = state.Disks.TryGetValue(component.DiskId, out var disk) &&
                                 disk.State is DiskState.Failed or DiskState.Missing or DiskState.Corrupt;
                ComponentState? next = null;
                string reason;
                if (component.IsIncoming && (diskFailed || IsDown(component.HostId)))
                {
                    // A move's new copy whose disk or host fails is dropped; the old component still serves.
                    var cancelled = await node.Metadata.ProposeAsync(
                        new CancelMove(Guid.NewGuid(), vdisk.VirtualDiskId, component.ComponentId, vdisk.Generation),
                        cancellationToken, timeout: TimeSpan.FromSeconds(3)).ConfigureAwait(false);
                    if (cancelled.Succeeded)
                    {
                        Log.MoveEnded(logger, vdisk.Name, component.Replaces!.Value.ToString("N"), component.ComponentId.ToString("N"),
                            diskFailed ? "cancelled: the target disk failed" : "cancelled: the target host missed heartbeats", cancelled.Generation ?? 0);
                    }

                    needsResync = false;
                    break;
                }

                if (diskFailed && componentState != ComponentState.Degraded)
                {
                    (next, reason) = (ComponentState.Degraded, $"its disk is {disk!.State.ToString().ToLowerInvariant()}");
                }
                else if (IsDown(component.HostId) && componentState is ComponentState.Active or ComponentState.Resyncing)
                {
                    (next, reason) = (ComponentState.Absent, $"its host missed heartbeats for over {heartbeatTimeout.TotalSeconds:0.#} s");
                }
                else if (component.Role == ComponentRole.Witness && componentState is ComponentState.Absent or ComponentState.Stale && IsReachable(component.HostId))
                {
                    (next, reason) = (ComponentState.Active, "its host answers again (a witness holds no data)");
                }
                else
                {
                    // Resync (host back), rebuild (degraded, or absent past the repair delay): both need a coordinator.
                    // Moves (evacuation, decommission, a move's new copy to fill or complete) are coordinator work too.
                    if (componentState is ComponentState.Degraded || state.MustEvacuate(component) || component.IsIncoming ||
                        (component.Role == ComponentRole.Data && componentState is ComponentState.Absent or ComponentState.Stale or ComponentState.Resyncing))
                    {
                        needsResync = true;
                    }

                    continue;
                }

                var result = await node.Metadata.ProposeAsync(
                    new SetComponentState(Guid.NewGuid(), vdisk.VirtualDiskId, component.ComponentId, next.Value, vdisk.Generation),
                    cancellationToken, timeout: TimeSpan.FromSeconds(3)).ConfigureAwait(false);
                if (result.Succeeded)
                {
                    Log.ComponentStateChanged(logger, vdisk.Name, component.ComponentId.ToString("N"), next.Value.ToString().ToLowerInvariant(), result.Generation ?? 0, reason);
                }

                // One change per virtual disk per round: the generation moved, so re-read before the next one.
                needsResync = false;
                break;
            }

            // Resync is driven by the coordinator; with nobody coordinating, this host takes the lease to drive it.
            if (needsResync && (vdisk.Lease is null || vdisk.Lease.IsExpiredAt(now) || vdisk.Lease.HostId == node.HostId))
            {
                try
                {
                    await node.Coordinators.ResolveAsync(vdisk.VirtualDiskId, allowProxy: false, cancellationToken).ConfigureAwait(false);
                }
                catch (VolumeException)
                {
                    // Inaccessible for now, or another host was faster: next round.
                }
            }
        }

        try
        {
            await node.Manager.LeaderStepAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ClusterOperationException or IOException or ArgumentException)
        {
            // Decommission bookkeeping and rebalance moves are retried on the next round.
            Log.CopyFailed(logger, "-", "decommission/rebalance step", "-", e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stop.CancelAsync().ConfigureAwait(false);
        await loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stop.Dispose();
    }
}
