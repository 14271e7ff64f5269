namespace Converge.Metadata;

/// <summary>What a management API token may do: <see cref="Admin"/> everything, <see cref="ReadOnly"/> only reads.</summary>
public static class ApiTokenRoles
{
    public const string Admin = "admin";
    public const string ReadOnly = "read-only";

    /// <summary>The id under which the unsalted hash of a cluster founded before salted tokens is listed (and revoked).</summary>
    public const string LegacyAdminId = "legacy-admin";

    public static bool IsValid(string? role) => role is Admin or ReadOnly;
}
