using Converge.Placement;

namespace Converge.Metadata.Tests;

/// <summary>Make-before-break moves (BeginMove, CompleteMove, CancelMove), decommissioning and rebalance requests.</summary>
public class MoveCommandTests
{
    private static (ClusterState State, VirtualDiskRecord Disk, ComponentPlacement Old, ComponentPlacement Target) FourHostsWithDisk()
    {
        var four = ClusterState.Empty.Apply(TestData.Bootstrap(4));
        var (state, created) = four.Apply(TestData.CreateDisk(four, "vm1"));
        Assert.True(created.Succeeded, created.Error);
        var disk = state.FindVirtualDiskByName("vm1")!;
        var old = disk.Layout.DataComponents.First();
        var used = disk.Layout.Components.Select(c => c.DiskId).ToHashSet();
        var free = state.Disks.Values.First(d => !used.Contains(d.DiskId));
        var target = old with { ComponentId = Guid.NewGuid(), HostId = free.HostId, DiskId = free.DiskId, FaultDomain = free.HostId };
        return (state, disk, old, target);
    }

    private static CommandResult Refused(ClusterState state, MetadataCommand command)
    {
        var (next, result) = state.Apply(command);
        Assert.False(result.Succeeded, $"{command.GetType().Name} was accepted");
        Assert.Same(state, next);
        return result;
    }

    private static ClusterState Applied(ClusterState state, MetadataCommand command)
    {
        var (next, result) = state.Apply(command);
        Assert.True(result.Succeeded, result.Error);
        return next;
    }

    [Fact]
    public void A_move_adds_the_new_copy_beside_the_old_one_without_votes_and_completes_by_taking_its_place()
    {
        var (state, disk, old, target) = FourHostsWithDisk();
        var votes = disk.Layout.TotalVotes;

        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation + 1));
        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, Guid.NewGuid(), target, disk.Generation));
        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target with { Length = old.Length / 2 }, disk.Generation));
        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target with { Replica = old.Replica + 1 }, disk.Generation));
        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target with { DiskId = "nope" }, disk.Generation));
        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target with { DiskId = old.DiskId, HostId = old.HostId }, disk.Generation));
        Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target with { ComponentId = old.ComponentId }, disk.Generation));

        state = Applied(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation));
        var moving = state.VirtualDisks[disk.VirtualDiskId];
        Assert.Equal(disk.Generation + 1, moving.Generation);
        var incoming = Assert.Single(moving.Layout.Components, c => c.ComponentId == target.ComponentId);
        Assert.Equal(old.ComponentId, incoming.Replaces);
        Assert.Equal(0, incoming.Votes);
        Assert.Equal(ComponentState.Stale, moving.StateOf(incoming.ComponentId));
        Assert.Equal(ComponentState.Active, moving.StateOf(old.ComponentId));
        Assert.Contains(moving.Layout.Components, c => c.ComponentId == old.ComponentId);

        // Votes and accessibility are what they were with the old component alone: the new copy neither adds a vote
        // nor makes its replica incomplete while it is being filled.
        Assert.Equal(votes, moving.Layout.TotalVotes);
        Assert.Equal(disk.Layout.PrimaryDataComponents.Count(), moving.Layout.PrimaryDataComponents.Count());
        Assert.True(moving.Layout.IsAccessible(c => moving.StateOf(c.ComponentId) == ComponentState.Active));
        var otherReplica = moving.Layout.PrimaryDataComponents.First(c => c.Replica != old.Replica);
        Assert.True(moving.Layout.IsAccessible(c => moving.StateOf(c.ComponentId) == ComponentState.Active && c.ComponentId != otherReplica.ComponentId));
        Assert.False(moving.Layout.IsAccessible(c => c.ComponentId == incoming.ComponentId || c.Role == ComponentRole.Witness),
            "the new copy alone must not count as a complete copy before the move completes");

        // One move at a time; the moved component is neither rebuilt nor resized meanwhile; the new copy is never
        // marked absent (it is cancelled instead), and the move completes only once the new copy is active.
        var second = moving.Layout.PrimaryDataComponents.First(c => c.ComponentId != old.ComponentId);
        Assert.Contains("one move at a time", Refused(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, second.ComponentId, target with { ComponentId = Guid.NewGuid(), Replica = second.Replica }, moving.Generation)).Error, StringComparison.Ordinal);
        Assert.Contains("part of a move", Refused(state, new ReplaceComponent(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target with { ComponentId = Guid.NewGuid() }, moving.Generation)).Error, StringComparison.Ordinal);
        Assert.Contains("cancel the move", Refused(state, new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, incoming.ComponentId, ComponentState.Absent, moving.Generation)).Error, StringComparison.Ordinal);
        Refused(state, new ResizeVirtualDisk(Guid.NewGuid(), disk.VirtualDiskId, TestData.Layout(state, disk.Layout.ObjectId, 2 * TestData.GiB), moving.Generation));
        Assert.Contains("not active yet", Refused(state, new CompleteMove(Guid.NewGuid(), disk.VirtualDiskId, incoming.ComponentId, moving.Generation)).Error, StringComparison.Ordinal);

        state = Applied(state, new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, incoming.ComponentId, ComponentState.Active, moving.Generation));
        var filled = state.VirtualDisks[disk.VirtualDiskId];
        Refused(state, new CompleteMove(Guid.NewGuid(), disk.VirtualDiskId, incoming.ComponentId, filled.Generation - 1));
        Refused(state, new CompleteMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, filled.Generation));

        // The state with a move under way survives a snapshot round trip.
        Assert.True(ClusterState.FromJson(state.ToJson()).ContentEquals(state));

        var (done, result) = state.Apply(new CompleteMove(Guid.NewGuid(), disk.VirtualDiskId, incoming.ComponentId, filled.Generation));
        Assert.True(result.Succeeded, result.Error);
        var after = done.VirtualDisks[disk.VirtualDiskId];
        Assert.Equal(filled.Generation + 1, after.Generation);
        Assert.Equal(after.Generation, result.Generation);
        Assert.DoesNotContain(after.Layout.Components, c => c.ComponentId == old.ComponentId);
        Assert.False(after.ComponentStates.ContainsKey(VirtualDiskRecord.ComponentKey(old.ComponentId)));
        var moved = Assert.Single(after.Layout.Components, c => c.ComponentId == target.ComponentId);
        Assert.Null(moved.Replaces);
        Assert.Equal(old.Votes, moved.Votes);
        Assert.Equal(target.DiskId, moved.DiskId);
        Assert.Equal(votes, after.Layout.TotalVotes);
        Assert.Equal(disk.Layout.Components.Count, after.Layout.Components.Count);
        Assert.All(after.Layout.Components, c => Assert.Equal(ComponentState.Active, after.StateOf(c.ComponentId)));
    }

    [Fact]
    public void Cancelling_a_move_drops_only_the_new_copy_and_a_move_needs_an_active_source()
    {
        var (state, disk, old, target) = FourHostsWithDisk();
        var moving = Applied(state, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation));
        var generation = moving.VirtualDisks[disk.VirtualDiskId].Generation;

        Refused(moving, new CancelMove(Guid.NewGuid(), disk.VirtualDiskId, target.ComponentId, generation + 1));
        Refused(moving, new CancelMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, generation));
        var cancelled = Applied(moving, new CancelMove(Guid.NewGuid(), disk.VirtualDiskId, target.ComponentId, generation)).VirtualDisks[disk.VirtualDiskId];
        Assert.Equal(generation + 1, cancelled.Generation);
        Assert.Equal(disk.Layout.Components, cancelled.Layout.Components);
        Assert.Equal(disk.ComponentStates, cancelled.ComponentStates);

        // An absent component is rebuilt (ReplaceComponent), not moved: there is nothing current to copy from it.
        var absent = Applied(state, new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, ComponentState.Absent, disk.Generation));
        Assert.Contains("not active", Refused(absent, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation + 1)).Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_move_may_leave_an_evacuating_disk_but_never_land_on_one_or_on_an_inactive_host()
    {
        var (state, disk, old, target) = FourHostsWithDisk();
        var evacuating = Applied(state, new UpdateDiskState(Guid.NewGuid(), old.DiskId, DiskState.Evacuating));
        Assert.True(evacuating.MustEvacuate(old));
        Assert.False(evacuating.MustEvacuate(target));

        var onEvacuating = Applied(state, new UpdateDiskState(Guid.NewGuid(), target.DiskId, DiskState.Evacuating));
        Refused(onEvacuating, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation));
        var inMaintenance = Applied(state, new UpdateHost(Guid.NewGuid(), target.HostId, State: HostState.Maintenance));
        Assert.Contains("active host", Refused(inMaintenance, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation)).Error, StringComparison.Ordinal);

        var moving = Applied(evacuating, new BeginMove(Guid.NewGuid(), disk.VirtualDiskId, old.ComponentId, target, disk.Generation));
        Assert.Contains("still holds 1 component", Refused(moving, new UpdateDiskState(Guid.NewGuid(), old.DiskId, DiskState.Removed)).Error, StringComparison.Ordinal);
        var generation = moving.VirtualDisks[disk.VirtualDiskId].Generation;
        moving = Applied(moving, new SetComponentState(Guid.NewGuid(), disk.VirtualDiskId, target.ComponentId, ComponentState.Active, generation));
        var done = Applied(moving, new CompleteMove(Guid.NewGuid(), disk.VirtualDiskId, target.ComponentId, generation + 1));
        Assert.Equal(0, done.ComponentsOnDisk(old.DiskId));
        var removed = Applied(done, new UpdateDiskState(Guid.NewGuid(), old.DiskId, DiskState.Removed));
        Assert.Equal(DiskState.Removed, removed.Disks[old.DiskId].State);
        Refused(removed, new UpdateDiskState(Guid.NewGuid(), old.DiskId, DiskState.Online));
    }

    [Fact]
    public void A_host_is_decommissioned_only_when_empty_after_decommissioning_and_never_as_a_voter()
    {
        var (state, disk, _, _) = FourHostsWithDisk();
        var holder = disk.Layout.Components.First().HostId;
        var empty = state.Hosts.Keys.First(h => disk.Layout.Components.All(c => c.HostId != h));

        Assert.Contains("Raft voter", Refused(state, new UpdateHost(Guid.NewGuid(), holder, State: HostState.Decommissioning)).Error, StringComparison.Ordinal);
        state = Applied(state, new UpdateHost(Guid.NewGuid(), holder, Voter: false));
        state = Applied(state, new UpdateHost(Guid.NewGuid(), empty, Voter: false));
        Assert.Contains("must be decommissioning", Refused(state, new UpdateHost(Guid.NewGuid(), empty, State: HostState.Decommissioned)).Error, StringComparison.Ordinal);

        state = Applied(state, new UpdateHost(Guid.NewGuid(), holder, State: HostState.Decommissioning));
        Assert.True(state.MustEvacuate(disk.Layout.Components.First()));
        Assert.Contains("still holds", Refused(state, new UpdateHost(Guid.NewGuid(), holder, State: HostState.Decommissioned)).Error, StringComparison.Ordinal);
        Refused(state, new UpdateHost(Guid.NewGuid(), holder, State: HostState.Decommissioning, Voter: true));

        state = Applied(state, new UpdateHost(Guid.NewGuid(), empty, State: HostState.Decommissioning));
        state = Applied(state, new UpdateHost(Guid.NewGuid(), empty, State: HostState.Decommissioned));
        Assert.Equal(HostState.Decommissioned, state.Hosts[empty].State);
        Refused(state, new UpdateHost(Guid.NewGuid(), empty, State: HostState.Active));
    }

    [Fact]
    public void Rebalance_requests_are_recorded_and_cleared()
    {
        var (state, _, _, _) = FourHostsWithDisk();
        Refused(state, new SetRebalance(Guid.NewGuid(), true, TestData.T0, 0));
        Refused(state, new SetRebalance(Guid.NewGuid(), true, TestData.T0, 101));
        Refused(state, new SetRebalance(Guid.NewGuid(), true, TestData.T0, double.NaN));

        var running = Applied(state, new SetRebalance(Guid.NewGuid(), true, TestData.T0, 15));
        Assert.Equal(new RebalanceRun(TestData.T0, 15), running.Rebalance);
        Assert.True(ClusterState.FromJson(running.ToJson()).ContentEquals(running));
        Assert.Null(Applied(running, new SetRebalance(Guid.NewGuid(), false, TestData.T0)).Rebalance);
    }
}
