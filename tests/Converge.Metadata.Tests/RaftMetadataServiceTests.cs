using System.Diagnostics;
using Converge.Placement;
using Xunit.Abstractions;

namespace Converge.Metadata.Tests;

/// <summary>Real Raft members over TCP on loopback with real write-ahead logs. Runs its tests one at a time.</summary>
public class RaftMetadataServiceTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Three_members_elect_a_leader_and_converge_on_proposed_commands()
    {
        await using var cluster = await MetadataCluster.StartAsync(3);
        var changes = 0;
        foreach (var member in cluster.Members)
        {
            member.Service!.Changed += (_, _) => Interlocked.Increment(ref changes);
        }

        foreach (var command in TestData.Bootstrap())
        {
            await cluster.ProposeOkAsync(command);
        }

        var leader = await cluster.WaitForLeaderAsync();
        var create = TestData.CreateDisk(leader.Service!.Current, "vm1");
        var created = await cluster.ProposeOkAsync(create);

        Assert.Equal(1, created.Generation);
        Assert.True(created.Index > 0);
        await cluster.WaitForConvergenceAsync(created.Index);
        Assert.All(cluster.Members, m => Assert.Equal(3, m.Service!.Voters.Count));
        Assert.All(cluster.Members, m => Assert.NotNull(m.Service!.Current.FindVirtualDiskByName("vm1")));
        await MetadataCluster.Eventually(() => Volatile.Read(ref changes) == 3 * 8, "a change event per command per member");
    }

    [Fact]
    public async Task Refusals_and_retries_come_back_to_the_proposer()
    {
        await using var cluster = await MetadataCluster.StartAsync(3);
        foreach (var command in TestData.Bootstrap())
        {
            await cluster.ProposeOkAsync(command);
        }

        var leader = await cluster.WaitForLeaderAsync();
        var create = TestData.CreateDisk(leader.Service!.Current, "vm1");
        var first = await cluster.ProposeOkAsync(create);

        var duplicateName = await cluster.ProposeAsync(TestData.CreateDisk(leader.Service.Current, "vm1"));
        Assert.False(duplicateName.Succeeded);
        Assert.Equal("virtual disk 'vm1' already exists", duplicateName.Error);

        // The same command id again (a client retry): applied once, same answer.
        var retried = await cluster.ProposeAsync(create);
        Assert.True(retried.Succeeded);
        Assert.Equal(first.Generation, retried.Generation);
        Assert.Single(leader.Service.Current.VirtualDisks);
    }

    [Fact]
    public async Task Proposing_on_a_follower_names_the_leader_and_followers_read_through_a_barrier()
    {
        await using var cluster = await MetadataCluster.StartAsync(3);
        var leader = await cluster.WaitForLeaderAsync();
        var follower = cluster.Members.First(m => m != leader);

        var e = await Assert.ThrowsAsync<NotLeaderException>(() => follower.Service!.ProposeAsync(TestData.Initialize(), CancellationToken.None));
        Assert.Equal(leader.Endpoint, e.LeaderRaftEndpoint);
        Assert.Contains(leader.Endpoint, e.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<NotLeaderException>(() => follower.Service!.AddVoterAsync("127.0.0.1:1", CancellationToken.None));

        var result = await cluster.ProposeOkAsync(TestData.Initialize());
        using var cts = new CancellationTokenSource(MetadataCluster.Deadline);
        await follower.Service!.BarrierAsync(cts.Token);
        Assert.True(follower.Service.Current.AppliedIndex >= result.Index);
        Assert.NotNull(follower.Service.Current.Cluster);
    }

    [Fact]
    public async Task A_barrier_on_a_follower_whose_leader_is_gone_fails_as_metadata_unavailable()
    {
        // Callers (a replica's fence check, the management API) treat MetadataUnavailableException as "refuse or ask
        // again"; DotNext's own exception for a leader that stopped answering must not escape as something else.
        await using var cluster = await MetadataCluster.StartAsync(3);
        await cluster.ProposeOkAsync(TestData.Initialize());
        var leader = await cluster.WaitForLeaderAsync();
        var followers = cluster.Members.Where(m => m != leader).ToList();
        await followers[1].StopAsync();
        await leader.StopAsync();

        // Right after the stop the follower still knows the old leader (a refused connection, asked again until the
        // deadline); once its election timer fires it knows none.
        for (var attempt = 0; attempt < 5; attempt++)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(3));
            await Assert.ThrowsAsync<MetadataUnavailableException>(() => followers[0].Service!.BarrierAsync(cts.Token));
        }
    }

    [Fact]
    public async Task Stopping_the_leader_elects_another_and_writes_continue()
    {
        await using var cluster = await MetadataCluster.StartAsync(3);
        await cluster.ProposeOkAsync(TestData.Initialize());
        var oldLeader = await cluster.WaitForLeaderAsync();

        var stopwatch = Stopwatch.StartNew();
        await oldLeader.StopAsync();
        var newLeader = await cluster.WaitForLeaderAsync();
        output.WriteLine($"new leader {newLeader.Endpoint} after {stopwatch.ElapsedMilliseconds} ms");

        Assert.NotSame(oldLeader, newLeader);
        var result = await cluster.ProposeOkAsync(TestData.Host(1));
        await cluster.WaitForConvergenceAsync(result.Index);
        Assert.True(newLeader.Service!.Current.Hosts.ContainsKey("host1"));

        // The old leader comes back as a follower and catches up.
        await oldLeader.StartAsync();
        await cluster.WaitForConvergenceAsync(result.Index);
        Assert.True(oldLeader.Service!.Current.Hosts.ContainsKey("host1"));
    }

    [Fact]
    public async Task Restarting_every_member_from_its_directory_recovers_identical_state()
    {
        // A small snapshot interval: recovery goes through a snapshot plus the log after it.
        await using var cluster = await MetadataCluster.StartAsync(3, snapshotInterval: 7);
        foreach (var command in TestData.Bootstrap().Concat(TestData.Many(20)))
        {
            await cluster.ProposeOkAsync(command);
        }

        var leader = await cluster.WaitForLeaderAsync();
        var last = await cluster.ProposeOkAsync(TestData.CreateDisk(leader.Service!.Current, "vm1"));
        await cluster.WaitForConvergenceAsync(last!.Index);
        var before = leader.Service.Current;
        Assert.NotEmpty(Directory.GetFiles(Path.Combine(leader.Directory, "snapshots")));

        foreach (var member in cluster.Members)
        {
            await member.StopAsync();
        }

        await Task.WhenAll(cluster.Members.Select(m => m.StartAsync()));
        await cluster.WaitForLeaderAsync();
        await cluster.WaitForConvergenceAsync(last!.Index);

        Assert.All(cluster.Members, m => Assert.True(m.Service!.Current.ContentEquals(before)));
        Assert.All(cluster.Members, m => Assert.Equal(3, m.Service!.Voters.Count));
        var next = await cluster.ProposeOkAsync(TestData.Host(4));
        await cluster.WaitForConvergenceAsync(next.Index);
    }

    [Fact]
    public async Task A_cold_started_member_grows_into_a_cluster_by_adding_voters()
    {
        await using var cluster = await MetadataCluster.StartAsync(1);
        var first = cluster.Members[0];
        Assert.True(first.Service!.IsLeader);
        foreach (var command in TestData.Bootstrap())
        {
            await cluster.ProposeOkAsync(command);
        }

        // Joining members start empty; the leader catches them up with what was written before they joined.
        var second = await cluster.JoinAsync();
        var third = await cluster.JoinAsync();
        await cluster.WaitForConvergenceAsync(first.Service.Current.AppliedIndex);
        Assert.Equal(3, second.Service!.Current.Hosts.Count);
        Assert.All(cluster.Members, m => Assert.Equal(3, m.Service!.Voters.Count));

        var result = await cluster.ProposeOkAsync(new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = "gold" }));
        await cluster.WaitForConvergenceAsync(result.Index);
        Assert.True(third.Service!.Current.Policies.ContainsKey("gold"));

        // Adding a member twice does nothing; removing one shrinks the member list everywhere.
        using var cts = new CancellationTokenSource(MetadataCluster.Deadline);
        var leader = await cluster.WaitForLeaderAsync();
        await leader.Service!.AddVoterAsync(third.Endpoint, cts.Token);
        var leaving = cluster.Members.First(m => m != leader);
        await leader.Service.RemoveVoterAsync(leaving.Endpoint, cts.Token);
        await leaving.StopAsync();
        await MetadataCluster.Eventually(() => cluster.Running.All(m => m.Service!.Voters.Count == 2), "two voters left");
        await cluster.ProposeOkAsync(TestData.Host(4));
    }

    [Fact]
    public async Task Five_members_tolerate_two_stopped()
    {
        await using var cluster = await MetadataCluster.StartAsync(5);
        await cluster.ProposeOkAsync(TestData.Initialize());

        var leader = await cluster.WaitForLeaderAsync();
        await leader.StopAsync();
        await cluster.Members.First(m => m.Service is not null && m != leader).StopAsync();

        var result = await cluster.ProposeOkAsync(TestData.Host(1));
        await cluster.WaitForConvergenceAsync(result.Index);
        Assert.Equal(3, cluster.Running.Count());
        Assert.All(cluster.Running, m => Assert.True(m.Service!.Current.Hosts.ContainsKey("host1")));
    }

    [Fact]
    public async Task Many_sequential_proposals_all_commit_and_every_member_converges()
    {
        // Commit latency is measured by tests/Converge.Metadata.DurabilityProbe (bench), never asserted here.
        await using var cluster = await MetadataCluster.StartAsync(3);
        await cluster.ProposeOkAsync(TestData.Initialize());
        var commands = TestData.Many(300);
        var started = Stopwatch.GetTimestamp();
        CommandResult? last = null;
        foreach (var command in commands)
        {
            last = await cluster.ProposeOkAsync(command);
        }

        var elapsed = Stopwatch.GetElapsedTime(started);
        output.WriteLine($"{commands.Length} sequential proposals in {elapsed.TotalMilliseconds:F0} ms");
        await cluster.WaitForConvergenceAsync(last!.Index);
    }
}
