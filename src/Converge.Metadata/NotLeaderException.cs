namespace Converge.Metadata;

/// <summary>A change was proposed to a member that is not the leader; send it to <see cref="LeaderRaftEndpoint"/>.</summary>
public sealed class NotLeaderException : InvalidOperationException
{
    public NotLeaderException()
        : this(null)
    {
    }

    public NotLeaderException(string? leaderRaftEndpoint)
        : base(leaderRaftEndpoint is null
            ? "this member is not the metadata leader and no leader is known (an election may be in progress); retry"
            : $"this member is not the metadata leader; the leader is {leaderRaftEndpoint}")
    {
        LeaderRaftEndpoint = leaderRaftEndpoint;
    }

    public NotLeaderException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public string? LeaderRaftEndpoint { get; init; }
}
