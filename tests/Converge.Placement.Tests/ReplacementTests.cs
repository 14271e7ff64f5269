namespace Converge.Placement.Tests;

/// <summary>Rebuild placement: a replacement keeps the object's fault domains apart, fits, and is deterministic.</summary>
public class ReplacementTests
{
    private const long GiB = 1L << 30;

    [Theory]
    [MemberData(nameof(PlacementPropertyTests.Seeds), MemberType = typeof(PlacementPropertyTests))]
    public void Replacing_any_component_keeps_the_invariants(int seed)
    {
        var random = new Random(seed);
        var hosts = Enumerable.Range(0, random.Next(3, 9)).Select(i => new HostCandidate($"h{i}", random.Next(3) == 0 ? $"rack{i % 3}" : null)).ToList();
        var disks = hosts.SelectMany(h => Enumerable.Range(0, random.Next(1, 3))
            .Select(d => new DiskCandidate($"{h.HostId}-d{d}", h.HostId, 100 * GiB, random.Next(1, 100) * GiB))).ToList();
        var topology = new ClusterTopology(hosts, disks);
        var policy = new StoragePolicy { Name = "p", FailuresToTolerate = random.Next(0, 2), StripeWidth = random.Next(1, 3) };
        var placed = PlacementEngine.Place(new Guid(seed, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1), 4 * GiB, policy, topology);
        if (!placed.Succeeded)
        {
            return;
        }

        var layout = placed.Layout!;
        var failed = layout.Components[random.Next(layout.Components.Count)];
        var newId = new Guid(seed, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9);
        var first = Replacement.Place(layout, failed.ComponentId, newId, topology);
        var second = Replacement.Place(layout, failed.ComponentId, newId, new ClusterTopology([.. hosts.OrderBy(_ => random.Next())], [.. disks.OrderBy(_ => random.Next())]));
        Assert.Equal(first.Error, second.Error);
        if (!first.Succeeded)
        {
            Assert.False(string.IsNullOrWhiteSpace(first.Error));
            return;
        }

        var replaced = first.Layout!;
        Assert.Equal(replaced.Components, second.Layout!.Components);
        var replacement = replaced.Components.Single(c => c.ComponentId == newId);
        Assert.DoesNotContain(replaced.Components, c => c.ComponentId == failed.ComponentId);
        Assert.Equal((failed.Role, failed.Replica, failed.Stripe, failed.StripeOffset, failed.Length, failed.Votes),
            (replacement.Role, replacement.Replica, replacement.Stripe, replacement.StripeOffset, replacement.Length, replacement.Votes));
        Assert.NotEqual(failed.HostId, replacement.HostId); // hostLost defaults to true
        Assert.True(disks.Single(d => d.DiskId == replacement.DiskId).FreeBytes >= replacement.Length);

        // Still: no fault domain holds two replicas, or a replica and a witness.
        var owners = replaced.Components.GroupBy(c => c.FaultDomain)
            .Select(g => g.Select(c => c.Role == ComponentRole.Witness ? $"w{c.ComponentId}" : $"r{c.Replica}").Distinct().Count());
        Assert.All(owners, count => Assert.Equal(1, count));
    }

    [Fact]
    public void A_cluster_without_a_free_fault_domain_refuses_with_a_reason()
    {
        var hosts = new[] { new HostCandidate("a"), new HostCandidate("b"), new HostCandidate("c") };
        var disks = hosts.Select(h => new DiskCandidate(h.HostId + "-d", h.HostId, 10 * GiB, 10 * GiB)).ToList();
        var topology = new ClusterTopology(hosts, disks);
        var layout = PlacementEngine.Place(Guid.NewGuid(), GiB, new StoragePolicy { Name = "d", FailuresToTolerate = 1 }, topology).Layout!;
        var data = layout.DataComponents.First();

        var result = Replacement.Place(layout, data.ComponentId, Guid.NewGuid(), topology);

        Assert.False(result.Succeeded);
        Assert.Contains("fault domain", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void After_a_disk_failure_another_disk_of_the_same_host_is_a_target()
    {
        var hosts = new[] { new HostCandidate("a"), new HostCandidate("b"), new HostCandidate("c") };
        var disks = hosts.SelectMany(h => new[] { new DiskCandidate(h.HostId + "-d1", h.HostId, 10 * GiB, 10 * GiB), new DiskCandidate(h.HostId + "-d2", h.HostId, 10 * GiB, 9 * GiB) }).ToList();
        var topology = new ClusterTopology(hosts, disks);
        var layout = PlacementEngine.Place(Guid.NewGuid(), GiB, new StoragePolicy { Name = "d", FailuresToTolerate = 1 }, topology).Layout!;
        var data = layout.DataComponents.First();

        var result = Replacement.Place(layout, data.ComponentId, Guid.NewGuid(), topology, hostLost: false);

        Assert.True(result.Succeeded, result.Error);
        var replacement = result.Layout!.Components.Single(c => layout.Components.All(o => o.ComponentId != c.ComponentId));
        Assert.Equal(data.HostId, replacement.HostId);
        Assert.NotEqual(data.DiskId, replacement.DiskId);
        Assert.False(Replacement.Place(layout, data.ComponentId, Guid.NewGuid(), topology, hostLost: true).Succeeded);
    }
}
