using System.Net;
using Converge.Metadata.Raft;

namespace Converge.Metadata.Tests;

/// <summary>
/// In-process Raft members on loopback, each with its own data directory under one temporary root.
/// Built by the join flow: the first member cold-starts alone, the others start empty and are added as voters.
/// </summary>
internal sealed class MetadataCluster : IAsyncDisposable
{
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);

    private readonly string root = Path.Combine(Path.GetTempPath(), "converge-metadata-tests", Guid.NewGuid().ToString("N"));
    private readonly int snapshotInterval;

    private MetadataCluster(int snapshotInterval) => this.snapshotInterval = snapshotInterval;

    public List<Member> Members { get; } = [];

    public IEnumerable<Member> Running => Members.Where(m => m.Service is not null);

    public static async Task<MetadataCluster> StartAsync(int size, int snapshotInterval = 1000)
    {
        var cluster = new MetadataCluster(snapshotInterval);
        try
        {
            var first = cluster.AddMember(coldStart: true);
            await first.StartAsync();
            await cluster.WaitForLeaderAsync();
            for (var i = 1; i < size; i++)
            {
                await cluster.JoinAsync();
            }

            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    public Member AddMember(bool coldStart)
    {
        var member = new Member(
            Path.Combine(root, $"node{Members.Count}"), new IPEndPoint(IPAddress.Loopback, Converge.TestKit.FreePort.Allocate()), coldStart, snapshotInterval);
        Members.Add(member);
        return member;
    }

    /// <summary>Starts a new empty member and has the leader add it as a voter, following leader changes as proposals do.</summary>
    public async Task<Member> JoinAsync()
    {
        var member = AddMember(coldStart: false);
        await member.StartAsync();
        using var cts = new CancellationTokenSource(Deadline);
        Member leader;
        while (true)
        {
            leader = await WaitForLeaderAsync(joining: member);
            try
            {
                // Adding a member that already is one returns at once, so a retry after a lost leadership is safe.
                await leader.Service!.AddVoterAsync(member.Endpoint, cts.Token);
                break;
            }
            catch (NotLeaderException) when (!cts.IsCancellationRequested)
            {
                // Leadership moved during the change (seen on a loaded machine): ask the new leader.
            }
        }

        await Eventually(() => member.Service!.LeaderRaftEndpoint == leader.Endpoint, "the new member to know the leader");
        return member;
    }

    /// <summary>
    /// The one running member that is leader and that every running member agrees on; a member still
    /// <paramref name="joining"/> need not know it yet (it may already be the leader, if the join got far enough).
    /// </summary>
    public async Task<Member> WaitForLeaderAsync(Member? joining = null)
    {
        Member? leader = null;
        await Eventually(() =>
        {
            var leaders = Running.Where(m => m.Service!.IsLeader).ToList();
            leader = leaders.Count == 1 ? leaders[0] : null;
            return leader is not null && Running.All(m => m == joining || m.Service!.LeaderRaftEndpoint == leader.Endpoint);
        }, "a single leader known to every running member");
        return leader!;
    }

    /// <summary>Proposes on the current leader, following leader changes (retries keep the command id).</summary>
    public async Task<CommandResult> ProposeAsync(MetadataCommand command)
    {
        using var cts = new CancellationTokenSource(Deadline);
        while (true)
        {
            var leader = await WaitForLeaderAsync();
            try
            {
                return await leader.Service!.ProposeAsync(command, cts.Token);
            }
            catch (NotLeaderException) when (!cts.IsCancellationRequested)
            {
                // an election happened in between: ask again
            }
        }
    }

    public async Task<CommandResult> ProposeOkAsync(MetadataCommand command)
    {
        var result = await ProposeAsync(command);
        Assert.True(result.Succeeded, result.Error);
        return result;
    }

    /// <summary>Every running member has applied the same state at the same index.</summary>
    public Task WaitForConvergenceAsync(long atLeastIndex = 0) => Eventually(() =>
    {
        var states = Running.Select(m => m.Service!.Current).ToList();
        return states[0].AppliedIndex >= atLeastIndex &&
               states.All(s => s.AppliedIndex == states[0].AppliedIndex && s.ContentEquals(states[0]));
    }, "all running members at the same applied state");

    public static async Task Eventually(Func<bool> condition, string what, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? Deadline);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for {what}");
            }

            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var member in Members)
        {
            await member.StopAsync();
        }

        try
        {
            Directory.Delete(root, recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }

    internal sealed class Member(string directory, IPEndPoint endPoint, bool coldStart, int snapshotInterval)
    {
        public string Endpoint { get; } = endPoint.ToString();

        public string Directory { get; } = directory;

        public RaftMetadataService? Service { get; private set; }

        public async Task StartAsync()
        {
            Assert.Null(Service);
            var service = new RaftMetadataService(new MetadataOptions
            {
                DataDirectory = Directory,
                RaftEndPoint = endPoint,
                ColdStart = coldStart,
                SnapshotInterval = snapshotInterval,
            });
            using var cts = new CancellationTokenSource(Deadline);
            await service.StartAsync(cts.Token);
            Service = service;
        }

        public async Task StopAsync()
        {
            if (Service is { } service)
            {
                Service = null;
                await service.DisposeAsync();
            }
        }
    }
}
