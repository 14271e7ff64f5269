namespace Converge.Placement.Tests;

public class PlacementEngineTests
{
    private const long GiB = 1L << 30;

    private static ClusterTopology Cluster(int hosts, int disksPerHost, long diskBytes, Func<int, string?>? faultDomain = null)
    {
        var h = Enumerable.Range(1, hosts).Select(i => new HostCandidate($"host{i}", faultDomain?.Invoke(i))).ToList();
        var d = h.SelectMany(x => Enumerable.Range(1, disksPerHost)
            .Select(j => new DiskCandidate($"{x.HostId}-disk{j}", x.HostId, diskBytes, diskBytes))).ToList();
        return new ClusterTopology(h, d);
    }

    [Fact]
    public void Default_policy_on_three_hosts_places_two_replicas_and_a_witness_on_distinct_hosts()
    {
        var result = PlacementEngine.Place(Guid.NewGuid(), 10 * GiB, StoragePolicy.Default, Cluster(3, 2, 100 * GiB));

        Assert.True(result.Succeeded, result.Error);
        var layout = result.Layout!;
        Assert.Equal(2, layout.DataComponents.Count());
        Assert.Single(layout.Witnesses);
        Assert.Equal(3, layout.Components.Select(c => c.HostId).Distinct().Count());
        Assert.Equal(3, layout.TotalVotes);
    }

    [Fact]
    public void Impossible_policy_is_refused_with_the_reason()
    {
        var policy = StoragePolicy.Default with { FailuresToTolerate = 2 };

        var result = PlacementEngine.Place(Guid.NewGuid(), GiB, policy, Cluster(3, 2, 100 * GiB));

        Assert.False(result.Succeeded);
        Assert.StartsWith("FTT=2 with RAID-1 needs 5 fault domains; cluster has 3", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Fault_domains_group_hosts()
    {
        // Six hosts in three racks: only three fault domains, so FTT=2 is impossible and FTT=1 spreads over racks.
        var cluster = Cluster(6, 1, 100 * GiB, i => $"rack{(i + 1) / 2}");

        Assert.False(PlacementEngine.Place(Guid.NewGuid(), GiB, StoragePolicy.Default with { FailuresToTolerate = 2 }, cluster).Succeeded);
        var layout = PlacementEngine.Place(Guid.NewGuid(), GiB, StoragePolicy.Default, cluster).Layout!;
        Assert.Equal(3, layout.Components.Select(c => c.FaultDomain).Distinct().Count());
    }

    [Theory]
    [InlineData(-1, 1, 0)]
    [InlineData(4, 1, 0)]
    [InlineData(1, 0, 0)]
    [InlineData(1, 13, 0)]
    [InlineData(1, 1, 101)]
    public void Invalid_rules_are_refused(int ftt, int stripeWidth, int reservation)
    {
        var policy = StoragePolicy.Default with { FailuresToTolerate = ftt, StripeWidth = stripeWidth, ObjectSpaceReservationPercent = reservation };

        var result = PlacementEngine.Place(Guid.NewGuid(), GiB, policy, Cluster(9, 12, 100 * GiB));

        Assert.False(result.Succeeded);
        Assert.Contains("invalid", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Erasure_coding_is_refused_until_its_io_path_exists()
    {
        var policy = StoragePolicy.Default with { Method = FailureToleranceMethod.Raid5 };

        var result = PlacementEngine.Place(Guid.NewGuid(), GiB, policy, Cluster(6, 2, 100 * GiB));

        Assert.False(result.Succeeded);
        Assert.Contains("RAID-5", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Object_larger_than_any_disk_is_split_into_bounded_components()
    {
        var options = new PlacementOptions { MaxComponentBytes = 4 * GiB };

        var layout = PlacementEngine.Place(Guid.NewGuid(), 10 * GiB, StoragePolicy.Default, Cluster(3, 4, 6 * GiB), options).Layout!;

        Assert.All(layout.DataComponents, c => Assert.True(c.Length <= 4 * GiB));
        for (var replica = 0; replica < 2; replica++)
        {
            Assert.Equal(10 * GiB, layout.ReplicaComponents(replica).Sum(c => c.Length));
        }
    }

    [Fact]
    public void Stripes_use_distinct_disks_when_there_are_enough()
    {
        var policy = StoragePolicy.Default with { StripeWidth = 2 };

        var layout = PlacementEngine.Place(Guid.NewGuid(), GiB, policy, Cluster(3, 2, 100 * GiB)).Layout!;

        for (var replica = 0; replica < 2; replica++)
        {
            var disks = layout.ReplicaComponents(replica).Select(c => c.DiskId).ToList();
            Assert.Equal(2, disks.Count);
            Assert.Equal(2, disks.Distinct().Count());
        }
    }

    [Fact]
    public void Size_beyond_free_capacity_is_refused()
    {
        var result = PlacementEngine.Place(Guid.NewGuid(), 50 * GiB, StoragePolicy.Default, Cluster(3, 2, 10 * GiB));

        Assert.False(result.Succeeded);
        Assert.Contains("not enough free capacity", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Thick_reservation_is_recorded_per_component()
    {
        var policy = StoragePolicy.Default with { ObjectSpaceReservationPercent = 100 };

        var layout = PlacementEngine.Place(Guid.NewGuid(), 2 * GiB, policy, Cluster(3, 1, 10 * GiB)).Layout!;

        Assert.All(layout.DataComponents, c => Assert.Equal(c.Length, c.ReservedBytes));
    }

    [Fact]
    public void Placement_prefers_the_roomiest_hosts()
    {
        var hosts = Enumerable.Range(1, 4).Select(i => new HostCandidate($"host{i}")).ToList();
        var disks = new List<DiskCandidate>
        {
            new("d1", "host1", 100 * GiB, 5 * GiB),
            new("d2", "host2", 100 * GiB, 90 * GiB),
            new("d3", "host3", 100 * GiB, 80 * GiB),
            new("d4", "host4", 100 * GiB, 70 * GiB),
        };

        var layout = PlacementEngine.Place(Guid.NewGuid(), GiB, StoragePolicy.Default, new ClusterTopology(hosts, disks)).Layout!;

        Assert.DoesNotContain(layout.Components, c => c.HostId == "host1");
    }

    [Fact]
    public void Unusable_hosts_and_disks_are_not_used()
    {
        var cluster = Cluster(4, 1, 100 * GiB);
        var hosts = cluster.Hosts.Select(h => h.HostId == "host2" ? h with { Usable = false } : h).ToList();
        var disks = cluster.Disks.Select(d => d.HostId == "host3" ? d with { Usable = false } : d).ToList();

        var result = PlacementEngine.Place(Guid.NewGuid(), GiB, StoragePolicy.Default, new ClusterTopology(hosts, disks));

        Assert.False(result.Succeeded);
        Assert.Contains("cluster has 2", result.Error, StringComparison.Ordinal);
    }
}
