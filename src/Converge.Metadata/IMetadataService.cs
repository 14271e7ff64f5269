namespace Converge.Metadata;

/// <summary>
/// The replicated cluster metadata as the rest of Converge sees it. No consensus-library types appear here.
/// </summary>
public interface IMetadataService : IAsyncDisposable
{
    /// <summary>The locally applied state (may lag the leader; use <see cref="BarrierAsync"/> first for linearizable reads).</summary>
    ClusterState Current { get; }

    /// <summary>Raised after each applied command, on the applying thread: handlers must be quick and must not block.</summary>
    event EventHandler<ClusterState>? Changed;

    bool IsLeader { get; }

    /// <summary>The leader's Raft endpoint ("127.0.0.1:port"), or null while no leader is known.</summary>
    string? LeaderRaftEndpoint { get; }

    /// <summary>
    /// On the leader: replicates the command, waits until it is committed (durable on a majority) and applied
    /// locally, and returns what <see cref="ClusterState.Apply"/> returned. Retrying with the same command id is safe.
    /// </summary>
    /// <exception cref="NotLeaderException">This member is not the leader (the exception names the leader if known).</exception>
    Task<CommandResult> ProposeAsync(MetadataCommand command, CancellationToken ct);

    /// <summary>
    /// Waits until <see cref="Current"/> reflects every command committed before the call (linearizable read). Pass a
    /// deadline: a Raft member asks a leader that does not answer again until it fires, and then fails with
    /// <see cref="MetadataUnavailableException"/>, as it does when no leader is known.
    /// </summary>
    Task BarrierAsync(CancellationToken ct);

    Task StartAsync(CancellationToken ct);
}
