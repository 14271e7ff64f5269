using System.Globalization;
using Converge.Common;
using Converge.Management.Contracts;
using Converge.Metadata;
using Converge.Placement;
using MetaHostState = Converge.Metadata.HostState;

namespace Converge.Host.Management;

/// <summary>
/// The operator's checklist (<c>GET /api/v1/health/checks</c>): each check has a status (ok, warning, error), what
/// was found in plain words and what to do about it.
/// </summary>
internal sealed class HealthChecks(ClusterViews views, HostInventory inventory)
{
    public const double CapacityWarning = 0.80;
    public const double CapacityError = 0.90;
    public static readonly TimeSpan SkewWarning = TimeSpan.FromMilliseconds(500);
    public static readonly TimeSpan SkewError = TimeSpan.FromSeconds(5);

    public async Task<HealthReport> RunAsync(CancellationToken cancellationToken)
    {
        var checks = new List<HealthCheckInfo>();
        if (views.Cluster is not { } cluster)
        {
            checks.Add(DiskHealth(inventory.ListDisks().Select(d => (d.Path, inventory.HostName, d.State, d.Error, true)).ToList()));
            checks.Add(DiskCapacity(inventory.ListDisks().Select(d => (d.Path, inventory.HostName, d.CapacityBytes, d.UsedBytes, true)).ToList()));
            var unavailable = inventory.ListVirtualDisks().Where(v => v.State != VirtualDiskStates.Online).Select(v => v.Name).ToList();
            checks.Add(unavailable.Count == 0
                ? Ok("object-health", "Virtual disk health", $"all {inventory.VirtualDiskCount} virtual disk(s) are online")
                : Check("object-health", "Virtual disk health", "error", $"{unavailable.Count} virtual disk(s) unavailable: {string.Join(", ", unavailable)}", "their disk is missing or corrupt: see 'converge disk list' and restore the disk file"));
            return Report(checks);
        }

        var state = cluster.Metadata.Current;
        var pings = await views.PingAsync(state, cancellationToken).ConfigureAwait(false);
        var status = await cluster.Manager.StatusAsync(cancellationToken).ConfigureAwait(false);
        var unreachable = pings.Where(p => !p.Reachable).Select(p => p.Host).ToList();

        // Host connectivity.
        checks.Add(unreachable.Count == 0
            ? Ok("host-connectivity", "Host connectivity", $"all {pings.Count} host(s) answer their management API")
            : Check(
                "host-connectivity",
                "Host connectivity",
                "error",
                $"{unreachable.Count} of {pings.Count} host(s) do not answer: " + string.Join("; ", pings.Where(p => !p.Reachable).Select(p => $"{p.Host.Name} at {p.Host.Endpoints.Api} ({p.Error})")),
                "check that the converge process runs on those hosts ('converge host run' / 'converge up'), look at their host.log, and check the network between hosts"));

        // Metadata quorum.
        var voters = state.Hosts.Values.Where(h => h.Voter).ToList();
        var reachableVoters = voters.Count(v => pings.Any(p => p.Host.HostId == v.HostId && p.Reachable));
        var leader = cluster.Metadata.LeaderHostId();
        var leaderName = leader is null ? null : state.Hosts.GetValueOrDefault(leader)?.Name;
        if (leader is null || reachableVoters * 2 <= voters.Count)
        {
            checks.Add(Check(
                "metadata-quorum",
                "Metadata quorum",
                "error",
                leader is null
                    ? $"no metadata leader is known; {reachableVoters} of {voters.Count} voter(s) answer"
                    : $"only {reachableVoters} of {voters.Count} metadata voter(s) answer; a majority is needed",
                "bring the stopped voters back (same data directory and ports); until a majority runs, no change can be made to the cluster"));
        }
        else if (reachableVoters < voters.Count)
        {
            checks.Add(Check(
                "metadata-quorum",
                "Metadata quorum",
                "warning",
                $"leader {leaderName}; {reachableVoters} of {voters.Count} voters answer — one more failure may stop all changes",
                "restart the voter that does not answer; voter replacement is not available yet"));
        }
        else
        {
            checks.Add(Ok("metadata-quorum", "Metadata quorum", $"leader {leaderName}; all {voters.Count} voters answer"));
        }

        // Disks.
        checks.Add(DiskHealth([.. status.Disks.Select(d => (d.Path, d.HostName, d.State, (string?)null, d.Reachable))]));
        checks.Add(DiskCapacity([.. status.Disks.Select(d => (d.Path, d.HostName, d.CapacityBytes, d.UsedBytes, d.Reachable))]));

        // Objects.
        checks.Add(ObjectHealth(state, status, unreachable));

        // Clock skew.
        var offsets = pings.Where(p => p.ClockOffset is not null).Select(p => (p.Host.Name, Offset: p.ClockOffset!.Value)).ToList();
        var worst = offsets.OrderByDescending(o => Math.Abs(o.Offset.TotalMilliseconds)).FirstOrDefault();
        var worstMs = Math.Abs(worst.Offset.TotalMilliseconds);
        checks.Add(offsets.Count == 0 || worstMs < SkewWarning.TotalMilliseconds
            ? Ok("clock-skew", "Clock skew", offsets.Count <= 1 ? "no other host answered to compare clocks with" : $"host clocks agree within {SkewWarning.TotalMilliseconds:0} ms (largest difference {worstMs:0} ms, {worst.Name})")
            : Check(
                "clock-skew",
                "Clock skew",
                worstMs >= SkewError.TotalMilliseconds ? "error" : "warning",
                $"the clock of host {worst.Name} differs from this host's by {worstMs:0} ms",
                "run time synchronisation (chrony or systemd-timesyncd) on every host; coordinator leases are timed, so large skew can delay failover"));

        // Resync backlog.
        var resync = await views.ResyncAsync(cancellationToken).ConfigureAwait(false);
        checks.Add(resync.Copies.Count == 0
            ? Ok("resync-backlog", "Resync backlog", "no resync, rebuild or repair is running" + (resync.UnreachableHosts.Count > 0 ? $" (hosts not asked: {string.Join(", ", resync.UnreachableHosts)})" : string.Empty))
            : Check(
                "resync-backlog",
                "Resync backlog",
                "warning",
                $"{resync.Copies.Count} cop(ies) running, {ByteSize.Format(resync.RemainingBytes)} left" +
                (resync.EtaSeconds is { } eta ? $", about {TimeSpan.FromSeconds(Math.Round(eta)).ToString("c", CultureInfo.InvariantCulture)} to go" : string.Empty),
                "redundancy is being restored; avoid taking more hosts down (maintenance, restarts) until the backlog is 0 ('converge resync --follow')"));

        // Maintenance.
        var maintenance = state.Hosts.Values.Where(h => h.State == MetaHostState.Maintenance).ToList();
        checks.Add(maintenance.Count == 0
            ? Ok("maintenance", "Hosts in maintenance", "no host is in maintenance")
            : Check("maintenance", "Hosts in maintenance", "warning", $"in maintenance: {string.Join(", ", maintenance.Select(h => $"{h.Name} ({h.MaintenanceMode})"))}; no new components are placed there", "exit maintenance when the work is done: 'converge host maintenance exit NAME'"));

        // Admin token.
        checks.Add(!state.AllApiTokens().Any(t => t.Role == ApiTokenRoles.Admin)
            ? Check("admin-token", "Admin token", "warning", "this cluster has no admin token: every change through the API is refused", "found clusters with this version, or restore the metadata of one that had its token")
            : Ok("admin-token", "Admin token", "changes need an admin bearer token" + (state.Cluster?.AdminTokenHash is null ? string.Empty : "; the admin token predates salted hashes: rotate it ('converge token rotate-admin')")));

        return Report(checks);
    }

    private static HealthCheckInfo ObjectHealth(ClusterState state, ClusterStatusInfo status, IReadOnlyList<HostRecord> unreachable)
    {
        var inaccessible = new List<string>();
        var reduced = new List<string>();
        var atRisk = new List<string>();
        var unreachableIds = unreachable.Select(h => h.HostId).ToHashSet(StringComparer.Ordinal);
        foreach (var vdisk in state.VirtualDisks.Values.OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            bool Active(ComponentPlacement c) => vdisk.StateOf(c.ComponentId) == ComponentState.Active;
            if (!vdisk.Layout.IsAccessible(Active))
            {
                inaccessible.Add(vdisk.Name);
                continue;
            }

            // A move's new copy being filled is an extra copy, not a missing one.
            var inactive = vdisk.Layout.Components.Count(c => !c.IsIncoming && !Active(c));
            if (inactive > 0)
            {
                reduced.Add($"{vdisk.Name} ({inactive} component(s) not active)");
            }
            else if (vdisk.Layout.Components.Any(c => unreachableIds.Contains(c.HostId)))
            {
                atRisk.Add(vdisk.Name);
            }
        }

        var noncompliant = status.VirtualDisks.Where(v => v.Compliance == "noncompliant").Select(v => $"{v.Name} ({v.ComplianceDetail})").ToList();
        const string Name = "object-health";
        const string Title = "Virtual disk health";
        if (inaccessible.Count > 0)
        {
            return Check(Name, Title, "error", $"inaccessible (not more than half of the votes, or no complete active copy of a stripe): {string.Join(", ", inaccessible)}", "bring back the hosts and disks holding their components; their data cannot be read or written until then");
        }

        var parts = new List<string>();
        if (reduced.Count > 0)
        {
            parts.Add($"reduced redundancy: {string.Join(", ", reduced)}");
        }

        if (atRisk.Count > 0)
        {
            parts.Add($"components on hosts that do not answer: {string.Join(", ", atRisk)}");
        }

        if (noncompliant.Count > 0)
        {
            parts.Add($"not compliant with their policy: {string.Join(", ", noncompliant)}");
        }

        return parts.Count == 0
            ? Ok(Name, Title, $"all {state.VirtualDisks.Count} virtual disk(s) are accessible, fully redundant and compliant")
            : Check(Name, Title, "warning", string.Join("; ", parts), "bring back the hosts or disks holding the inactive components so they resync; a virtual disk with reduced redundancy survives fewer failures than its policy promises");
    }

    private static HealthCheckInfo DiskHealth(IReadOnlyList<(string Path, string Host, string State, string? Error, bool Reachable)> disks)
    {
        var bad = disks.Where(d => d.Reachable && d.State != DiskStates.Online).ToList();
        return bad.Count == 0
            ? Ok("disk-health", "Disk health", $"all {disks.Count(d => d.Reachable)} reported disk(s) are online")
            : Check("disk-health", "Disk health", "error", string.Join("; ", bad.Select(d => $"{d.Host}:{d.Path} is {d.State}{(d.Error is null ? string.Empty : $" ({d.Error})")}")), "restore or replace the disk file and restart its host; a corrupt disk is never reformatted automatically");
    }

    private static HealthCheckInfo DiskCapacity(IReadOnlyList<(string Path, string Host, long Capacity, long Used, bool Reachable)> disks)
    {
        var full = disks.Where(d => d.Reachable && d.Capacity > 0).Select(d => (d.Host, d.Path, Ratio: (double)d.Used / d.Capacity))
            .Where(d => d.Ratio >= CapacityWarning).OrderByDescending(d => d.Ratio).ToList();
        if (full.Count == 0)
        {
            return Ok("disk-capacity", "Disk capacity", $"every disk is below {CapacityWarning:P0} used");
        }

        var status = full[0].Ratio >= CapacityError ? "error" : "warning";
        return Check(
            "disk-capacity",
            "Disk capacity",
            status,
            string.Join("; ", full.Select(d => $"{d.Host}:{d.Path} is {d.Ratio.ToString("P0", CultureInfo.InvariantCulture)} used")),
            $"add disks ('converge disk add') or delete unused virtual disks; writes fail with ENOSPC on a full disk (warning at {CapacityWarning:P0}, error at {CapacityError:P0})");
    }

    private HealthReport Report(List<HealthCheckInfo> checks) => new()
    {
        Status = checks.Any(c => c.Status == "error") ? "error" : checks.Any(c => c.Status == "warning") ? "warning" : "ok",
        Host = inventory.HostName,
        CheckedAt = DateTimeOffset.UtcNow,
        Checks = checks,
    };

    private static HealthCheckInfo Ok(string name, string title, string message) => Check(name, title, "ok", message, string.Empty);

    private static HealthCheckInfo Check(string name, string title, string status, string message, string remedy) =>
        new() { Name = name, Title = title, Status = status, Message = message, Remedy = remedy };
}
