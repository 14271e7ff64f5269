namespace Converge.Metadata;

/// <summary>
/// Adds a management API token (its salted hash only). With <see cref="Replaces"/>, revokes that token in the same
/// step: an admin token's rotation, so there is never a moment with both or neither.
/// </summary>
public sealed record CreateApiToken(Guid CommandId, ApiTokenRecord Token, string? Replaces = null)
    : MetadataCommand(CommandId);

/// <summary>Revokes a management API token by id; it stops working on every host as soon as they apply this.</summary>
public sealed record RevokeApiToken(Guid CommandId, string TokenId)
    : MetadataCommand(CommandId);
