using Converge.Metadata;

namespace Converge.Host.Management;

/// <summary>
/// Where a host keeps the management API tokens it checks: the Raft metadata in cluster mode
/// (<see cref="ClusterTokenStore"/>), a 0600 file on a standalone host (<see cref="StandaloneTokenStore"/>). Only salted
/// hashes are kept; no API returns them.
/// </summary>
internal abstract class ApiTokenStore
{
    /// <summary>False while a cluster host has no cluster metadata yet: no token can be checked.</summary>
    public abstract bool Ready { get; }

    public abstract IReadOnlyList<ApiTokenRecord> Tokens { get; }

    /// <summary>Adds <paramref name="token"/>, revoking <paramref name="replaces"/> in the same step when given.</summary>
    /// <exception cref="HostOperationException">Refused (unknown id, duplicate name...); nothing changed.</exception>
    public abstract Task AddAsync(ApiTokenRecord token, string? replaces, CancellationToken cancellationToken);

    /// <exception cref="HostOperationException">No such token; nothing changed.</exception>
    public abstract Task RevokeAsync(string id, CancellationToken cancellationToken);

    /// <summary>A new token: its record (salted hash) and its secret, which only the caller ever sees.</summary>
    public static (ApiTokenRecord Record, string Secret) NewToken(string name, string role, DateTimeOffset now)
    {
        var secret = AdminToken.Create();
        var salt = ApiTokenHashing.NewSalt();
        return (new ApiTokenRecord(ApiTokenHashing.NewId(), name, role, salt, ApiTokenHashing.Hash(salt, secret), now), secret);
    }
}
