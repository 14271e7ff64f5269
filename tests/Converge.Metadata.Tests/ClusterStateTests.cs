using System.Text;
using System.Text.Json;
using Converge.Placement;

namespace Converge.Metadata.Tests;

public class ClusterStateTests
{
    private static readonly ClusterState Bootstrapped = ClusterState.Empty.Apply(TestData.Bootstrap());

    private static (ClusterState State, VirtualDiskRecord Disk) WithDisk(string name = "vm1")
    {
        var (state, result) = Bootstrapped.Apply(TestData.CreateDisk(Bootstrapped, name));
        Assert.True(result.Succeeded, result.Error);
        return (state, state.FindVirtualDiskByName(name)!);
    }

    private static CommandResult Refused(ClusterState state, MetadataCommand command)
    {
        var (next, result) = state.Apply(command);
        Assert.False(result.Succeeded);
        Assert.Same(state, next);
        return result;
    }

    [Fact]
    public void Nothing_but_initialize_is_accepted_before_the_cluster_exists()
    {
        Assert.Equal("the cluster is not initialized", Refused(ClusterState.Empty, TestData.Host(1)).Error);

        var (state, result) = ClusterState.Empty.Apply(TestData.Initialize());

        Assert.True(result.Succeeded);
        Assert.Equal("lab", state.Cluster!.Name);
        Assert.True(state.Policies.ContainsKey("default"));
        Assert.StartsWith("the cluster is already initialized", Refused(state, TestData.Initialize("other")).Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Hosts_and_disks_are_registered_once()
    {
        Assert.Equal(3, Bootstrapped.Hosts.Count);
        Assert.Equal(3, Bootstrapped.Disks.Count);
        Assert.Equal("host 'host1' is already registered", Refused(Bootstrapped, TestData.Host(1)).Error);
        Assert.StartsWith("disk '", Refused(Bootstrapped, TestData.Disk(1)).Error, StringComparison.Ordinal);
        Assert.Equal("host 'host9' does not exist", Refused(Bootstrapped, TestData.Disk(9)).Error);
        Assert.Contains("is invalid", Refused(Bootstrapped, TestData.Host(4) with { Name = "Bad Name" }).Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Decommissioned_hosts_cannot_change()
    {
        // Only a metadata client (not a voter), and only once decommissioning has emptied it.
        var decommissioning = Bootstrapped.Apply([
            new UpdateHost(Guid.NewGuid(), "host1", Voter: false),
            new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Decommissioning),
        ]);
        var (state, result) = decommissioning.Apply(new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Decommissioned));
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal(HostState.Decommissioned, state.Hosts["host1"].State);

        Refused(state, new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Active));
        Refused(state, new RegisterDisk(Guid.NewGuid(), TestData.DiskId(7), "host1", "/x", TestData.GiB));
    }

    [Fact]
    public void Virtual_disk_is_created_at_generation_one_with_active_components()
    {
        var (state, disk) = WithDisk();

        Assert.Equal(1, disk.Generation);
        Assert.Equal(TestData.GiB, disk.SizeBytes);
        Assert.Equal(disk.Layout.Components.Count, disk.ComponentStates.Count);
        Assert.All(disk.ComponentStates.Values, s => Assert.Equal(ComponentState.Active, s));
        Assert.Equal("virtual disk 'vm1' already exists", Refused(state, TestData.CreateDisk(state, "vm1")).Error);
    }

    [Fact]
    public void Virtual_disk_needs_a_known_policy_and_registered_online_disks()
    {
        Assert.Equal("policy 'gold' does not exist", Refused(Bootstrapped, TestData.CreateDisk(Bootstrapped, "vm1") with { PolicyName = "gold" }).Error);

        var (failed, _) = Bootstrapped.Apply(new UpdateDiskState(Guid.NewGuid(), TestData.DiskId(1), DiskState.Failed));
        var layout = TestData.Layout(Bootstrapped, Guid.NewGuid(), TestData.GiB);
        var create = new CreateVirtualDisk(Guid.NewGuid(), "vm1", "default", layout, TestData.T0);
        Assert.Contains("which is failed", Refused(failed, create).Error, StringComparison.Ordinal);

        var foreign = layout with { Components = [.. layout.Components.Select(c => c with { DiskId = "nope" })] };
        Assert.Contains("not registered", Refused(Bootstrapped, create with { Layout = foreign }).Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Replacing_a_component_keeps_its_shape_starts_it_stale_and_bumps_the_generation()
    {
        var four = ClusterState.Empty.Apply(TestData.Bootstrap(4));
        var (state, created) = four.Apply(TestData.CreateDisk(four, "vm1"));
        Assert.True(created.Succeeded, created.Error);
        var disk = state.FindVirtualDiskByName("vm1")!;
        var old = disk.Layout.DataComponents.First();
        var spare = disk.Layout.Components.Select(c => c.DiskId).ToHashSet();
        var free = state.Disks.Values.First(d => !spare.Contains(d.DiskId));
        var replacement = old with { ComponentId = Guid.NewGuid(), HostId = free.HostId, DiskId = free.DiskId, FaultDomain = free.HostId };

        Refused(state, new ReplaceComponent(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, replacement, disk.Generation + 1));
        Refused(state, new ReplaceComponent(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, replacement with { Length = old.Length * 2 }, disk.Generation));
        Refused(state, new ReplaceComponent(Guid.NewGuid(), disk.VirtualDiskId, Guid.NewGuid(), replacement, disk.Generation));
        Refused(state, new ReplaceComponent(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, replacement with { DiskId = "nope" }, disk.Generation));

        var (next, result) = state.Apply(new ReplaceComponent(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, replacement, disk.Generation));
        Assert.True(result.Succeeded, result.Error);
        var after = next.VirtualDisks[disk.VirtualDiskId];
        Assert.Equal(disk.Generation + 1, after.Generation);
        Assert.DoesNotContain(after.Layout.Components, c => c.ComponentId == old.ComponentId);
        Assert.Equal(ComponentState.Stale, after.StateOf(replacement.ComponentId));
        Assert.False(after.ComponentStates.ContainsKey(VirtualDiskRecord.ComponentKey(old.ComponentId)));
    }

    [Fact]
    public void Component_state_is_compare_and_set_on_the_generation_and_bumps_it()
    {
        var (state, disk) = WithDisk();
        var component = disk.Layout.DataComponents.First().ComponentId;

        var stale = Refused(state, new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, component, ComponentState.Absent, 7));
        Assert.Equal("virtual disk 'vm1' is at generation 1, not 7", stale.Error);
        Refused(state, new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, Guid.NewGuid(), ComponentState.Absent, 1));

        var (next, result) = state.Apply(new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, component, ComponentState.Absent, 1));

        Assert.True(result.Succeeded);
        Assert.Equal(2, result.Generation);
        var updated = next.VirtualDisks[disk.VirtualDiskId];
        Assert.Equal(2, updated.Generation);
        Assert.Equal(ComponentState.Absent, updated.StateOf(component));
        Assert.Equal(ComponentState.Active, disk.StateOf(component)); // the old value is untouched
    }

    [Fact]
    public void Resize_grows_only_bumps_the_generation_and_keeps_component_states()
    {
        var (state, disk) = WithDisk();
        var component = disk.Layout.DataComponents.First().ComponentId;
        (state, _) = state.Apply(new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, component, ComponentState.Stale, 1));
        var objectId = disk.Layout.ObjectId;

        Refused(state, new ResizeVirtualDisk(Guid.NewGuid(), disk.VirtualDiskId, TestData.Layout(state, objectId, TestData.GiB / 2), 2));
        Refused(state, new ResizeVirtualDisk(Guid.NewGuid(), disk.VirtualDiskId, TestData.Layout(state, objectId, 2 * TestData.GiB), 1));
        var (next, result) = state.Apply(new ResizeVirtualDisk(Guid.NewGuid(), disk.VirtualDiskId, TestData.Layout(state, objectId, 2 * TestData.GiB), 2));

        Assert.True(result.Succeeded, result.Error);
        var resized = next.VirtualDisks[disk.VirtualDiskId];
        Assert.Equal(2 * TestData.GiB, resized.SizeBytes);
        Assert.Equal(3, resized.Generation);
        Assert.Equal(ComponentState.Stale, resized.StateOf(component));
    }

    [Fact]
    public void Lease_is_granted_when_free_refused_while_held_and_taken_over_after_expiry()
    {
        var (state, disk) = WithDisk();
        var id = disk.VirtualDiskId;
        var t = TestData.T0;
        var ttl = TimeSpan.FromSeconds(10);

        var (s1, first) = state.Apply(new AcquireLease(Guid.NewGuid(), id, "host1", 1, t, ttl));
        Assert.True(first.Succeeded, first.Error);
        Assert.Equal(new CoordinatorLease("host1", 1, t + ttl), first.Lease);

        // Another host, while the lease is valid: refused, whatever epoch it asks for.
        var held = Refused(s1, new AcquireLease(Guid.NewGuid(), id, "host2", 2, t.AddSeconds(5), ttl));
        Assert.Contains("held by host 'host1' (epoch 1)", held.Error, StringComparison.Ordinal);

        // The holder renews: same epoch, later expiry.
        var (s2, renewed) = s1.Apply(new AcquireLease(Guid.NewGuid(), id, "host1", 1, t.AddSeconds(5), ttl));
        Assert.True(renewed.Succeeded, renewed.Error);
        Assert.Equal(new CoordinatorLease("host1", 1, t.AddSeconds(15)), renewed.Lease);

        // Not yet expired at 14 s; expired at exactly 15 s. The taker must ask for epoch + 1.
        Refused(s2, new AcquireLease(Guid.NewGuid(), id, "host2", 2, t.AddSeconds(14), ttl));
        Assert.Contains("next coordinator epoch", Refused(s2, new AcquireLease(Guid.NewGuid(), id, "host2", 5, t.AddSeconds(15), ttl)).Error, StringComparison.Ordinal);
        var (s3, taken) = s2.Apply(new AcquireLease(Guid.NewGuid(), id, "host2", 2, t.AddSeconds(15), ttl));
        Assert.True(taken.Succeeded, taken.Error);
        Assert.Equal(new CoordinatorLease("host2", 2, t.AddSeconds(25)), taken.Lease);

        // The old holder can neither renew nor release any more.
        Refused(s3, new AcquireLease(Guid.NewGuid(), id, "host1", 1, t.AddSeconds(16), ttl));
        Refused(s3, new ReleaseLease(Guid.NewGuid(), id, "host1", 1));

        // Release keeps the epoch: the next coordinator gets 3, never 1 again.
        var (s4, released) = s3.Apply(new ReleaseLease(Guid.NewGuid(), id, "host2", 2));
        Assert.True(released.Succeeded);
        Assert.Null(s4.VirtualDisks[id].Lease);
        Assert.Equal(2, s4.VirtualDisks[id].LeaseEpoch);
        Refused(s4, new AcquireLease(Guid.NewGuid(), id, "host1", 1, t.AddSeconds(16), ttl));
        var (_, again) = s4.Apply(new AcquireLease(Guid.NewGuid(), id, "host1", 3, t.AddSeconds(16), ttl));
        Assert.Equal(3, again.Lease!.Epoch);
    }

    [Fact]
    public void Leases_need_a_known_active_host_and_a_positive_duration()
    {
        var (state, disk) = WithDisk();
        Refused(state, new AcquireLease(Guid.NewGuid(), disk.VirtualDiskId, "host9", 1, TestData.T0, TimeSpan.FromSeconds(1)));
        Refused(state, new AcquireLease(Guid.NewGuid(), disk.VirtualDiskId, "host1", 1, TestData.T0, TimeSpan.Zero));
        var (maintenance, _) = state.Apply(new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Maintenance));
        Refused(maintenance, new AcquireLease(Guid.NewGuid(), disk.VirtualDiskId, "host1", 1, TestData.T0, TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void Deleting_a_leased_virtual_disk_waits_for_the_lease_to_expire()
    {
        var (state, disk) = WithDisk();
        (state, _) = state.Apply(new AcquireLease(Guid.NewGuid(), disk.VirtualDiskId, "host1", 1, TestData.T0, TimeSpan.FromSeconds(10)));

        Assert.Contains("is coordinated by host 'host1'", Refused(state, new DeleteVirtualDisk(Guid.NewGuid(), disk.VirtualDiskId, TestData.T0.AddSeconds(9))).Error, StringComparison.Ordinal);
        var (deleted, result) = state.Apply(new DeleteVirtualDisk(Guid.NewGuid(), disk.VirtualDiskId, TestData.T0.AddSeconds(10)));
        Assert.True(result.Succeeded);
        Assert.Empty(deleted.VirtualDisks);
    }

    [Fact]
    public void Policies_in_use_or_default_cannot_be_deleted()
    {
        var (state, _) = WithDisk();
        Assert.Equal("policy 'default' is the cluster's default policy", Refused(state, new DeletePolicy(Guid.NewGuid(), "default")).Error);
        Assert.Contains("is invalid", Refused(state, new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = "bad", StripeWidth = 0 })).Error, StringComparison.Ordinal);

        var gold = StoragePolicy.Default with { Name = "gold", FailuresToTolerate = 1, StripeWidth = 2 };
        (state, _) = state.Apply(new PutPolicy(Guid.NewGuid(), gold));
        var create = TestData.CreateDisk(state, "vm2") with { PolicyName = "gold" };
        (state, _) = state.Apply(create);
        Assert.Equal("policy 'gold' is used by virtual disk(s) 'vm2'", Refused(state, new DeletePolicy(Guid.NewGuid(), "gold")).Error);
    }

    [Fact]
    public void A_retried_command_id_is_applied_once_and_returns_the_first_result()
    {
        var (state, disk) = WithDisk();
        var component = disk.Layout.DataComponents.First().ComponentId;
        var command = new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, component, ComponentState.Absent, 1);

        var (once, first) = state.Apply(command);
        var (twice, second) = once.Apply(command);

        Assert.True(first.Succeeded);
        Assert.Same(once, twice);
        Assert.Equal(first, second);
        Assert.Equal(2, twice.VirtualDisks[disk.VirtualDiskId].Generation);
    }

    [Fact]
    public void The_dedupe_window_is_bounded()
    {
        var state = Bootstrapped;
        var commands = TestData.Many(ClusterState.DedupeWindow + 10);
        state = state.Apply(commands);

        Assert.Equal(ClusterState.DedupeWindow, state.RecentCommands.Count);
        Assert.Equal(commands[^1].CommandId, state.RecentCommands[^1].CommandId);
    }

    [Fact]
    public void State_round_trips_through_json_without_computed_properties()
    {
        var (state, disk) = WithDisk();
        (state, _) = state.Apply(new AcquireLease(Guid.NewGuid(), disk.VirtualDiskId, "host1", 1, TestData.T0, TimeSpan.FromSeconds(10)));
        state = state with { AppliedIndex = 42 };

        var json = state.ToJson();
        var back = ClusterState.FromJson(json);

        Assert.True(back.ContentEquals(state));
        Assert.Equal(42, back.AppliedIndex);
        Assert.Equal(json, back.ToJson());
        Assert.Equal(disk.Layout.TotalVotes, back.VirtualDisks[disk.VirtualDiskId].Layout.TotalVotes);
        var text = Encoding.UTF8.GetString(json);
        Assert.DoesNotContain("totalVotes", text, StringComparison.Ordinal);
        Assert.DoesNotContain("dataComponents", text, StringComparison.Ordinal);
        Assert.Contains("\"state\":\"Active\"", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Commands_round_trip_through_json_polymorphically()
    {
        MetadataCommand command = TestData.CreateDisk(Bootstrapped, "vm1");
        var json = JsonSerializer.Serialize(command, MetadataJsonContext.Default.MetadataCommand);
        var back = JsonSerializer.Deserialize(json, MetadataJsonContext.Default.MetadataCommand);

        Assert.StartsWith("{\"$type\":\"createVirtualDisk\"", json, StringComparison.Ordinal);
        var create = Assert.IsType<CreateVirtualDisk>(back);
        Assert.Equal(command.CommandId, create.CommandId);
        Assert.Equal(((CreateVirtualDisk)command).Layout.Components, create.Layout.Components);
    }

    [Fact]
    public void Replicas_applying_the_same_commands_hold_byte_identical_state()
    {
        var commands = TestData.Bootstrap().Append(new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = "gold" })).ToList();
        var create = TestData.CreateDisk(ClusterState.Empty.Apply(commands), "vm1");
        commands.Add(create);

        var a = ClusterState.Empty.Apply(commands);
        var b = ClusterState.Empty.Apply(commands);

        Assert.Equal(a.ToJson(), b.ToJson());
        Assert.Equal(new[] { "default", "gold" }, a.Policies.Keys);
    }
}
