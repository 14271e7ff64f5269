namespace Converge.Placement.Tests;

/// <summary>Invariants over many random clusters and policies (seeded, so a failure is reproducible).</summary>
public class PlacementPropertyTests
{
    private const long GiB = 1L << 30;

    public static TheoryData<int> Seeds()
    {
        var data = new TheoryData<int>();
        for (var seed = 1; seed <= 400; seed++)
        {
            data.Add(seed);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Random_cluster_layouts_keep_every_invariant(int seed)
    {
        var random = new Random(seed);
        var (topology, policy, size, options) = RandomCase(random);

        var first = PlacementEngine.Place(new Guid(seed, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10), size, policy, topology, options);

        // Same input in another order gives the same layout.
        var shuffled = new ClusterTopology(
            topology.Hosts.OrderBy(_ => random.Next()).ToList(),
            topology.Disks.OrderBy(_ => random.Next()).ToList());
        var second = PlacementEngine.Place(new Guid(seed, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10), size, policy, shuffled, options);
        Assert.Equal(first.Error, second.Error);
        if (!first.Succeeded)
        {
            Assert.False(string.IsNullOrWhiteSpace(first.Error));
            return;
        }

        var layout = first.Layout!;
        Assert.Equal(layout.Components, second.Layout!.Components);

        var ftt = policy.FailuresToTolerate;
        var hostsById = topology.Hosts.ToDictionary(h => h.HostId);

        // No two replicas (or a replica and a witness) share a fault domain.
        var domainOwners = layout.Components
            .GroupBy(c => c.FaultDomain)
            .Select(g => g.Select(c => c.Role == ComponentRole.Witness ? $"w{c.ComponentId}" : $"r{c.Replica}").Distinct().Count());
        Assert.All(domainOwners, owners => Assert.Equal(1, owners));
        Assert.All(layout.Components, c => Assert.Equal(hostsById[c.HostId].EffectiveFaultDomain, c.FaultDomain));

        // Every replica covers each stripe completely, in bounded components.
        for (var replica = 0; replica < ftt + 1; replica++)
        {
            for (var stripe = 0; stripe < policy.StripeWidth; stripe++)
            {
                var pieces = layout.ReplicaComponents(replica).Where(c => c.Stripe == stripe).OrderBy(c => c.StripeOffset).ToList();
                Assert.NotEmpty(pieces);
                var expected = 0L;
                foreach (var piece in pieces)
                {
                    Assert.Equal(expected, piece.StripeOffset);
                    Assert.True(piece.Length <= Math.Max(options.MaxComponentBytes, options.StripeUnitBytes));
                    expected += piece.Length;
                }

                Assert.Equal(layout.StripeLength, expected);
            }
        }

        Assert.True(layout.StripeLength * policy.StripeWidth >= size);

        // No disk over its free capacity.
        var demand = layout.Components.GroupBy(c => c.DiskId)
            .ToDictionary(g => g.Key, g => g.Sum(c => c.Role == ComponentRole.Witness ? options.WitnessBytes : c.Length));
        foreach (var disk in topology.Disks.Where(d => demand.ContainsKey(d.DiskId)))
        {
            Assert.True(disk.Usable);
            Assert.True(demand[disk.DiskId] <= disk.FreeBytes, $"disk {disk.DiskId} over capacity");
        }

        // After any FTT fault-domain failures the object keeps a strict majority and a complete copy.
        var domains = layout.Components.Select(c => c.FaultDomain).Distinct().ToList();
        foreach (var failed in Subsets(domains, ftt))
        {
            var down = failed.ToHashSet();
            Assert.True(layout.IsAccessible(c => !down.Contains(c.FaultDomain)), $"inaccessible after losing {string.Join(",", down)}");
        }

        // ... and after any FTT disk failures too.
        var disks = layout.Components.Select(c => c.DiskId).Distinct().ToList();
        foreach (var failed in Subsets(disks, Math.Min(ftt, 2)))
        {
            var down = failed.ToHashSet();
            Assert.True(layout.IsAccessible(c => !down.Contains(c.DiskId)), $"inaccessible after losing disks {string.Join(",", down)}");
        }
    }

    [Fact]
    public void Random_cases_mostly_place_so_the_invariants_are_exercised()
    {
        var placed = Enumerable.Range(1, 400).Count(seed =>
        {
            var (topology, policy, size, options) = RandomCase(new Random(seed));
            return PlacementEngine.Place(Guid.NewGuid(), size, policy, topology, options).Succeeded;
        });

        Assert.InRange(placed, 120, 400);
    }

    private static (ClusterTopology, StoragePolicy, long, PlacementOptions) RandomCase(Random random)
    {
        var hostCount = random.Next(1, 10);
        var racks = random.Next(0, 4); // 0: every host is its own fault domain
        var hosts = Enumerable.Range(1, hostCount)
            .Select(i => new HostCandidate($"h{i}", racks == 0 ? null : $"rack{random.Next(racks)}", random.Next(10) != 0))
            .ToList();
        var disks = hosts.SelectMany(h => Enumerable.Range(1, random.Next(1, 5)).Select(j =>
        {
            var capacity = random.Next(1, 64) * GiB;
            var free = (long)(capacity * random.NextDouble());
            return new DiskCandidate($"{h.HostId}d{j}", h.HostId, capacity, free, random.Next(12) != 0);
        })).ToList();
        var policy = StoragePolicy.Default with
        {
            FailuresToTolerate = random.Next(0, 4),
            StripeWidth = random.Next(1, 5),
            ObjectSpaceReservationPercent = random.Next(0, 3) * 50,
        };
        var size = random.Next(1, 40 * 256) * (4L << 20) / 4;
        var options = new PlacementOptions { MaxComponentBytes = random.Next(1, 9) * GiB, StripeUnitBytes = 1 << 20 };
        return (new ClusterTopology(hosts, disks), policy, size, options);
    }

    private static IEnumerable<IReadOnlyList<T>> Subsets<T>(IReadOnlyList<T> items, int size)
    {
        if (size == 0)
        {
            yield return [];
            yield break;
        }

        for (var i = 0; i < items.Count; i++)
        {
            foreach (var rest in Subsets(items.Skip(i + 1).ToList(), size - 1))
            {
                yield return [items[i], .. rest];
            }
        }
    }
}
