namespace Converge.Placement.Tests;

/// <summary>The rebalance planner over many random clusters (seeded) and a few hand-made ones.</summary>
public class RebalancePlannerTests
{
    private const long GiB = 1L << 30;

    [Theory]
    [MemberData(nameof(PlacementPropertyTests.Seeds), MemberType = typeof(PlacementPropertyTests))]
    public void Random_plans_keep_fault_domains_apart_respect_capacity_and_never_widen_the_spread(int seed)
    {
        var random = new Random(seed);
        var (topology, objects) = RandomCluster(random);
        var options = new RebalanceOptions { ThresholdPercent = random.Next(1, 30), MaxMoves = random.Next(1, 40) };

        var plan = RebalancePlanner.Plan(objects, topology, options);

        // Deterministic: the same cluster listed in another order gives the same plan.
        var shuffled = new ClusterTopology([.. topology.Hosts.OrderBy(_ => random.Next())], [.. topology.Disks.OrderBy(_ => random.Next())]);
        var again = RebalancePlanner.Plan([.. objects.OrderBy(_ => random.Next())], shuffled, options);
        Assert.Equal(plan.Moves, again.Moves);
        Assert.Equal(plan.SpreadBefore, again.SpreadBefore);

        Assert.True(plan.Moves.Count <= options.MaxMoves);
        Assert.Equal(plan.Moves.Count, plan.Moves.Select(m => m.ObjectId).Distinct().Count()); // one move per object
        Assert.True(plan.SpreadAfter <= plan.SpreadBefore + 1e-9, $"spread grew from {plan.SpreadBefore} to {plan.SpreadAfter}");
        if (plan.SpreadBefore <= options.ThresholdPercent)
        {
            Assert.Empty(plan.Moves);
        }

        var hosts = topology.Hosts.ToDictionary(h => h.HostId);
        var disks = topology.Disks.ToDictionary(d => d.DiskId);
        var provisioned = topology.Disks.ToDictionary(d => d.DiskId, _ => 0L);
        foreach (var c in objects.SelectMany(o => o.Layout.Components))
        {
            provisioned[c.DiskId] += Math.Max(c.Length, c.ReservedBytes);
        }

        var free = topology.Disks.ToDictionary(d => d.DiskId, d => d.FreeBytes);
        var layouts = objects.ToDictionary(o => o.Layout.ObjectId, o => o.Layout);
        foreach (var move in plan.Moves)
        {
            var obj = objects.Single(o => o.Layout.ObjectId == move.ObjectId);
            Assert.True(obj.Movable);
            var component = move.Component;
            Assert.Equal(ComponentRole.Data, component.Role);
            Assert.Null(component.Replaces);
            Assert.Contains(component, obj.Layout.Components);

            var target = disks[move.TargetDiskId];
            Assert.NotEqual(component.DiskId, target.DiskId);
            Assert.True(target.Usable && hosts[target.HostId].Usable, "a move went to an unusable disk or host");
            Assert.Equal(target.HostId, move.TargetHostId);
            Assert.Equal(hosts[target.HostId].EffectiveFaultDomain, move.TargetFaultDomain);

            // The two disks come closer and do not cross over.
            var size = Math.Max(component.Length, component.ReservedBytes);
            double Fill(string disk, long extra = 0) => 100.0 * (provisioned[disk] + extra) / disks[disk].CapacityBytes;
            Assert.True(Fill(target.DiskId, size) < Fill(component.DiskId), "the target ends fuller than the source was");
            Assert.True(Fill(component.DiskId, -size) > Fill(target.DiskId), "the source ends emptier than the target was");

            // Room for the whole component, by provisioned bytes and by reported free bytes.
            Assert.True(provisioned[target.DiskId] + size <= target.CapacityBytes, "a move overfills its target");
            Assert.True(free[target.DiskId] >= size, "a move needs more than the target's free bytes");
            provisioned[component.DiskId] -= size;
            provisioned[target.DiskId] += size;
            free[target.DiskId] -= size;

            var moved = move.Target(Guid.NewGuid());
            layouts[move.ObjectId] = layouts[move.ObjectId] with
            {
                Components = [.. layouts[move.ObjectId].Components.Select(c => c.ComponentId == component.ComponentId ? moved : c)],
            };
        }

        // After the moves no two replicas (or a replica and a witness) of an object share a fault domain.
        foreach (var layout in layouts.Values)
        {
            var owners = layout.Components
                .GroupBy(c => c.FaultDomain)
                .Select(g => g.Select(c => c.Role == ComponentRole.Witness ? $"w{c.ComponentId}" : $"r{c.Replica}").Distinct().Count());
            Assert.All(owners, n => Assert.Equal(1, n));
        }
    }

    [Fact]
    public void Random_cases_often_plan_moves_so_the_invariants_are_exercised()
    {
        var planned = Enumerable.Range(1, 400).Count(seed =>
        {
            var (topology, objects) = RandomCluster(new Random(seed));
            return RebalancePlanner.Plan(objects, topology).Moves.Count > 0;
        });

        Assert.InRange(planned, 80, 400);
    }

    [Fact]
    public void Repeated_planning_and_moving_ends_within_the_threshold_when_it_can()
    {
        // Three full hosts and a new empty one: replan after each move (as the leader does) until the plan is empty.
        var hosts = Enumerable.Range(1, 4).Select(i => new HostCandidate($"h{i}")).ToList();
        var disks = hosts.Select(h => new DiskCandidate($"{h.HostId}-d", h.HostId, 100 * GiB, 100 * GiB)).ToList();
        var existing = new ClusterTopology([.. hosts.Take(3)], [.. disks.Take(3)]);
        var objects = PlaceMany(existing, count: 12, size: 5 * GiB);
        var topology = new ClusterTopology(hosts, disks);

        var moves = 0;
        for (; moves < 100; moves++)
        {
            var plan = RebalancePlanner.Plan(objects, WithFree(topology, objects));
            if (plan.Moves.Count == 0)
            {
                break;
            }

            var move = plan.Moves[0];
            var moved = move.Target(Guid.NewGuid());
            objects = [.. objects.Select(o => o.Layout.ObjectId != move.ObjectId ? o : o with
            {
                Layout = o.Layout with { Components = [.. o.Layout.Components.Select(c => c.ComponentId == move.Component.ComponentId ? moved : c)] },
            })];
        }

        Assert.InRange(moves, 1, 99);
        var final = RebalancePlanner.Plan(objects, WithFree(topology, objects));
        Assert.True(final.SpreadBefore <= 10, $"spread {final.SpreadBefore} points after {moves} moves");
        Assert.Contains(objects.SelectMany(o => o.Layout.Components), c => c.HostId == "h4" && c.Role == ComponentRole.Data);
    }

    [Fact]
    public void Unmovable_objects_and_witnesses_stay_and_a_single_fault_domain_cluster_plans_nothing()
    {
        var hosts = Enumerable.Range(1, 4).Select(i => new HostCandidate($"h{i}")).ToList();
        var disks = hosts.Select(h => new DiskCandidate($"{h.HostId}-d", h.HostId, 100 * GiB, 100 * GiB)).ToList();
        var objects = PlaceMany(new ClusterTopology([.. hosts.Take(3)], [.. disks.Take(3)]), count: 6, size: 10 * GiB);
        var topology = WithFree(new ClusterTopology(hosts, disks), objects);

        var frozen = RebalancePlanner.Plan([.. objects.Select(o => o with { Movable = false })], topology);
        Assert.Empty(frozen.Moves);
        Assert.True(frozen.SpreadBefore > 10);

        var plan = RebalancePlanner.Plan(objects, topology);
        Assert.NotEmpty(plan.Moves);
        Assert.All(plan.Moves, m => Assert.Equal(ComponentRole.Data, m.Component.Role));
        Assert.All(plan.Moves, m => Assert.Equal("h4", m.TargetHostId));

        // Two disks of one host, FTT=0 objects on one: moves between the disks are fine (same fault domain, same replica).
        var one = new ClusterTopology([new HostCandidate("solo")], [new DiskCandidate("a", "solo", 10 * GiB, 10 * GiB), new DiskCandidate("b", "solo", 10 * GiB, 10 * GiB)]);
        var ftt0 = new StoragePolicy { Name = "p", FailuresToTolerate = 0 };
        var single = PlaceMany(new ClusterTopology(one.Hosts, [one.Disks[0]]), count: 4, size: 2 * GiB, ftt0);
        var split = RebalancePlanner.Plan(single, WithFree(one, single));
        Assert.NotEmpty(split.Moves);
        Assert.All(split.Moves, m => Assert.Equal("b", m.TargetDiskId));
    }

    [Fact]
    public void A_new_host_takes_a_share_before_the_spare_disks_of_busy_hosts()
    {
        // Three hosts with a full and an empty disk each, and a new host with two empty disks: all equally empty disks,
        // but the new host is the emptiest host, so it is chosen first.
        var hosts = Enumerable.Range(1, 4).Select(i => new HostCandidate($"h{i}")).ToList();
        var disks = hosts.SelectMany(h => new[] { new DiskCandidate($"{h.HostId}-a", h.HostId, 100 * GiB, 100 * GiB), new DiskCandidate($"{h.HostId}-b", h.HostId, 100 * GiB, 100 * GiB) }).ToList();
        var existing = new ClusterTopology([.. hosts.Take(3)], [.. disks.Where(d => d.DiskId.EndsWith("-a", StringComparison.Ordinal) && d.HostId != "h4")]);
        var objects = PlaceMany(existing, count: 6, size: 8 * GiB);

        var plan = RebalancePlanner.Plan(objects, WithFree(new ClusterTopology(hosts, disks), objects), new RebalanceOptions { MaxMoves = 2 });

        Assert.Equal(2, plan.Moves.Count);
        Assert.All(plan.Moves, m => Assert.Equal("h4", m.TargetHostId));
        Assert.NotEqual(plan.Moves[0].TargetDiskId, plan.Moves[1].TargetDiskId);
    }

    private static List<RebalanceObject> PlaceMany(ClusterTopology topology, int count, long size, StoragePolicy? policy = null)
    {
        var objects = new List<RebalanceObject>();
        for (var i = 0; i < count; i++)
        {
            var placed = PlacementEngine.Place(new Guid(i + 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7), size, policy ?? StoragePolicy.Default, WithFree(topology, objects));
            Assert.True(placed.Succeeded, placed.Error);
            objects.Add(new RebalanceObject($"v{i:D2}", placed.Layout!));
        }

        return objects;
    }

    /// <summary>Free bytes as hosts would report them: capacity less what the objects' components take.</summary>
    private static ClusterTopology WithFree(ClusterTopology topology, IReadOnlyList<RebalanceObject> objects)
    {
        var taken = objects.SelectMany(o => o.Layout.Components).GroupBy(c => c.DiskId).ToDictionary(g => g.Key, g => g.Sum(c => Math.Max(c.Length, c.ReservedBytes)));
        return topology with { Disks = [.. topology.Disks.Select(d => d with { FreeBytes = d.CapacityBytes - taken.GetValueOrDefault(d.DiskId) })] };
    }

    private static (ClusterTopology Topology, List<RebalanceObject> Objects) RandomCluster(Random random)
    {
        var racks = random.Next(0, 4);
        var hosts = Enumerable.Range(1, random.Next(2, 9))
            .Select(i => new HostCandidate($"h{i}", racks == 0 ? null : $"rack{random.Next(racks)}", random.Next(12) != 0))
            .ToList();
        var disks = hosts.SelectMany(h => Enumerable.Range(1, random.Next(1, 4))
            .Select(j => new DiskCandidate($"{h.HostId}d{j}", h.HostId, random.Next(10, 200) * GiB, 0, random.Next(15) != 0))).ToList();

        // Objects are placed while only some hosts exist, so the later ones start empty (new hosts and disks).
        var early = hosts.Take(Math.Max(1, hosts.Count - random.Next(0, 3))).Select(h => h.HostId).ToHashSet();
        var placeOn = new ClusterTopology(hosts, [.. disks.Where(d => early.Contains(d.HostId)).Select(d => d with { FreeBytes = d.CapacityBytes })]);
        var objects = new List<RebalanceObject>();
        var count = random.Next(0, 25);
        for (var i = 0; i < count; i++)
        {
            var policy = new StoragePolicy { Name = "p", FailuresToTolerate = random.Next(0, 3), StripeWidth = random.Next(1, 4) };
            var placed = PlacementEngine.Place(
                new Guid(i + 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, (byte)random.Next(256)), random.Next(1, 64) * GiB / 4, policy, WithFree(placeOn, objects),
                new PlacementOptions { MaxComponentBytes = random.Next(1, 8) * GiB });
            if (placed.Succeeded)
            {
                objects.Add(new RebalanceObject($"v{i:D2}", placed.Layout!, random.Next(8) != 0));
            }
        }

        // Reported free bytes: capacity less what is placed, less some noise (other data, thin allocation).
        var topology = WithFree(new ClusterTopology(hosts, disks), objects);
        topology = topology with { Disks = [.. topology.Disks.Select(d => d with { FreeBytes = Math.Max(0, d.FreeBytes - (random.Next(4) == 0 ? random.Next(0, 20) * GiB : 0)) })] };
        return (topology, objects);
    }
}
