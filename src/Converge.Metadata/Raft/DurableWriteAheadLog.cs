using DotNext.IO.Log;
using DotNext.Net.Cluster.Consensus.Raft;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;

namespace Converge.Metadata.Raft;

/// <summary>
/// DotNext's <see cref="WriteAheadLog"/>, except that entries appended at a given index (a follower's AppendEntries
/// and InstallSnapshot) are on media before the append returns, and so before the follower answers the leader.
/// </summary>
/// <remarks>
/// <para>
/// In DotNext 6.12 an append only copies the entries into the log's pages and wakes a background flusher; only
/// <see cref="WriteAheadLog.CommitAsync(long, CancellationToken)"/> waits for the flush. A follower commits an entry
/// only when a later AppendEntries carries the new commit index, so it acknowledged entries that were still in its page
/// cache, and a checkpoint that did not cover them yet (a restarted follower forgets entries past its checkpoint).
/// </para>
/// <para>
/// The hook: <see cref="RaftCluster"/> calls the log only through its interfaces, so this class re-implements
/// <see cref="IAuditTrail{TEntry}"/> and <see cref="IAuditTrail"/> (interface re-implementation: every member not
/// declared here still maps to the base class). A wrapper implementing <see cref="IPersistentState"/> is impossible
/// outside DotNext: <see cref="IPersistentState.ConfigurationStorage"/> has an <c>internal</c> setter.
/// </para>
/// <para>
/// <see cref="WriteAheadLog.FlushAsync(CancellationToken)"/> and the flushing path of <c>CommitAsync</c> wait on a
/// single-waiter event inside the log, so they must never run concurrently: both go through <see cref="flushLock"/>.
/// The leader's own appends (<c>AppendAsync(entry)</c>) are left alone: the leader flushes them in <c>CommitAsync</c>
/// before it applies them or tells anyone they are committed.
/// </para>
/// </remarks>
internal sealed class DurableWriteAheadLog(WriteAheadLog.Options options, IStateMachine stateMachine)
    : WriteAheadLog(options, stateMachine), IAuditTrail<IRaftLogEntry>, IAuditTrail
{
    // Never disposed: only WaitAsync is used, so it owns no wait handle, and an RPC may still release it while the
    // log is being disposed.
    private readonly SemaphoreSlim flushLock = new(1, 1);

    /// <summary>The follower's AppendEntries path.</summary>
    async ValueTask IAuditTrail<IRaftLogEntry>.AppendAsync<TEntry>(
        ILogEntryProducer<TEntry> entries, long startIndex, bool skipCommitted, CancellationToken token)
    {
        await AppendAsync(entries, startIndex, skipCommitted, token).ConfigureAwait(false);

        // Returns at once when nothing is left unflushed (a heartbeat).
        await FlushExclusiveAsync(token).ConfigureAwait(false);
    }

    /// <summary>A follower's InstallSnapshot path (and any append at an explicit index).</summary>
    async ValueTask IAuditTrail<IRaftLogEntry>.AppendAsync<TEntry>(TEntry entry, long startIndex, CancellationToken token)
    {
        await AppendAsync(entry, startIndex, token).ConfigureAwait(false);
        await FlushExclusiveAsync(token).ConfigureAwait(false);
    }

    async ValueTask<long> IAuditTrail.CommitAsync(long endIndex, CancellationToken token)
    {
        await flushLock.WaitAsync(token).ConfigureAwait(false);
        try
        {
            return await CommitAsync(endIndex, token).ConfigureAwait(false);
        }
        finally
        {
            flushLock.Release();
        }
    }

    /// <summary>Flushes every appended entry and writes the checkpoint (write-through) that recovery reads.</summary>
    private async Task FlushExclusiveAsync(CancellationToken token)
    {
        await flushLock.WaitAsync(token).ConfigureAwait(false);
        try
        {
            await FlushAsync(token).ConfigureAwait(false);
        }
        finally
        {
            flushLock.Release();
        }
    }
}
