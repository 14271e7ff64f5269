using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json;
using DotNext.Net.Cluster;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using RaftNotLeaderException = DotNext.Net.Cluster.Consensus.Raft.NotLeaderException;

namespace Converge.Metadata.Raft;

/// <summary>
/// <see cref="IMetadataService"/> on DotNext Raft over TCP: a write-ahead log that every member flushes before it
/// acknowledges an entry (<see cref="DurableWriteAheadLog"/>), a JSON-snapshot state machine and a member list on disk,
/// all under <see cref="MetadataOptions.DataDirectory"/>.
/// </summary>
/// <remarks>
/// Layout of the data directory: <c>wal/</c> (log), <c>snapshots/</c> (state snapshots, named index-term),
/// <c>members.bin</c> (Raft member list). Membership changes go through <see cref="AddVoterAsync"/> and
/// <see cref="RemoveVoterAsync"/> on the leader, one at a time.
/// </remarks>
public sealed class RaftMetadataService : IMetadataService
{
    private static readonly TimeSpan BarrierRetryDelay = TimeSpan.FromMilliseconds(50);
    private static readonly Meter Meter = new("Converge.Metadata");
    private static readonly Histogram<double> CommitDuration = Meter.CreateHistogram<double>(
        "converge.metadata.commit.duration", "ms", "Time from proposal to committed on a majority and applied on the leader");

    private readonly MetadataOptions options;
    private readonly ILoggerFactory loggerFactory;
    private readonly ILogger logger;
    private readonly ConcurrentDictionary<Guid, TaskCompletionSource<CommandResult>> pending = new();
    private readonly SemaphoreSlim membershipLock = new(1, 1);
    private MetadataStateMachine? stateMachine;
    private WriteAheadLog? log;
    private EndPointConfigurationStorage? memberStorage;
    private RaftCluster? cluster;
    private int lifecycle; // 0 created, 1 started, 2 disposed

    public RaftMetadataService(MetadataOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        this.options = options;
        loggerFactory = options.LoggerFactory ?? NullLoggerFactory.Instance;
        logger = loggerFactory.CreateLogger<RaftMetadataService>();
    }

    public event EventHandler<ClusterState>? Changed;

    public ClusterState Current => stateMachine?.Current ?? ClusterState.Empty;

    public bool IsLeader => cluster is { } c && Volatile.Read(ref lifecycle) == 1 && !c.LeadershipToken.IsCancellationRequested;

    public string? LeaderRaftEndpoint => Format(cluster?.Leader?.EndPoint);

    /// <summary>This member's Raft endpoint as other members know it.</summary>
    public string RaftEndpoint => Format(options.RaftEndPoint)!;

    /// <summary>The Raft members this node currently knows of.</summary>
    public IReadOnlyList<string> Voters =>
        cluster is { } c ? [.. c.Members.Select(m => Format(m.EndPoint)!).Order(StringComparer.Ordinal)] : [];

    private static DirectoryInfo CreatePrivateDirectory(string path) => OperatingSystem.IsWindows()
        ? Directory.CreateDirectory(path)
        : Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

    public async Task StartAsync(CancellationToken ct)
    {
        if (Interlocked.CompareExchange(ref lifecycle, 1, 0) != 0)
        {
            throw new InvalidOperationException("the metadata service was already started");
        }

        // The metadata names every disk and holds the cluster's secrets: the owner's only.
        var root = CreatePrivateDirectory(options.DataDirectory);
        var snapshots = CreatePrivateDirectory(Path.Combine(root.FullName, "snapshots"));
        var walDirectory = CreatePrivateDirectory(Path.Combine(root.FullName, "wal"));

        // The state machine restores its newest snapshot before the log is built: the log replays from there.
        stateMachine = new MetadataStateMachine(snapshots, options.SnapshotInterval, OnApplied, logger);
        await stateMachine.RestoreAsync(ct).ConfigureAwait(false);
        Log.Starting(logger, RaftEndpoint, options.ColdStart, root.FullName, stateMachine.Current.AppliedIndex);

        // DotNext 6.12 made WriteAheadLog.Options.FlushOnCommit obsolete ("always true"): CommitAsync flushes, so the
        // leader has an entry on media before it applies it. A follower's append does not flush, and it answers the
        // leader before its commit: DurableWriteAheadLog flushes that append before the answer, so an entry is
        // committed only once it is on the media of a majority.
        var walOptions = new WriteAheadLog.Options { Location = walDirectory.FullName };
        log = options.FlushFollowerAppends
            ? new DurableWriteAheadLog(walOptions, stateMachine)
            : new WriteAheadLog(walOptions, stateMachine);
        memberStorage = new EndPointConfigurationStorage(Path.Combine(root.FullName, "members.bin"));
        cluster = new RaftCluster(new RaftCluster.TcpConfiguration(options.RaftEndPoint)
        {
            ColdStart = options.ColdStart,
            LowerElectionTimeout = (int)options.LowerElectionTimeout.TotalMilliseconds,
            UpperElectionTimeout = (int)options.UpperElectionTimeout.TotalMilliseconds,
            LoggerFactory = loggerFactory,
            ConfigurationStorage = memberStorage,
            SslOptions = options.Tls?.ToSslOptions(),
        })
        {
            AuditTrail = log,
        };
        cluster.LeaderChanged += OnLeaderChanged;
        await cluster.StartAsync(ct).ConfigureAwait(false);
    }

    public async Task<CommandResult> ProposeAsync(MetadataCommand command, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(command);
        var raft = RunningCluster();
        if (!IsLeader)
        {
            throw new NotLeaderException(LeaderRaftEndpoint);
        }

        var payload = JsonSerializer.SerializeToUtf8Bytes(command, MetadataJsonContext.Default.MetadataCommand);
        var completion = pending.GetOrAdd(
            command.CommandId, static _ => new TaskCompletionSource<CommandResult>(TaskCreationOptions.RunContinuationsAsynchronously));
        var started = options.Time.GetTimestamp();
        try
        {
            try
            {
                // Returns once the entry is committed on a majority and applied locally.
                await raft.ReplicateAsync(payload, context: null, ct).ConfigureAwait(false);
            }
            catch (RaftNotLeaderException e)
            {
                // The entry may still commit under the next leader: a retry with the same command id is applied once.
                throw new NotLeaderException($"leadership was lost while proposing; the leader is {LeaderRaftEndpoint ?? "unknown"}", e)
                {
                    LeaderRaftEndpoint = LeaderRaftEndpoint,
                };
            }

            // ReplicateAsync returns once the entry is applied locally, so the result is normally already there.
            var result = await completion.Task.WaitAsync(ct).ConfigureAwait(false);
            CommitDuration.Record(options.Time.GetElapsedTime(started).TotalMilliseconds);
            return result;
        }
        finally
        {
            pending.TryRemove(KeyValuePair.Create(command.CommandId, completion));
        }
    }

    /// <summary>
    /// Waits until the local state holds everything the leader had committed when asked. A failed request to a known
    /// leader (a connection that timed out on a loaded host) is asked again until <paramref name="ct"/> fires, so callers
    /// must pass a deadline; with no leader known it fails at once.
    /// </summary>
    public async Task BarrierAsync(CancellationToken ct)
    {
        var raft = RunningCluster();
        MemberUnavailableException? lastFailure = null;
        while (true)
        {
            try
            {
                await raft.ApplyReadBarrierAsync(ct).ConfigureAwait(false);
                return;
            }
            catch (QuorumUnreachableException e)
            {
                throw new MetadataUnavailableException("no majority of metadata members is reachable", e);
            }
            catch (MemberUnavailableException e)
            {
                if (ct.IsCancellationRequested)
                {
                    throw LeaderUnavailable(e);
                }

                lastFailure = e;
            }
            catch (OperationCanceledException) when (lastFailure is not null)
            {
                throw LeaderUnavailable(lastFailure);
            }

            try
            {
                await Task.Delay(BarrierRetryDelay, options.Time, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                throw LeaderUnavailable(lastFailure);
            }
        }

        static MetadataUnavailableException LeaderUnavailable(MemberUnavailableException e) =>
            new($"the metadata leader did not answer a read barrier: {e.Message}", e);
    }

    /// <summary>
    /// Leader only: makes a running member (started with <see cref="MetadataOptions.ColdStart"/> false) a voter. The
    /// leader first replicates the log to it, then commits the new member list. Adding a current member does nothing.
    /// </summary>
    public Task AddVoterAsync(string raftEndpoint, CancellationToken ct) =>
        ChangeMembershipAsync(raftEndpoint, add: true, ct);

    /// <summary>Leader only: removes a voter (which may be down). Removing an unknown member does nothing.</summary>
    public Task RemoveVoterAsync(string raftEndpoint, CancellationToken ct) =>
        ChangeMembershipAsync(raftEndpoint, add: false, ct);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref lifecycle, 2) == 2)
        {
            return;
        }

        if (cluster is { } raft)
        {
            raft.LeaderChanged -= OnLeaderChanged;
            await raft.StopAsync(CancellationToken.None).ConfigureAwait(false);
            raft.Dispose();
        }

        if (log is not null)
        {
            await log.DisposeAsync().ConfigureAwait(false);
        }

        if (stateMachine is not null)
        {
            await stateMachine.DisposeAsync().ConfigureAwait(false);
        }

        memberStorage?.Dispose();
        foreach (var waiter in pending.Values)
        {
            waiter.TrySetException(new ObjectDisposedException(nameof(RaftMetadataService)));
        }

        membershipLock.Dispose();
        Log.Stopped(logger, RaftEndpoint);
    }

    private async Task ChangeMembershipAsync(string raftEndpoint, bool add, CancellationToken ct)
    {
        if (!IPEndPoint.TryParse(raftEndpoint, out var endPoint) || endPoint.Port == 0)
        {
            throw new ArgumentException($"'{raftEndpoint}' is not an address:port Raft endpoint", nameof(raftEndpoint));
        }

        var raft = RunningCluster();
        await membershipLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (!IsLeader)
            {
                throw new NotLeaderException(LeaderRaftEndpoint);
            }

            var isMember = raft.Members.Any(m => endPoint.Equals(m.EndPoint));
            if (isMember == add)
            {
                return;
            }

            Log.MembershipChange(logger, add ? "adding" : "removing", raftEndpoint);
            bool changed;
            try
            {
                changed = add
                    ? await raft.AddMemberAsync(endPoint, ct).ConfigureAwait(false)
                    : await raft.RemoveMemberAsync(endPoint, ct).ConfigureAwait(false);
            }
            catch (RaftNotLeaderException e)
            {
                throw new NotLeaderException($"leadership was lost during the membership change; the leader is {LeaderRaftEndpoint ?? "unknown"}", e)
                {
                    LeaderRaftEndpoint = LeaderRaftEndpoint,
                };
            }

            if (!changed)
            {
                throw new MetadataUnavailableException(add
                    ? $"could not add {raftEndpoint}: it did not catch up with the log or the new member list could not be committed"
                    : $"could not remove {raftEndpoint}: the new member list could not be committed");
            }
        }
        finally
        {
            membershipLock.Release();
        }
    }

    private RaftCluster RunningCluster()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref lifecycle) == 2, this);
        return cluster ?? throw new InvalidOperationException("the metadata service is not started");
    }

    private void OnApplied(MetadataCommand command, CommandResult result, ClusterState state)
    {
        if (pending.TryGetValue(command.CommandId, out var waiter))
        {
            waiter.TrySetResult(result);
        }

        try
        {
            Changed?.Invoke(this, state);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Log.ChangedHandlerFailed(logger, e);
        }
    }

    private void OnLeaderChanged(ICluster sender, IClusterMember? leader) =>
        Log.LeaderChanged(logger, Format(leader?.EndPoint) ?? "unknown (election in progress)");

    private static string? Format(EndPoint? endPoint) => endPoint switch
    {
        null => null,
        IPEndPoint ip => ip.ToString(),
        _ => endPoint.ToString(),
    };
}
