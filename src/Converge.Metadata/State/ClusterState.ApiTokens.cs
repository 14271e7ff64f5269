using System.Collections.Immutable;

namespace Converge.Metadata;

/// <summary>Management API tokens in the replicated state: salted hashes and roles, never secrets.</summary>
public sealed partial record ClusterState
{
    /// <summary>Tokens by id.</summary>
    public ImmutableSortedDictionary<string, ApiTokenRecord> ApiTokens { get; init; } = EmptyMap<ApiTokenRecord>();

    /// <summary>
    /// The tokens hosts check: <see cref="ApiTokens"/>, plus the unsalted admin token hash of a cluster founded before
    /// salted tokens (<see cref="ClusterInfo.AdminTokenHash"/>, listed as <see cref="ApiTokenRoles.LegacyAdminId"/>)
    /// so that such a cluster keeps its token across the upgrade until it is rotated.
    /// </summary>
    public IReadOnlyList<ApiTokenRecord> AllApiTokens()
    {
        if (Cluster?.AdminTokenHash is not { } legacy)
        {
            return [.. ApiTokens.Values];
        }

        return [new ApiTokenRecord(ApiTokenRoles.LegacyAdminId, "admin", ApiTokenRoles.Admin, string.Empty, legacy, Cluster.CreatedAt), .. ApiTokens.Values];
    }

    /// <summary>
    /// The founder's admin token, given to <see cref="InitializeCluster"/> as an unsalted SHA-256, kept salted: the
    /// command id (random) is the salt, so every replica computes the same record.
    /// </summary>
    private ImmutableSortedDictionary<string, ApiTokenRecord> FounderToken(InitializeCluster c)
    {
        if (c.AdminTokenHash is null)
        {
            return ApiTokens;
        }

        var salt = c.CommandId.ToString("N");
        var hash = ApiTokenHashing.SaltUnsalted(salt, c.AdminTokenHash);
        if (hash is null)
        {
            return ApiTokens;
        }

        var id = salt[..12];
        return ApiTokens.SetItem(id, new ApiTokenRecord(id, "admin", ApiTokenRoles.Admin, salt, hash, c.CreatedAt));
    }

    private (ClusterState, CommandResult) ApplyCreateApiToken(CreateApiToken c)
    {
        if (c.Token is null)
        {
            return Refuse("the command has no token");
        }

        if (ApiTokenRules.CheckCreate(AllApiTokens(), c.Token, c.Replaces) is { } error)
        {
            return Refuse(error);
        }

        var state = c.Replaces is null ? this : Revoked(c.Replaces);
        return (state with { ApiTokens = state.ApiTokens.SetItem(c.Token.Id, c.Token) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyRevokeApiToken(RevokeApiToken c)
    {
        if (ApiTokenRules.CheckRevoke(AllApiTokens(), c.TokenId) is { } error)
        {
            return Refuse(error);
        }

        return (Revoked(c.TokenId), CommandResult.Ok());
    }

    private ClusterState Revoked(string id) => id == ApiTokenRoles.LegacyAdminId && Cluster is not null
        ? this with { Cluster = Cluster with { AdminTokenHash = null } }
        : this with { ApiTokens = ApiTokens.Remove(id) };
}
