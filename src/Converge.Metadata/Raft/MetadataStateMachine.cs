using System.Buffers;
using System.Text.Json;
using DotNext.IO;
using DotNext.Net.Cluster.Consensus.Raft.StateMachine;
using Microsoft.Extensions.Logging;

namespace Converge.Metadata.Raft;

/// <summary>
/// Holds the <see cref="ClusterState"/> in memory, applies committed commands with <see cref="ClusterState.Apply"/>
/// and writes a JSON snapshot every <c>snapshotInterval</c> entries.
/// </summary>
internal sealed class MetadataStateMachine(
    DirectoryInfo location, int snapshotInterval, Action<MetadataCommand, CommandResult, ClusterState> applied, ILogger logger)
    : SimpleStateMachine(location)
{
    private volatile ClusterState state = ClusterState.Empty;
    private int sinceSnapshot;

    public ClusterState Current => state;

    protected override async ValueTask RestoreAsync(FileInfo snapshotFile, CancellationToken token)
    {
        var bytes = await File.ReadAllBytesAsync(snapshotFile.FullName, token).ConfigureAwait(false);
        state = ClusterState.FromJson(bytes);
    }

    protected override ValueTask PersistAsync(IAsyncBinaryWriter writer, CancellationToken token) =>
        writer.Invoke(state.ToJson(), token);

    protected override ValueTask<bool> ApplyAsync(LogEntry entry, CancellationToken token)
    {
        var payload = entry.TryGetPayload(out var sequence) ? sequence : ReadOnlySequence<byte>.Empty;
        if (entry.IsConfiguration || payload.IsEmpty)
        {
            // Membership changes and the leader's no-op entries carry no command.
            state = state with { AppliedIndex = entry.Index };
            return ValueTask.FromResult(SnapshotDue());
        }

        MetadataCommand? command = null;
        try
        {
            var reader = new Utf8JsonReader(payload);
            command = JsonSerializer.Deserialize(ref reader, MetadataJsonContext.Default.MetadataCommand);
        }
        catch (JsonException e)
        {
            Log.UnreadableEntry(logger, entry.Index, e);
        }

        if (command is null)
        {
            state = state with { AppliedIndex = entry.Index };
            return ValueTask.FromResult(SnapshotDue());
        }

        var (next, result) = state.Apply(command);
        state = next with { AppliedIndex = entry.Index };
        applied(command, result with { Index = entry.Index }, state);
        return ValueTask.FromResult(SnapshotDue());
    }

    /// <summary>Never called concurrently (the log applies entries one at a time).</summary>
    private bool SnapshotDue()
    {
        if (++sinceSnapshot < snapshotInterval)
        {
            return false;
        }

        sinceSnapshot = 0;
        return true;
    }
}
