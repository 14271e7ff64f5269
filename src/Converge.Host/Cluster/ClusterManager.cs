using System.Text.Json;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Management.Contracts;
using Converge.Metadata;
using Converge.Placement;
using MetaDiskState = Converge.Metadata.DiskState;
using MetaHostState = Converge.Metadata.HostState;

namespace Converge.Host.Cluster;

/// <summary>Cluster-wide management: virtual disks placed by policy across hosts, policies, hosts and disks.</summary>
internal sealed partial class ClusterManager(ClusterNode node)
{
    private const long WitnessComponentBytes = BlockGeometry.BlockSize;
    private static readonly long MaxComponentBytes = new PlacementOptions().MaxComponentBytes;

    private ClusterMetadata Metadata => node.Metadata;

    private ClusterState State => node.Metadata.Current;

    // ---- virtual disks ----
    public IReadOnlyList<VirtualDiskInfo> ListVirtualDisks()
    {
        var state = State;
        return [.. state.VirtualDisks.Values.OrderBy(v => v.Name, StringComparer.Ordinal).Select(v => ToInfo(v, state))];
    }

    public VirtualDiskInfo GetVirtualDisk(string name)
    {
        var state = State;
        return ToInfo(Find(state, name), state);
    }

    public async Task<VirtualDiskInfo> CreateVirtualDiskAsync(CreateVirtualDiskRequest request, CancellationToken cancellationToken)
    {
        if (!NameRules.IsValid(request.Name, out var nameError))
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"virtual disk {nameError}");
        }

        var size = ParseSize(request.Size);
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var cluster = state.Cluster ?? throw new ClusterOperationException(HostErrorKind.Unavailable, "the cluster is not initialized yet");
        if (state.FindVirtualDiskByName(request.Name) is not null)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"virtual disk '{request.Name}' already exists");
        }

        var policyName = string.IsNullOrEmpty(request.Policy) ? cluster.DefaultPolicyName : request.Policy;
        if (!state.Policies.TryGetValue(policyName, out var policy))
        {
            throw new ClusterOperationException(HostErrorKind.NotFound, $"policy '{policyName}' does not exist; see 'converge policy list'");
        }

        var topology = await TopologyAsync(state, cancellationToken).ConfigureAwait(false);
        var placement = PlacementEngine.Place(Guid.NewGuid(), size, policy, topology);
        if (placement.Layout is not { } layout)
        {
            var error = placement.Error ?? "placement failed";
            var kind = error.Contains("capacity", StringComparison.Ordinal) || error.Contains("free", StringComparison.Ordinal)
                ? HostErrorKind.InsufficientCapacity
                : HostErrorKind.Invalid;
            throw new ClusterOperationException(kind, $"cannot create '{request.Name}' with policy '{policyName}': {error}");
        }

        await Metadata.ProposeOkAsync(
            new CreateVirtualDisk(Guid.NewGuid(), request.Name, policyName, layout, DateTimeOffset.UtcNow), cancellationToken).ConfigureAwait(false);
        var created = State.FindVirtualDiskByName(request.Name)
            ?? throw new ClusterOperationException(HostErrorKind.Unavailable, $"virtual disk '{request.Name}' was created but is not visible yet");
        try
        {
            await Task.WhenAll(layout.Components.Select(c => EnsureComponentAsync(State, request.Name, c, ComponentSize(c), cancellationToken))).ConfigureAwait(false);
        }
        catch (Exception e) when (e is VolumeException or HttpRequestException or OperationCanceledException or IOException or InvalidOperationException or ArgumentException)
        {
            await CleanUpAsync(created, layout.Components).ConfigureAwait(false);
            throw new ClusterOperationException(
                e is VolumeException { Error: VolumeError.NoSpace } ? HostErrorKind.InsufficientCapacity : HostErrorKind.Unavailable,
                $"cannot create '{request.Name}': creating its components failed ({e.Message}); nothing was kept", e);
        }

        Log.ClusterVirtualDisk(node.Logger, request.Name, "created", $"{ByteSize.Format(size)}, policy {policyName}, {layout.Components.Count} component(s)");
        return ToInfo(State.FindVirtualDiskByName(request.Name) ?? created, State);
    }

    /// <summary>
    /// Grows a virtual disk in place: every data component grows to the new stripe length on the disk it is on.
    /// Layouts whose stripes have several components (beyond 256 GiB per stripe) are not grown (re-placement is not built).
    /// </summary>
    public async Task<VirtualDiskInfo> ResizeVirtualDiskAsync(string name, string? sizeText, CancellationToken cancellationToken)
    {
        var size = HostInventory.ParseSize(sizeText);
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var vdisk = Find(state, name);
        if (size < vdisk.SizeBytes)
        {
            throw new ClusterOperationException(
                HostErrorKind.Invalid, $"cannot shrink '{name}' from {ByteSize.Format(vdisk.SizeBytes)} to {ByteSize.Format(size)}: virtual disks only grow");
        }

        if (size == vdisk.SizeBytes)
        {
            return ToInfo(vdisk, state);
        }

        var layout = vdisk.Layout;
        if (layout.DataComponents.Any(c => c.StripeOffset != 0 || c.Length != layout.StripeLength))
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"cannot grow '{name}': its stripes have several components; growing those needs re-placement, which is not available yet");
        }

        long unit = layout.StripeUnitBytes;
        var units = (size + unit - 1) / unit;
        var stripeLength = layout.StripeWidth == 1 ? size : (units + layout.StripeWidth - 1) / layout.StripeWidth * unit;
        if (stripeLength > MaxComponentBytes)
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"cannot grow '{name}' to {ByteSize.Format(size)}: a stripe would exceed {ByteSize.Format(MaxComponentBytes)}");
        }

        foreach (var component in layout.DataComponents)
        {
            if (state.Disks.TryGetValue(component.DiskId, out var disk) && stripeLength > disk.CapacityBytes)
            {
                throw new ClusterOperationException(
                    HostErrorKind.InsufficientCapacity,
                    $"cannot grow '{name}' to {ByteSize.Format(size)}: component {component.ComponentId:N} would need {ByteSize.Format(stripeLength)} on disk {disk.Path} of {ByteSize.Format(disk.CapacityBytes)}");
            }
        }

        var policy = state.Policies.GetValueOrDefault(vdisk.PolicyName);
        var grown = layout with
        {
            SizeBytes = size,
            StripeLength = stripeLength,
            Components = [.. layout.Components.Select(c => c.Role == ComponentRole.Data
                ? c with
                {
                    Length = stripeLength,
                    ReservedBytes = (long)Math.Ceiling(stripeLength * ((policy?.ObjectSpaceReservationPercent ?? 0) / 100.0)),
                }
                : c)],
        };

        // Components grow first (harmless while the old, smaller layout is in force), then the layout changes.
        await Task.WhenAll(grown.DataComponents.Select(c => EnsureComponentAsync(state, name, c, c.Length, cancellationToken))).ConfigureAwait(false);
        await Metadata.ProposeOkAsync(new ResizeVirtualDisk(Guid.NewGuid(), vdisk.VirtualDiskId, grown, vdisk.Generation), cancellationToken).ConfigureAwait(false);
        Log.ClusterVirtualDisk(node.Logger, name, "resized", $"{ByteSize.Format(vdisk.SizeBytes)} -> {ByteSize.Format(size)}");
        return GetVirtualDisk(name);
    }

    public async Task DeleteVirtualDiskAsync(string name, CancellationToken cancellationToken)
    {
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var vdisk = Find(state, name);
        if (vdisk.Lease is { } lease && !lease.IsExpiredAt(DateTimeOffset.UtcNow))
        {
            if (lease.HostId == node.HostId)
            {
                await node.Coordinators.ReleaseAsync(vdisk.VirtualDiskId, cancellationToken).ConfigureAwait(false);
            }
            else if (state.Hosts.TryGetValue(lease.HostId, out var holder))
            {
                await node.PostReleaseAsync(holder.Endpoints.Rpc, vdisk.VirtualDiskId, cancellationToken).ConfigureAwait(false);
            }
        }

        await Metadata.ProposeOkAsync(new DeleteVirtualDisk(Guid.NewGuid(), vdisk.VirtualDiskId, DateTimeOffset.UtcNow), cancellationToken).ConfigureAwait(false);
        await DeleteComponentsAsync(state, vdisk.Name, vdisk.Layout.Components).ConfigureAwait(false);
        Log.ClusterVirtualDisk(node.Logger, name, "deleted", $"{vdisk.Layout.Components.Count} component(s) removed");
    }

    // ---- policies ----
    public IReadOnlyList<PolicyInfo> ListPolicies()
    {
        var state = State;
        return [.. state.Policies.Values.Select(p => ToInfo(p, state))];
    }

    public PolicyInfo GetPolicy(string name)
    {
        var state = State;
        return state.Policies.TryGetValue(name, out var policy)
            ? ToInfo(policy, state)
            : throw new ClusterOperationException(HostErrorKind.NotFound, $"policy '{name}' does not exist");
    }

    public async Task<PolicyInfo> PutPolicyAsync(string name, PolicyInfo request, CancellationToken cancellationToken)
    {
        var method = (request.Method ?? "raid1").ToLowerInvariant() switch
        {
            "raid1" or "raid-1" or "mirroring" or "mirror" => FailureToleranceMethod.Mirroring,
            "raid5" or "raid-5" => FailureToleranceMethod.Raid5,
            "raid6" or "raid-6" => FailureToleranceMethod.Raid6,
            _ => throw new ClusterOperationException(HostErrorKind.Invalid, $"method '{request.Method}' is not one of raid1, raid5, raid6"),
        };
        var policy = new StoragePolicy
        {
            Name = name,
            FailuresToTolerate = request.FailuresToTolerate,
            StripeWidth = request.StripeWidth,
            ObjectSpaceReservationPercent = request.ObjectSpaceReservationPercent,
            ChecksumEnabled = request.ChecksumEnabled,
            IopsLimit = request.IopsLimit,
            Method = method,
        };
        var errors = policy.Validate();
        if (errors.Count > 0)
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"policy '{name}' is invalid: {string.Join("; ", errors)}");
        }

        var result = await Metadata.ProposeAsync(new PutPolicy(Guid.NewGuid(), policy), cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, result.Error ?? "the policy was refused");
        }

        return GetPolicy(name);
    }

    public async Task DeletePolicyAsync(string name, CancellationToken cancellationToken)
    {
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        if (!State.Policies.ContainsKey(name))
        {
            throw new ClusterOperationException(HostErrorKind.NotFound, $"policy '{name}' does not exist");
        }

        await Metadata.ProposeOkAsync(new DeletePolicy(Guid.NewGuid(), name), cancellationToken).ConfigureAwait(false);
    }

    // ---- hosts, disks, status ----
    public async Task<IReadOnlyList<ClusterHostInfo>> ListHostsAsync(CancellationToken cancellationToken)
    {
        var state = State;
        var stats = await GatherStatsAsync(state, cancellationToken).ConfigureAwait(false);
        return HostInfos(state, stats);
    }

    public async Task<ClusterStatusInfo> StatusAsync(CancellationToken cancellationToken)
    {
        var state = State;
        var cluster = state.Cluster ?? throw new ClusterOperationException(HostErrorKind.Unavailable, "the cluster is not initialized yet");
        var stats = await GatherStatsAsync(state, cancellationToken).ConfigureAwait(false);
        var provisioned = Provisioned(state);
        var disks = new List<ClusterDiskInfo>();
        foreach (var disk in state.Disks.Values.OrderBy(d => HostName(state, d.HostId), StringComparer.Ordinal).ThenBy(d => d.Path, StringComparer.Ordinal))
        {
            var reported = stats.GetValueOrDefault(disk.HostId)?.FirstOrDefault(s => s.DiskId.ToString("N") == disk.DiskId);
            disks.Add(new ClusterDiskInfo
            {
                Id = disk.DiskId,
                HostId = disk.HostId,
                HostName = HostName(state, disk.HostId),
                Path = disk.Path,
                State = reported is { Online: false } ? "failed" : disk.State.ToString().ToLowerInvariant(),
                CapacityBytes = disk.CapacityBytes,
                UsedBytes = reported?.UsedBytes ?? 0,
                FreeBytes = reported?.FreeBytes ?? 0,
                Reachable = reported is not null,
                ProvisionedBytes = provisioned.GetValueOrDefault(disk.DiskId).Bytes,
                ComponentCount = provisioned.GetValueOrDefault(disk.DiskId).Count,
            });
        }

        return new ClusterStatusInfo
        {
            ClusterId = cluster.ClusterId,
            Name = cluster.Name,
            DefaultPolicy = cluster.DefaultPolicyName,
            VoterTarget = cluster.VoterTarget,
            Leader = node.Metadata.LeaderHostId() is { } leader ? HostName(state, leader) : null,
            AppliedIndex = state.AppliedIndex,
            Hosts = HostInfos(state, stats),
            Disks = disks,
            VirtualDisks = [.. state.VirtualDisks.Values.OrderBy(v => v.Name, StringComparer.Ordinal).Select(v => ToInfo(v, state))],
            Policies = [.. state.Policies.Values.Select(p => ToInfo(p, state))],
            CapacityBytes = disks.Sum(d => d.CapacityBytes),
            UsedBytes = disks.Sum(d => d.UsedBytes),
            ProvisionedBytes = disks.Sum(d => d.ProvisionedBytes),
            FreeBytes = disks.Sum(d => d.FreeBytes),
        };
    }

    /// <summary>Bytes and count of the components placed on each disk (full lengths: what thin provisioning promised).</summary>
    private static Dictionary<string, (long Bytes, int Count)> Provisioned(ClusterState state)
    {
        var result = new Dictionary<string, (long Bytes, int Count)>(StringComparer.Ordinal);
        foreach (var component in state.VirtualDisks.Values.SelectMany(v => v.Layout.Components))
        {
            var (bytes, count) = result.GetValueOrDefault(component.DiskId);
            result[component.DiskId] = (bytes + ComponentSize(component), count + 1);
        }

        return result;
    }

    public async Task<ClusterHostInfo> GetHostAsync(string nameOrId, CancellationToken cancellationToken)
    {
        var state = State;
        var host = FindHost(state, nameOrId);
        var stats = await GatherStatsAsync(state, cancellationToken).ConfigureAwait(false);
        return HostInfos(state, stats).First(h => h.Id == host.HostId);
    }

    /// <summary>
    /// Commits that a host is in maintenance, in the given mode. ensure-accessibility is refused when a virtual disk
    /// would be inaccessible without the host's components. The data movement behind the modes is not built yet:
    /// placement only stops choosing the host.
    /// </summary>
    public async Task<ClusterHostInfo> EnterMaintenanceAsync(string nameOrId, string? mode, CancellationToken cancellationToken)
    {
        mode = string.IsNullOrWhiteSpace(mode) ? MaintenanceModes.EnsureAccessibility : mode.Trim().ToLowerInvariant();
        if (!MaintenanceModes.All.Contains(mode))
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"maintenance mode '{mode}' is not one of {string.Join(", ", MaintenanceModes.All)}");
        }

        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var host = FindHost(state, nameOrId);
        if (host.State == MetaHostState.Maintenance)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"host {host.Name} is already in maintenance ({host.MaintenanceMode}); exit it first to change the mode");
        }

        if (host.State is MetaHostState.Decommissioned or MetaHostState.Decommissioning)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"host {host.Name} is {host.State.ToString().ToLowerInvariant()}");
        }

        if (mode == MaintenanceModes.EnsureAccessibility)
        {
            var lost = state.VirtualDisks.Values
                .Where(v => !v.Layout.IsAccessible(c => c.HostId != host.HostId && v.StateOf(c.ComponentId) == ComponentState.Active))
                .Select(v => v.Name).OrderBy(n => n, StringComparer.Ordinal).ToList();
            if (lost.Count > 0)
            {
                throw new ClusterOperationException(
                    HostErrorKind.Conflict,
                    $"cannot enter maintenance on {host.Name} with ensure-accessibility: virtual disk(s) {string.Join(", ", lost)} would be inaccessible without it, " +
                    "use full-data-migration to move their data away first, or no-data-migration to accept that");
            }
        }

        await Metadata.ProposeOkAsync(new UpdateHost(Guid.NewGuid(), host.HostId, State: MetaHostState.Maintenance, MaintenanceMode: mode), cancellationToken).ConfigureAwait(false);
        Log.ClusterVirtualDisk(node.Logger, host.Name, "entered maintenance", mode);
        return await GetHostAsync(host.HostId, cancellationToken).ConfigureAwait(false);
    }

    public async Task<ClusterHostInfo> ExitMaintenanceAsync(string nameOrId, CancellationToken cancellationToken)
    {
        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var host = FindHost(state, nameOrId);
        if (host.State != MetaHostState.Maintenance)
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"host {host.Name} is not in maintenance (it is {host.State.ToString().ToLowerInvariant()})");
        }

        await Metadata.ProposeOkAsync(new UpdateHost(Guid.NewGuid(), host.HostId, State: MetaHostState.Active), cancellationToken).ConfigureAwait(false);
        Log.ClusterVirtualDisk(node.Logger, host.Name, "left maintenance", "active");
        return await GetHostAsync(host.HostId, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Points a virtual disk at another policy. Only when the layout stays as it is (same method, failures to tolerate
    /// and stripe width); anything else needs an online re-layout, which is not built: 409.
    /// </summary>
    public async Task<VirtualDiskInfo> SetPolicyAsync(string name, string? policyName, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(policyName))
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, "give the name of the new policy: {\"policy\": \"NAME\"}");
        }

        await BarrierAsync(cancellationToken).ConfigureAwait(false);
        var state = State;
        var vdisk = Find(state, name);
        if (!state.Policies.TryGetValue(policyName, out var policy))
        {
            throw new ClusterOperationException(HostErrorKind.NotFound, $"policy '{policyName}' does not exist; see 'converge policy list'");
        }

        if (vdisk.PolicyName == policyName)
        {
            return ToInfo(vdisk, state);
        }

        var layout = vdisk.Layout;
        if (policy.Method != FailureToleranceMethod.Mirroring || layout.ReplicaCount != policy.FailuresToTolerate + 1 || layout.StripeWidth != policy.StripeWidth)
        {
            throw new ClusterOperationException(
                HostErrorKind.Conflict,
                $"policy '{policyName}' (FTT={policy.FailuresToTolerate}, stripe width {policy.StripeWidth}, {policy.Method}) needs a different layout than " +
                $"'{name}' has ({layout.ReplicaCount} replica(s), stripe width {layout.StripeWidth}); online re-layout is not built yet. " +
                "Only policies with the same failures to tolerate, stripe width and method can be applied (IOPS limit, reservation, checksum may differ)");
        }

        await Metadata.ProposeOkAsync(new SetVirtualDiskPolicy(Guid.NewGuid(), vdisk.VirtualDiskId, policyName, vdisk.Generation), cancellationToken).ConfigureAwait(false);
        Log.ClusterVirtualDisk(node.Logger, name, "now follows policy", policyName);
        return GetVirtualDisk(name);
    }

    public IReadOnlyList<ComplianceInfo> Compliance()
    {
        var state = State;
        return
        [
            .. state.VirtualDisks.Values.OrderBy(v => v.Name, StringComparer.Ordinal).Select(v =>
            {
                var info = ToInfo(v, state);
                return new ComplianceInfo
                {
                    VirtualDisk = v.Name,
                    Policy = v.PolicyName,
                    Compliance = info.Compliance ?? "noncompliant",
                    Detail = info.ComplianceDetail,
                    State = info.State,
                    Components = v.Layout.Components.Count,
                    ActiveComponents = v.Layout.Components.Count(c => v.StateOf(c.ComponentId) == ComponentState.Active),
                };
            }),
        ];
    }

    public IReadOnlyList<FaultDomainInfo> FaultDomains()
    {
        var state = State;
        return
        [
            .. state.Hosts.Values.Where(h => h.State != MetaHostState.Decommissioned)
                .GroupBy(h => h.FaultDomain ?? h.Name, StringComparer.Ordinal)
                .OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => new FaultDomainInfo
                {
                    Name = g.Key,
                    Hosts = [.. g.Select(h => h.Name).Order(StringComparer.Ordinal)],
                    Explicit = g.Any(h => h.FaultDomain is not null),
                }),
        ];
    }

    private static HostRecord FindHost(ClusterState state, string nameOrId) =>
        state.FindHostByName(nameOrId) ?? state.Hosts.GetValueOrDefault(nameOrId)
        ?? throw new ClusterOperationException(HostErrorKind.NotFound, $"host '{nameOrId}' is not in the cluster; see 'converge host list'");

    /// <summary>
    /// Changes start from a linearizable read, so they see what any host committed before (read your writes across
    /// hosts). Like proposals (<see cref="ClusterMetadata.ProposeAsync"/>), it waits out an election for up to 5 s: an
    /// operator's command that lands in the few hundred milliseconds without a leader should not fail.
    /// </summary>
    private async Task BarrierAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(5));
        while (true)
        {
            Exception failure;
            try
            {
                await Metadata.Service.BarrierAsync(timeout.Token).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException or InvalidOperationException ||
                                      (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                failure = e;
            }

            try
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100), timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new ClusterOperationException(HostErrorKind.Unavailable, $"the cluster metadata is not reachable: {failure.Message}", failure);
            }
        }
    }

    /// <summary>Placement's view: registered hosts and disks with the free bytes each host reports (2 s; silent hosts are unusable).</summary>
    internal async Task<ClusterTopology> TopologyAsync(ClusterState state, CancellationToken cancellationToken)
    {
        var stats = await GatherStatsAsync(state, cancellationToken).ConfigureAwait(false);
        var hosts = state.Hosts.Values
            .Select(h => new HostCandidate(h.HostId, h.FaultDomain, h.State == MetaHostState.Active && stats.GetValueOrDefault(h.HostId) is not null))
            .ToList();
        var disks = state.Disks.Values.Select(d =>
        {
            var reported = stats.GetValueOrDefault(d.HostId)?.FirstOrDefault(s => s.DiskId.ToString("N") == d.DiskId);
            return new DiskCandidate(d.DiskId, d.HostId, d.CapacityBytes, reported?.FreeBytes ?? 0, d.State == MetaDiskState.Online && reported is { Online: true });
        }).ToList();
        return new ClusterTopology(hosts, disks);
    }

    private async Task<Dictionary<string, IReadOnlyList<PeerDiskStats>?>> GatherStatsAsync(ClusterState state, CancellationToken cancellationToken)
    {
        var hosts = state.Hosts.Values.Where(h => h.State != MetaHostState.Decommissioned).ToList();
        var results = await Task.WhenAll(hosts.Select(async h => (h.HostId, Stats: h.HostId == node.HostId
            ? node.Local.DiskStats()
            : await node.Peers.TryDiskStatsAsync(h.Endpoints.PeerData, cancellationToken).ConfigureAwait(false)))).ConfigureAwait(false);
        return results.ToDictionary(r => r.HostId, r => r.Stats, StringComparer.Ordinal);
    }

    private List<ClusterHostInfo> HostInfos(ClusterState state, Dictionary<string, IReadOnlyList<PeerDiskStats>?> stats)
    {
        var leader = node.Metadata.LeaderHostId();
        return
        [
            .. state.Hosts.Values.OrderBy(h => h.Name, StringComparer.Ordinal).Select(h => new ClusterHostInfo
            {
                Id = h.HostId,
                Name = h.Name,
                FaultDomain = h.FaultDomain,
                Api = h.Endpoints.Api,
                Nbd = h.Endpoints.Nbd,
                Peer = h.Endpoints.PeerData,
                Raft = h.Endpoints.Raft,
                Voter = h.Voter,
                Leader = h.HostId == leader,
                State = h.State.ToString().ToLowerInvariant(),
                Reachable = stats.GetValueOrDefault(h.HostId) is not null,
                DiskCount = state.Disks.Values.Count(d => d.HostId == h.HostId),
                MaintenanceMode = h.MaintenanceMode,
                ComponentCount = state.VirtualDisks.Values.Sum(v => v.Layout.Components.Count(c => c.HostId == h.HostId)),
            }),
        ];
    }

    internal async Task EnsureComponentAsync(ClusterState state, string vdiskName, ComponentPlacement component, long size, CancellationToken cancellationToken)
    {
        var name = LocalComponents.ComponentName(vdiskName, component.ComponentId);
        var diskId = Guid.ParseExact(component.DiskId, "N");
        if (component.HostId == node.HostId)
        {
            await node.Local.EnsureAsync(component.ComponentId, diskId, name, size, cancellationToken).ConfigureAwait(false);
            return;
        }

        var host = state.Hosts.GetValueOrDefault(component.HostId)
            ?? throw new VolumeException(VolumeError.Unavailable, $"host {component.HostId} is not registered");
        await node.Peers.EnsureComponentAsync(host.Endpoints.PeerData, component.ComponentId, diskId, size, name, cancellationToken).ConfigureAwait(false);
    }

    private async Task DeleteComponentsAsync(ClusterState state, string vdiskName, IEnumerable<ComponentPlacement> components)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        foreach (var component in components)
        {
            try
            {
                if (component.HostId == node.HostId)
                {
                    await node.Local.DeleteAsync(component.ComponentId, timeout.Token).ConfigureAwait(false);
                }
                else if (state.Hosts.TryGetValue(component.HostId, out var host))
                {
                    await node.Peers.DeleteComponentAsync(host.Endpoints.PeerData, component.ComponentId, timeout.Token).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is VolumeException or OperationCanceledException or IOException or InvalidOperationException)
            {
                Log.CleanupFailed(node.Logger, $"{vdiskName}/{component.ComponentId:N}", e.Message);
            }
        }
    }

    /// <summary>
    /// The record goes first: hosts delete a component only once no layout names it (ComponentPeerHandler), and a
    /// record left behind keeps components that still exist rather than naming deleted ones.
    /// </summary>
    private async Task CleanUpAsync(VirtualDiskRecord created, IEnumerable<ComponentPlacement> components)
    {
        var state = State;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await Metadata.ProposeAsync(new DeleteVirtualDisk(Guid.NewGuid(), created.VirtualDiskId, DateTimeOffset.UtcNow), timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is MetadataUnavailableException or OperationCanceledException)
        {
            Log.CleanupFailed(node.Logger, created.Name, e.Message);
            return;
        }

        await DeleteComponentsAsync(state, created.Name, components).ConfigureAwait(false);
    }

    private static long ComponentSize(ComponentPlacement component) =>
        component.Role == ComponentRole.Witness ? WitnessComponentBytes : component.Length;

    private static long ParseSize(JsonElement size)
    {
        try
        {
            return HostInventory.ParseSize(size);
        }
        catch (HostOperationException e)
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, e.Message, e);
        }
    }

    private static VirtualDiskRecord Find(ClusterState state, string name) =>
        state.FindVirtualDiskByName(name) ?? throw new ClusterOperationException(HostErrorKind.NotFound, $"virtual disk '{name}' does not exist");

    private static string HostName(ClusterState state, string hostId) => state.Hosts.TryGetValue(hostId, out var h) ? h.Name : hostId;

    private static PolicyInfo ToInfo(StoragePolicy policy, ClusterState state) => new()
    {
        Name = policy.Name,
        FailuresToTolerate = policy.FailuresToTolerate,
        StripeWidth = policy.StripeWidth,
        ObjectSpaceReservationPercent = policy.ObjectSpaceReservationPercent,
        ChecksumEnabled = policy.ChecksumEnabled,
        IopsLimit = policy.IopsLimit,
        Method = policy.Method switch
        {
            FailureToleranceMethod.Raid5 => "raid5",
            FailureToleranceMethod.Raid6 => "raid6",
            _ => "raid1",
        },
        RequiredFaultDomains = policy.RequiredFaultDomains,
        IsDefault = string.Equals(state.Cluster?.DefaultPolicyName, policy.Name, StringComparison.Ordinal),
    };

    private VirtualDiskInfo ToInfo(VirtualDiskRecord vdisk, ClusterState state)
    {
        var layout = vdisk.Layout;
        bool Active(ComponentPlacement c) => vdisk.StateOf(c.ComponentId) == ComponentState.Active;
        var accessible = layout.IsAccessible(Active);
        var first = layout.DataComponents.FirstOrDefault();
        var firstDisk = first is null ? null : state.Disks.GetValueOrDefault(first.DiskId);
        var lease = vdisk.Lease;
        var coordinator = lease is not null && !lease.IsExpiredAt(DateTimeOffset.UtcNow) ? HostName(state, lease.HostId) : null;
        return new VirtualDiskInfo
        {
            Name = vdisk.Name,
            Id = vdisk.VirtualDiskId,
            SizeBytes = vdisk.SizeBytes,
            UsedBytes = layout.DataComponents.Where(c => c.Replica == 0 && c.HostId == node.HostId)
                .Sum(c => node.Local.FindComponent(c.ComponentId)?.UsedBytes ?? 0),
            State = accessible ? VirtualDiskStates.Online : VirtualDiskStates.Unavailable,
            DiskId = first?.DiskId ?? string.Empty,
            DiskPath = firstDisk is null ? string.Empty : $"{HostName(state, firstDisk.HostId)}:{firstDisk.Path}",
            NbdUri = $"nbd://{node.NbdEndpoint}/{vdisk.Name}",
            Policy = vdisk.PolicyName,
            Generation = vdisk.Generation,
            Coordinator = coordinator,
            Compliance = Compliance(vdisk, state, out var why),
            ComplianceDetail = why,
            Layout =
            [
                .. layout.Components.OrderBy(c => c.Role).ThenBy(c => c.Replica).ThenBy(c => c.Stripe).ThenBy(c => c.StripeOffset)
                    .Select(c => new ComponentInfo
                    {
                        Id = c.ComponentId.ToString("N"),
                        Role = c.Role == ComponentRole.Witness ? "witness" : "data",
                        Replica = c.Replica,
                        Stripe = c.Stripe,
                        StripeOffset = c.StripeOffset,
                        Length = c.Length,
                        HostId = c.HostId,
                        HostName = HostName(state, c.HostId),
                        FaultDomain = c.FaultDomain,
                        DiskId = c.DiskId,
                        Votes = c.Votes,
                        State = vdisk.StateOf(c.ComponentId).ToString().ToLowerInvariant(),
                        Replaces = c.Replaces?.ToString("N"),
                    }),
            ],
        };
    }

    /// <summary>Compliant: every component active and the layout has what the policy asks (replicas, stripes, witnesses, distinct domains).</summary>
    private static string Compliance(VirtualDiskRecord vdisk, ClusterState state, out string? why)
    {
        var problems = new List<string>();
        var layout = vdisk.Layout;
        // A move's new copy being filled is an extra copy beside a complete one: it does not make the layout noncompliant.
        var inactive = layout.Components.Where(c => !c.IsIncoming && vdisk.StateOf(c.ComponentId) != ComponentState.Active).ToList();
        if (inactive.Count > 0)
        {
            problems.Add($"{inactive.Count} component(s) not active");
        }

        if (!state.Policies.TryGetValue(vdisk.PolicyName, out var policy))
        {
            problems.Add($"policy '{vdisk.PolicyName}' no longer exists");
        }
        else
        {
            if (layout.ReplicaCount != policy.FailuresToTolerate + 1)
            {
                problems.Add($"{layout.ReplicaCount} replica(s); the policy asks for {policy.FailuresToTolerate + 1}");
            }

            if (layout.StripeWidth != policy.StripeWidth)
            {
                problems.Add($"stripe width {layout.StripeWidth}; the policy asks for {policy.StripeWidth}");
            }

            if (layout.Witnesses.Count() < policy.FailuresToTolerate)
            {
                problems.Add($"{layout.Witnesses.Count()} witness(es); the policy needs {policy.FailuresToTolerate}");
            }
        }

        var domains = layout.DataComponents.GroupBy(c => c.Replica).Select(g => g.First().FaultDomain)
            .Concat(layout.Witnesses.Select(w => w.FaultDomain)).ToList();
        if (domains.Distinct(StringComparer.Ordinal).Count() != domains.Count)
        {
            problems.Add("two replicas or witnesses share a fault domain");
        }

        why = problems.Count == 0 ? null : string.Join("; ", problems);
        return problems.Count == 0 ? "compliant" : "noncompliant";
    }
}
