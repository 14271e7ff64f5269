using Converge.Common;

namespace Converge.Metadata;

/// <summary>The checks on token changes, shared by the Raft state machine and a standalone host's token file.</summary>
public static class ApiTokenRules
{
    /// <summary>Why <paramref name="token"/> cannot be added (revoking <paramref name="replaces"/> at the same time), or null.</summary>
    public static string? CheckCreate(IReadOnlyCollection<ApiTokenRecord> existing, ApiTokenRecord token, string? replaces)
    {
        ArgumentNullException.ThrowIfNull(existing);
        ArgumentNullException.ThrowIfNull(token);
        if (!NameRules.IsValid(token.Name, out var nameError))
        {
            return $"token {nameError}";
        }

        if (!ApiTokenRoles.IsValid(token.Role))
        {
            return $"token role '{token.Role}' is not one of {ApiTokenRoles.Admin}, {ApiTokenRoles.ReadOnly}";
        }

        if (string.IsNullOrWhiteSpace(token.Id) || string.IsNullOrWhiteSpace(token.Salt) || token.Hash.Length != 64)
        {
            return "a token needs an id, a salt and a SHA-256 hash";
        }

        if (existing.Any(t => t.Id == token.Id))
        {
            return $"token id '{token.Id}' is already used";
        }

        if (replaces is not null && CheckRevoke(existing, replaces) is { } revokeError)
        {
            return revokeError;
        }

        if (existing.FirstOrDefault(t => t.Name == token.Name && t.Id != replaces) is { } sameName)
        {
            return $"a token named '{token.Name}' already exists (id {sameName.Id}); revoke it first or pick another name";
        }

        return null;
    }

    /// <summary>Why the token cannot be revoked, or null.</summary>
    public static string? CheckRevoke(IReadOnlyCollection<ApiTokenRecord> existing, string id)
    {
        ArgumentNullException.ThrowIfNull(existing);
        return existing.Any(t => t.Id == id) ? null : $"there is no token with id '{id}' ('converge token list' shows them)";
    }
}
