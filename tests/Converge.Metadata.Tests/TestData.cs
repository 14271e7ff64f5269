using System.Collections.Immutable;
using Converge.Placement;

namespace Converge.Metadata.Tests;

/// <summary>Commands for a small cluster: hosts host1..hostN with one 100 GiB disk each.</summary>
internal static class TestData
{
    public const long GiB = 1L << 30;

    public static readonly DateTimeOffset T0 = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static InitializeCluster Initialize(string name = "lab") =>
        new(Guid.NewGuid(), "cluster-1", name, T0, StoragePolicy.Default, 3);

    public static RegisterHost Host(int i) =>
        new(Guid.NewGuid(), $"host{i}", $"host{i}", null,
            new HostEndpoints($"http://10.0.0.{i}:8080", $"10.0.0.{i}:10809", $"10.0.0.{i}:7000", $"10.0.0.{i}:7100"), true, T0);

    public static string DiskId(int i) => new Guid(i, 0, 0, new byte[8]).ToString("N");

    public static RegisterDisk Disk(int i) => new(Guid.NewGuid(), DiskId(i), $"host{i}", $"/srv/converge/disk{i}", 100 * GiB);

    /// <summary>Initialize, then <paramref name="hosts"/> hosts with a disk each.</summary>
    public static IEnumerable<MetadataCommand> Bootstrap(int hosts = 3)
    {
        yield return Initialize();
        for (var i = 1; i <= hosts; i++)
        {
            yield return Host(i);
            yield return Disk(i);
        }
    }

    public static ClusterState Apply(this ClusterState state, IEnumerable<MetadataCommand> commands)
    {
        foreach (var command in commands)
        {
            var (next, result) = state.Apply(command);
            Assert.True(result.Succeeded, result.Error);
            state = next;
        }

        return state;
    }

    public static ObjectLayout Layout(ClusterState state, Guid objectId, long sizeBytes, StoragePolicy? policy = null)
    {
        var topology = new ClusterTopology(
            [.. state.Hosts.Values.Select(h => new HostCandidate(h.HostId, h.FaultDomain))],
            [.. state.Disks.Values.Select(d => new DiskCandidate(d.DiskId, d.HostId, d.CapacityBytes, d.CapacityBytes))]);
        var result = PlacementEngine.Place(objectId, sizeBytes, policy ?? StoragePolicy.Default, topology);
        Assert.True(result.Succeeded, result.Error);
        return result.Layout!;
    }

    public static CreateVirtualDisk CreateDisk(ClusterState state, string name, long sizeBytes = GiB) =>
        new(Guid.NewGuid(), name, "default", Layout(state, Guid.NewGuid(), sizeBytes), T0);

    public static ImmutableArray<MetadataCommand> Many(int count) =>
        [.. Enumerable.Range(0, count).Select(i => (MetadataCommand)new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = $"p{i}" }))];
}
