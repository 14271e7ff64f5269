namespace Converge.Metadata;

/// <summary>
/// What applying a command did. A refused command changed nothing; <see cref="Error"/> says why.
/// </summary>
/// <param name="Index">Raft index the command was applied at (0 when applied outside Raft, e.g. in unit tests).</param>
/// <param name="Generation">The virtual disk's configuration generation after the command, for commands on one.</param>
/// <param name="Lease">The lease after <see cref="AcquireLease"/>.</param>
public sealed record CommandResult(
    bool Succeeded, string? Error = null, long Index = 0, long? Generation = null, CoordinatorLease? Lease = null)
{
    public static CommandResult Ok(long? generation = null, CoordinatorLease? lease = null) =>
        new(true, null, 0, generation, lease);

    public static CommandResult Refused(string error) => new(false, error);
}
