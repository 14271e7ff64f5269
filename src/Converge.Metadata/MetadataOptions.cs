using System.Net;
using Microsoft.Extensions.Logging;

namespace Converge.Metadata;

/// <summary>How one host runs its Raft member of the metadata service.</summary>
public sealed record MetadataOptions
{
    /// <summary>Directory for the write-ahead log, snapshots and member list (created if missing).</summary>
    public required string DataDirectory { get; init; }

    /// <summary>The Raft listener; also this member's address in the member list, so it must be reachable by the others.</summary>
    public required IPEndPoint RaftEndPoint { get; init; }

    /// <summary>
    /// True only on the very first member of a new cluster: with an empty member list it makes itself the only member
    /// and leader. A joining member starts with false and waits to be added by the leader (<see cref="Raft.RaftMetadataService.AddVoterAsync"/>).
    /// Ignored once the member list on disk is not empty.
    /// </summary>
    public bool ColdStart { get; init; }

    public TimeSpan LowerElectionTimeout { get; init; } = TimeSpan.FromMilliseconds(300);

    public TimeSpan UpperElectionTimeout { get; init; } = TimeSpan.FromMilliseconds(600);

    /// <summary>Applied entries between two snapshots of the whole state.</summary>
    public int SnapshotInterval { get; init; } = 1000;

    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>
    /// Mutual TLS of the Raft transport: this member's certificate (server and client side) and the validation of the
    /// other member's certificate. Null: plain TCP (in-process tests only; hosts always give it).
    /// </summary>
    public RaftTls? Tls { get; init; }

    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>
    /// True (always, outside measurements): a follower flushes appended entries before it acknowledges them. False
    /// restores DotNext's default, where a follower flushes only at commit; kept to measure the difference.
    /// </summary>
    internal bool FlushFollowerAppends { get; init; } = true;

    /// <summary>Fails with a message naming the bad setting.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(DataDirectory))
        {
            throw new ArgumentException("metadata data directory is empty", nameof(DataDirectory));
        }

        ArgumentNullException.ThrowIfNull(RaftEndPoint);
        if (RaftEndPoint.Port == 0)
        {
            throw new ArgumentException("the Raft endpoint needs a fixed port: it is this member's address in the member list", nameof(RaftEndPoint));
        }

        if (RaftEndPoint.Address.Equals(IPAddress.Any) || RaftEndPoint.Address.Equals(IPAddress.IPv6Any))
        {
            throw new ArgumentException("the Raft endpoint must be an address other members can reach, not a wildcard", nameof(RaftEndPoint));
        }

        if (LowerElectionTimeout <= TimeSpan.Zero || UpperElectionTimeout <= LowerElectionTimeout)
        {
            throw new ArgumentException(
                $"election timeouts must satisfy 0 < lower < upper; got {LowerElectionTimeout.TotalMilliseconds} ms and {UpperElectionTimeout.TotalMilliseconds} ms",
                nameof(LowerElectionTimeout));
        }

        if (SnapshotInterval < 1)
        {
            throw new ArgumentException($"snapshot interval must be at least 1; got {SnapshotInterval}", nameof(SnapshotInterval));
        }
    }
}
