using System.Collections.Immutable;
using Converge.Common;
using Converge.Placement;

namespace Converge.Metadata;

public sealed partial record ClusterState
{
    /// <summary>
    /// Applies a command: pure and deterministic (no clock, randomness or I/O). A refused command returns this very
    /// state and a result saying why. A command whose id was already applied successfully returns this state and the
    /// original result, so a retried proposal is applied at most once.
    /// </summary>
    public (ClusterState State, CommandResult Result) Apply(MetadataCommand command)
    {
        ArgumentNullException.ThrowIfNull(command);
        var previous = RecentCommands.Find(c => c.CommandId == command.CommandId);
        if (previous is not null)
        {
            return (this, previous.Result);
        }

        if (Cluster is null && command is not InitializeCluster)
        {
            return (this, CommandResult.Refused("the cluster is not initialized"));
        }

        var (state, result) = command switch
        {
            InitializeCluster c => ApplyInitialize(c),
            RegisterHost c => ApplyRegisterHost(c),
            UpdateHost c => ApplyUpdateHost(c),
            RegisterDisk c => ApplyRegisterDisk(c),
            UpdateDiskState c => ApplyUpdateDiskState(c),
            PutPolicy c => ApplyPutPolicy(c),
            DeletePolicy c => ApplyDeletePolicy(c),
            CreateVirtualDisk c => ApplyCreateVirtualDisk(c),
            ResizeVirtualDisk c => ApplyResizeVirtualDisk(c),
            DeleteVirtualDisk c => ApplyDeleteVirtualDisk(c),
            AcquireLease c => ApplyAcquireLease(c),
            ReleaseLease c => ApplyReleaseLease(c),
            SetComponentState c => ApplySetComponentState(c),
            ReplaceComponent c => ApplyReplaceComponent(c),
            SetVirtualDiskPolicy c => ApplySetVirtualDiskPolicy(c),
            BeginMove c => ApplyBeginMove(c),
            CompleteMove c => ApplyCompleteMove(c),
            CancelMove c => ApplyCancelMove(c),
            SetRebalance c => ApplySetRebalance(c),
            CreateApiToken c => ApplyCreateApiToken(c),
            RevokeApiToken c => ApplyRevokeApiToken(c),
            CreateJoinToken c => ApplyCreateJoinToken(c),
            ConsumeJoinToken c => ApplyConsumeJoinToken(c),
            RecordCertificate c => ApplyRecordCertificate(c),
            RevokeHostCertificates c => ApplyRevokeHostCertificates(c),
            _ => Refuse($"unknown command {command.GetType().Name}"),
        };

        if (!result.Succeeded)
        {
            return (this, result);
        }

        var recent = RecentCommands.Add(new AppliedCommand(command.CommandId, result));
        if (recent.Count > DedupeWindow)
        {
            recent = recent.RemoveRange(0, recent.Count - DedupeWindow);
        }

        return (state with { RecentCommands = recent }, result);
    }

    private (ClusterState, CommandResult) Refuse(string error) => (this, CommandResult.Refused(error));

    private (ClusterState, CommandResult) ApplyInitialize(InitializeCluster c)
    {
        if (Cluster is not null)
        {
            return Refuse($"the cluster is already initialized as '{Cluster.Name}' ({Cluster.ClusterId})");
        }

        if (!NameRules.IsValid(c.Name, out var nameError))
        {
            return Refuse($"cluster {nameError}");
        }

        if (string.IsNullOrWhiteSpace(c.ClusterId))
        {
            return Refuse("cluster id is empty");
        }

        if (c.VoterTarget is not (1 or 3 or 5))
        {
            return Refuse($"voter target must be 1, 3 or 5; got {c.VoterTarget}");
        }

        var policyErrors = c.DefaultPolicy.Validate();
        if (policyErrors.Count > 0)
        {
            return Refuse($"default policy '{c.DefaultPolicy.Name}' is invalid: {string.Join("; ", policyErrors)}");
        }

        return (this with
        {
            // The admin token is kept salted in ApiTokens; ClusterInfo.AdminTokenHash stays null (clusters founded before keep theirs).
            Cluster = new ClusterInfo(c.ClusterId, c.Name, c.CreatedAt, c.DefaultPolicy.Name, c.VoterTarget, null, c.CaCertificatePem, c.CaFingerprint),
            Policies = Policies.SetItem(c.DefaultPolicy.Name, c.DefaultPolicy),
            ApiTokens = FounderToken(c),
        }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyRegisterHost(RegisterHost c)
    {
        if (string.IsNullOrWhiteSpace(c.HostId))
        {
            return Refuse("host id is empty");
        }

        if (!NameRules.IsValid(c.Name, out var nameError))
        {
            return Refuse($"host {nameError}");
        }

        if (Hosts.ContainsKey(c.HostId))
        {
            return Refuse($"host '{c.HostId}' is already registered");
        }

        if (FindHostByName(c.Name) is { } sameName)
        {
            return Refuse($"host name '{c.Name}' is already used by host '{sameName.HostId}'");
        }

        if (c.Voter && string.IsNullOrEmpty(c.Endpoints.Raft))
        {
            return Refuse($"host '{c.Name}' is a voter but has no Raft endpoint");
        }

        var host = new HostRecord(c.HostId, c.Name, NullIfEmpty(c.FaultDomain), c.Endpoints, c.Voter, HostState.Active, c.JoinedAt);
        return (this with { Hosts = Hosts.Add(c.HostId, host) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyUpdateHost(UpdateHost c)
    {
        if (!Hosts.TryGetValue(c.HostId, out var host))
        {
            return Refuse($"host '{c.HostId}' does not exist");
        }

        if (host.State == HostState.Decommissioned)
        {
            return Refuse($"host '{host.Name}' is decommissioned and cannot change");
        }

        if (c.MaintenanceMode is not null && !MaintenanceModes.All.Contains(c.MaintenanceMode))
        {
            return Refuse($"maintenance mode '{c.MaintenanceMode}' is not one of {string.Join(", ", MaintenanceModes.All)}");
        }

        var state = c.State ?? host.State;
        if (state is HostState.Decommissioning or HostState.Decommissioned && (c.Voter ?? host.Voter))
        {
            return Refuse($"host '{host.Name}' is a Raft voter; a voter cannot be decommissioned");
        }

        if (state == HostState.Decommissioned && host.State != HostState.Decommissioning)
        {
            return Refuse($"host '{host.Name}' must be decommissioning (emptied by moves) before it is decommissioned");
        }

        if (state == HostState.Decommissioned && ComponentsOnHost(host.HostId) is > 0 and var left)
        {
            return Refuse($"host '{host.Name}' still holds {left} component(s)");
        }

        var updated = host with
        {
            State = state,
            MaintenanceMode = state == HostState.Maintenance
                ? c.MaintenanceMode ?? host.MaintenanceMode ?? MaintenanceModes.EnsureAccessibility
                : null,
            Endpoints = c.Endpoints ?? host.Endpoints,
            Voter = c.Voter ?? host.Voter,
            FaultDomain = c.FaultDomain is null ? host.FaultDomain : NullIfEmpty(c.FaultDomain),
        };
        if (updated.Voter && string.IsNullOrEmpty(updated.Endpoints.Raft))
        {
            return Refuse($"host '{host.Name}' would be a voter without a Raft endpoint");
        }

        // A decommissioned host's certificates are revoked in the same step: it can no longer reach any cluster port.
        var next = this with { Hosts = Hosts.SetItem(c.HostId, updated) };
        return (updated.State == HostState.Decommissioned && host.State != HostState.Decommissioned
            ? next.RevokeCertificatesOf(c.HostId, DateTimeOffset.UnixEpoch, "decommissioned")
            : next, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyRegisterDisk(RegisterDisk c)
    {
        if (string.IsNullOrWhiteSpace(c.DiskId))
        {
            return Refuse("disk id is empty");
        }

        if (!Hosts.TryGetValue(c.HostId, out var host))
        {
            return Refuse($"host '{c.HostId}' does not exist");
        }

        if (host.State == HostState.Decommissioned)
        {
            return Refuse($"host '{host.Name}' is decommissioned");
        }

        if (Disks.TryGetValue(c.DiskId, out var existing))
        {
            return Refuse($"disk '{c.DiskId}' is already registered on host '{existing.HostId}' at '{existing.Path}'");
        }

        if (c.CapacityBytes <= 0)
        {
            return Refuse($"disk capacity must be positive; got {c.CapacityBytes}");
        }

        var disk = new DiskRecord(c.DiskId, c.HostId, c.Path, c.CapacityBytes, DiskState.Online);
        return (this with { Disks = Disks.Add(c.DiskId, disk) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyUpdateDiskState(UpdateDiskState c)
    {
        if (!Disks.TryGetValue(c.DiskId, out var disk))
        {
            return Refuse($"disk '{c.DiskId}' does not exist");
        }

        if (disk.State == DiskState.Removed && c.State != DiskState.Removed)
        {
            return Refuse($"disk '{c.DiskId}' was removed and cannot change state");
        }

        if (c.State == DiskState.Removed && ComponentsOnDisk(disk.DiskId) is > 0 and var left)
        {
            return Refuse($"disk '{c.DiskId}' still holds {left} component(s)");
        }

        return (this with { Disks = Disks.SetItem(c.DiskId, disk with { State = c.State }) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyPutPolicy(PutPolicy c)
    {
        var errors = c.Policy.Validate();
        if (errors.Count > 0)
        {
            return Refuse($"policy '{c.Policy.Name}' is invalid: {string.Join("; ", errors)}");
        }

        return (this with { Policies = Policies.SetItem(c.Policy.Name, c.Policy) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyDeletePolicy(DeletePolicy c)
    {
        if (!Policies.ContainsKey(c.Name))
        {
            return Refuse($"policy '{c.Name}' does not exist");
        }

        if (string.Equals(Cluster?.DefaultPolicyName, c.Name, StringComparison.Ordinal))
        {
            return Refuse($"policy '{c.Name}' is the cluster's default policy");
        }

        var users = VirtualDisks.Values.Where(v => string.Equals(v.PolicyName, c.Name, StringComparison.Ordinal)).Select(v => v.Name).ToList();
        if (users.Count > 0)
        {
            return Refuse($"policy '{c.Name}' is used by virtual disk(s) {string.Join(", ", users.Select(u => $"'{u}'"))}");
        }

        return (this with { Policies = Policies.Remove(c.Name) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyCreateVirtualDisk(CreateVirtualDisk c)
    {
        var id = c.Layout.ObjectId.ToString("N");
        if (!NameRules.IsValid(c.Name, out var nameError))
        {
            return Refuse($"virtual disk {nameError}");
        }

        if (FindVirtualDiskByName(c.Name) is not null)
        {
            return Refuse($"virtual disk '{c.Name}' already exists");
        }

        if (VirtualDisks.ContainsKey(id))
        {
            return Refuse($"virtual disk id '{id}' already exists");
        }

        if (!Policies.ContainsKey(c.PolicyName))
        {
            return Refuse($"policy '{c.PolicyName}' does not exist");
        }

        if (ValidateLayout(c.Layout) is { } layoutError)
        {
            return Refuse(layoutError);
        }

        var record = new VirtualDiskRecord(
            id, c.Name, c.Layout.SizeBytes, c.PolicyName, c.Layout, InitialStates(c.Layout, previous: null),
            Generation: 1, Lease: null, LeaseEpoch: 0, c.CreatedAt);
        return (this with { VirtualDisks = VirtualDisks.Add(id, record) }, CommandResult.Ok(record.Generation));
    }

    private (ClusterState, CommandResult) ApplyResizeVirtualDisk(ResizeVirtualDisk c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Generation != c.ExpectedGeneration)
        {
            return Refuse($"virtual disk '{vdisk.Name}' is at generation {vdisk.Generation}, not {c.ExpectedGeneration}");
        }

        if (c.Layout.ObjectId.ToString("N") != vdisk.VirtualDiskId)
        {
            return Refuse($"layout is for object '{c.Layout.ObjectId:N}', not virtual disk '{vdisk.VirtualDiskId}'");
        }

        if (vdisk.Layout.Components.Any(x => x.IsIncoming))
        {
            return Refuse($"virtual disk '{vdisk.Name}' is moving a component; resize it when the move is over");
        }

        if (c.Layout.SizeBytes <= vdisk.SizeBytes)
        {
            return Refuse($"virtual disk '{vdisk.Name}' can only grow: it has {vdisk.SizeBytes} bytes, asked for {c.Layout.SizeBytes}");
        }

        if (ValidateLayout(c.Layout) is { } layoutError)
        {
            return Refuse(layoutError);
        }

        var updated = vdisk with
        {
            SizeBytes = c.Layout.SizeBytes,
            Layout = c.Layout,
            ComponentStates = InitialStates(c.Layout, vdisk.ComponentStates),
            Generation = vdisk.Generation + 1,
        };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplyDeleteVirtualDisk(DeleteVirtualDisk c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Lease is { } lease && !lease.IsExpiredAt(c.Now))
        {
            return Refuse($"virtual disk '{vdisk.Name}' is coordinated by host '{lease.HostId}' until {lease.ExpiresAt:O}");
        }

        return (this with { VirtualDisks = VirtualDisks.Remove(vdisk.VirtualDiskId) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyAcquireLease(AcquireLease c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (!Hosts.TryGetValue(c.HostId, out var host))
        {
            return Refuse($"host '{c.HostId}' does not exist");
        }

        if (host.State != HostState.Active)
        {
            return Refuse($"host '{host.Name}' is {host.State.ToString().ToLowerInvariant()} and cannot coordinate");
        }

        if (c.Duration <= TimeSpan.Zero)
        {
            return Refuse($"lease duration must be positive; got {c.Duration}");
        }

        var current = vdisk.Lease;
        CoordinatorLease granted;
        if (current is not null && string.Equals(current.HostId, c.HostId, StringComparison.Ordinal) && c.RequestedEpoch == current.Epoch)
        {
            // Renewal by the holder: nobody took the lease over (that would have raised the epoch), so it stays valid.
            granted = current with { ExpiresAt = Max(current.ExpiresAt, c.Now + c.Duration) };
        }
        else if (current is not null && !current.IsExpiredAt(c.Now))
        {
            return Refuse($"the lease on virtual disk '{vdisk.Name}' is held by host '{current.HostId}' (epoch {current.Epoch}) until {current.ExpiresAt:O}");
        }
        else if (c.RequestedEpoch != vdisk.LeaseEpoch + 1)
        {
            return Refuse($"the next coordinator epoch of virtual disk '{vdisk.Name}' is {vdisk.LeaseEpoch + 1}; requested {c.RequestedEpoch}");
        }
        else
        {
            granted = new CoordinatorLease(c.HostId, c.RequestedEpoch, c.Now + c.Duration);
        }

        var updated = vdisk with { Lease = granted, LeaseEpoch = granted.Epoch };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) },
            CommandResult.Ok(updated.Generation, granted));
    }

    private (ClusterState, CommandResult) ApplyReleaseLease(ReleaseLease c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Lease is not { } lease || !string.Equals(lease.HostId, c.HostId, StringComparison.Ordinal) || lease.Epoch != c.Epoch)
        {
            return Refuse($"host '{c.HostId}' does not hold the lease on virtual disk '{vdisk.Name}' at epoch {c.Epoch}");
        }

        var updated = vdisk with { Lease = null };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplySetComponentState(SetComponentState c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Generation != c.ExpectedGeneration)
        {
            return Refuse($"virtual disk '{vdisk.Name}' is at generation {vdisk.Generation}, not {c.ExpectedGeneration}");
        }

        var key = VirtualDiskRecord.ComponentKey(c.ComponentId);
        if (!vdisk.ComponentStates.ContainsKey(key))
        {
            return Refuse($"virtual disk '{vdisk.Name}' has no component '{key}'");
        }

        // A move's new copy is either being filled or complete; one that fails is dropped (CancelMove), never resynced
        // by delta: it never held a complete copy to resync from.
        if (vdisk.Layout.Components.Any(x => x.ComponentId == c.ComponentId && x.IsIncoming) && c.State is not (ComponentState.Stale or ComponentState.Active))
        {
            return Refuse($"component '{key}' of virtual disk '{vdisk.Name}' is the new copy of a move; cancel the move instead of marking it {c.State.ToString().ToLowerInvariant()}");
        }

        var updated = vdisk with
        {
            ComponentStates = vdisk.ComponentStates.SetItem(key, c.State),
            Generation = vdisk.Generation + 1,
        };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplyReplaceComponent(ReplaceComponent c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Generation != c.ExpectedGeneration)
        {
            return Refuse($"virtual disk '{vdisk.Name}' is at generation {vdisk.Generation}, not {c.ExpectedGeneration}");
        }

        var old = vdisk.Layout.Components.FirstOrDefault(x => x.ComponentId == c.OldComponentId);
        if (old is null)
        {
            return Refuse($"virtual disk '{vdisk.Name}' has no component '{VirtualDiskRecord.ComponentKey(c.OldComponentId)}'");
        }

        if (old.IsIncoming || vdisk.Layout.IncomingFor(old.ComponentId) is not null || c.NewComponent.IsIncoming)
        {
            return Refuse($"component '{VirtualDiskRecord.ComponentKey(old.ComponentId)}' of virtual disk '{vdisk.Name}' is part of a move; the move completes or is cancelled first");
        }

        var n = c.NewComponent;
        if (n.Role != old.Role || n.Replica != old.Replica || n.Stripe != old.Stripe || n.StripeOffset != old.StripeOffset || n.Length != old.Length ||
            n.Votes != old.Votes || vdisk.Layout.Components.Any(x => x.ComponentId == n.ComponentId))
        {
            return Refuse($"the replacement of component '{VirtualDiskRecord.ComponentKey(old.ComponentId)}' must keep its role, replica, stripe range and votes, under a new id");
        }

        var layout = vdisk.Layout with { Components = [.. vdisk.Layout.Components.Select(x => x.ComponentId == old.ComponentId ? n : x)] };
        if (ValidateLayout(layout, x => x.ComponentId == n.ComponentId) is { } layoutError)
        {
            return Refuse(layoutError);
        }

        var updated = vdisk with
        {
            Layout = layout,
            ComponentStates = vdisk.ComponentStates
                .Remove(VirtualDiskRecord.ComponentKey(old.ComponentId))
                .SetItem(VirtualDiskRecord.ComponentKey(n.ComponentId), n.Role == ComponentRole.Witness ? ComponentState.Active : ComponentState.Stale),
            Generation = vdisk.Generation + 1,
        };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplySetVirtualDiskPolicy(SetVirtualDiskPolicy c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Generation != c.ExpectedGeneration)
        {
            return Refuse($"virtual disk '{vdisk.Name}' is at generation {vdisk.Generation}, not {c.ExpectedGeneration}");
        }

        if (!Policies.TryGetValue(c.PolicyName, out var policy))
        {
            return Refuse($"policy '{c.PolicyName}' does not exist");
        }

        var layout = vdisk.Layout;
        if (policy.Method != FailureToleranceMethod.Mirroring || layout.ReplicaCount != policy.FailuresToTolerate + 1 ||
            layout.StripeWidth != policy.StripeWidth)
        {
            return Refuse($"policy '{c.PolicyName}' needs a different layout than virtual disk '{vdisk.Name}' has");
        }

        var updated = vdisk with { PolicyName = c.PolicyName };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplyBeginMove(BeginMove c)
    {
        if (!VirtualDisks.TryGetValue(c.VirtualDiskId, out var vdisk))
        {
            return Refuse($"virtual disk '{c.VirtualDiskId}' does not exist");
        }

        if (vdisk.Generation != c.ExpectedGeneration)
        {
            return Refuse($"virtual disk '{vdisk.Name}' is at generation {vdisk.Generation}, not {c.ExpectedGeneration}");
        }

        var old = vdisk.Layout.Components.FirstOrDefault(x => x.ComponentId == c.OldComponentId);
        if (old is null)
        {
            return Refuse($"virtual disk '{vdisk.Name}' has no component '{VirtualDiskRecord.ComponentKey(c.OldComponentId)}'");
        }

        if (vdisk.Layout.Components.Any(x => x.IsIncoming))
        {
            return Refuse($"virtual disk '{vdisk.Name}' is already moving a component; one move at a time");
        }

        // Moving copies the old component's data while it keeps serving: it must be complete and current.
        if (vdisk.StateOf(old.ComponentId) != ComponentState.Active)
        {
            return Refuse($"component '{VirtualDiskRecord.ComponentKey(old.ComponentId)}' of virtual disk '{vdisk.Name}' is {vdisk.StateOf(old.ComponentId).ToString().ToLowerInvariant()}, not active; it is rebuilt, not moved");
        }

        var n = c.NewComponent;
        if (n.Role != old.Role || n.Replica != old.Replica || n.Stripe != old.Stripe || n.StripeOffset != old.StripeOffset || n.Length != old.Length ||
            n.Votes != old.Votes || vdisk.Layout.Components.Any(x => x.ComponentId == n.ComponentId))
        {
            return Refuse($"the new copy of component '{VirtualDiskRecord.ComponentKey(old.ComponentId)}' must keep its role, replica, stripe range and votes, under a new id");
        }

        if (n.DiskId == old.DiskId)
        {
            return Refuse($"component '{VirtualDiskRecord.ComponentKey(old.ComponentId)}' is already on disk '{n.DiskId}'");
        }

        if (Hosts.GetValueOrDefault(n.HostId) is not { State: HostState.Active })
        {
            return Refuse($"host '{n.HostId}' is not an active host of the cluster; components move only to active hosts");
        }

        // No votes until the move completes: the majority stays what it was with the old component alone.
        var incoming = n with { Votes = 0, Replaces = old.ComponentId };
        var layout = vdisk.Layout with { Components = [.. vdisk.Layout.Components, incoming] };
        if (ValidateLayout(layout, x => x.ComponentId == n.ComponentId) is { } layoutError)
        {
            return Refuse(layoutError);
        }

        var updated = vdisk with
        {
            Layout = layout,
            ComponentStates = vdisk.ComponentStates.SetItem(
                VirtualDiskRecord.ComponentKey(n.ComponentId), n.Role == ComponentRole.Witness ? ComponentState.Active : ComponentState.Stale),
            Generation = vdisk.Generation + 1,
        };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplyCompleteMove(CompleteMove c)
    {
        if (FindMove(c.VirtualDiskId, c.NewComponentId, c.ExpectedGeneration, out var vdisk, out var incoming) is { } error)
        {
            return Refuse(error);
        }

        if (vdisk.StateOf(incoming.ComponentId) != ComponentState.Active)
        {
            return Refuse($"the new copy '{VirtualDiskRecord.ComponentKey(incoming.ComponentId)}' of virtual disk '{vdisk.Name}' is not active yet");
        }

        var old = vdisk.Layout.Components.First(x => x.ComponentId == incoming.Replaces);
        var moved = incoming with { Votes = old.Votes, Replaces = null };
        var layout = vdisk.Layout with
        {
            Components = [.. vdisk.Layout.Components.Where(x => x.ComponentId != old.ComponentId).Select(x => x.ComponentId == incoming.ComponentId ? moved : x)],
        };
        var updated = vdisk with
        {
            Layout = layout,
            ComponentStates = vdisk.ComponentStates.Remove(VirtualDiskRecord.ComponentKey(old.ComponentId)),
            Generation = vdisk.Generation + 1,
        };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private (ClusterState, CommandResult) ApplyCancelMove(CancelMove c)
    {
        if (FindMove(c.VirtualDiskId, c.NewComponentId, c.ExpectedGeneration, out var vdisk, out var incoming) is { } error)
        {
            return Refuse(error);
        }

        var updated = vdisk with
        {
            Layout = vdisk.Layout with { Components = [.. vdisk.Layout.Components.Where(x => x.ComponentId != incoming.ComponentId)] },
            ComponentStates = vdisk.ComponentStates.Remove(VirtualDiskRecord.ComponentKey(incoming.ComponentId)),
            Generation = vdisk.Generation + 1,
        };
        return (this with { VirtualDisks = VirtualDisks.SetItem(vdisk.VirtualDiskId, updated) }, CommandResult.Ok(updated.Generation));
    }

    private string? FindMove(string virtualDiskId, Guid newComponentId, long expectedGeneration, out VirtualDiskRecord vdisk, out ComponentPlacement incoming)
    {
        incoming = null!;
        if (!VirtualDisks.TryGetValue(virtualDiskId, out vdisk!))
        {
            return $"virtual disk '{virtualDiskId}' does not exist";
        }

        if (vdisk.Generation != expectedGeneration)
        {
            return $"virtual disk '{vdisk.Name}' is at generation {vdisk.Generation}, not {expectedGeneration}";
        }

        var found = vdisk.Layout.Components.FirstOrDefault(x => x.ComponentId == newComponentId);
        if (found is not { IsIncoming: true })
        {
            return $"virtual disk '{vdisk.Name}' has no move to component '{VirtualDiskRecord.ComponentKey(newComponentId)}'";
        }

        incoming = found;
        return null;
    }

    private (ClusterState, CommandResult) ApplySetRebalance(SetRebalance c)
    {
        if (c.Requested && c.ThresholdPercent is <= 0 or > 100 or double.NaN)
        {
            return Refuse($"rebalance threshold must be above 0 and at most 100 percentage points; got {c.ThresholdPercent}");
        }

        return (this with { Rebalance = c.Requested ? new RebalanceRun(c.At, c.ThresholdPercent) : null }, CommandResult.Ok());
    }

    /// <summary>
    /// Every component must sit on a registered disk of the host it names; new components (<paramref name="isNew"/>,
    /// all of them by default) on a usable one. Components already placed may stay on a disk that is being evacuated
    /// or has failed: moving or rebuilding them is what changes the layout.
    /// </summary>
    private string? ValidateLayout(ObjectLayout layout, Func<ComponentPlacement, bool>? isNew = null)
    {
        if (layout.Components.Count == 0)
        {
            return "layout has no components";
        }

        if (layout.Components.Select(p => p.ComponentId).Distinct().Count() != layout.Components.Count)
        {
            return "layout has duplicate component ids";
        }

        foreach (var component in layout.Components)
        {
            if (!Disks.TryGetValue(component.DiskId, out var disk))
            {
                return $"component '{component.ComponentId:N}' is on disk '{component.DiskId}', which is not registered";
            }

            if (!string.Equals(disk.HostId, component.HostId, StringComparison.Ordinal))
            {
                return $"component '{component.ComponentId:N}' names host '{component.HostId}' but disk '{disk.DiskId}' is on host '{disk.HostId}'";
            }

            if (disk.State is not DiskState.Online && (isNew is null || isNew(component) || disk.State == DiskState.Removed))
            {
                return $"component '{component.ComponentId:N}' is on disk '{disk.DiskId}', which is {disk.State.ToString().ToLowerInvariant()}";
            }
        }

        return null;
    }

    /// <summary>New components start active (they are created empty alongside the object); existing ones keep their state.</summary>
    private static ImmutableSortedDictionary<string, ComponentState> InitialStates(
        ObjectLayout layout, ImmutableSortedDictionary<string, ComponentState>? previous)
    {
        var builder = ImmutableSortedDictionary.CreateBuilder<string, ComponentState>(StringComparer.Ordinal);
        foreach (var component in layout.Components)
        {
            var key = VirtualDiskRecord.ComponentKey(component.ComponentId);
            builder[key] = previous is not null && previous.TryGetValue(key, out var state) ? state : ComponentState.Active;
        }

        return builder.ToImmutable();
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrEmpty(value) ? null : value;

    private static DateTimeOffset Max(DateTimeOffset a, DateTimeOffset b) => a >= b ? a : b;
}
