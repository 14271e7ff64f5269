namespace Converge.Management.Contracts;

/// <summary>A management API token as listed: never its secret, hash or salt.</summary>
public sealed record ApiTokenInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }

    /// <summary><c>admin</c> or <c>read-only</c>.</summary>
    public required string Role { get; init; }

    public DateTimeOffset CreatedAt { get; init; }
}

/// <summary><c>POST /api/v1/tokens</c>.</summary>
public sealed record CreateApiTokenRequest
{
    public string? Name { get; init; }

    /// <summary><c>admin</c> or <c>read-only</c>.</summary>
    public string? Role { get; init; }
}

/// <summary>A token just made (created or rotated): the only answer that ever carries its <see cref="Token"/> secret.</summary>
public sealed record CreatedApiTokenInfo
{
    public required ApiTokenInfo Info { get; init; }

    /// <summary>The secret to send as <c>Authorization: Bearer TOKEN</c>; shown once, kept nowhere by the hosts.</summary>
    public required string Token { get; init; }

    /// <summary>After a rotation: the id of the token revoked.</summary>
    public string? Revoked { get; init; }
}
