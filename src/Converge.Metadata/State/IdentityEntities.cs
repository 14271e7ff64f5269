namespace Converge.Metadata;

/// <summary>A join token's record: salted SHA-256 of its secret; <see cref="UsedBy"/> set once it was used.</summary>
public sealed record JoinTokenRecord(string TokenId, string Salt, string Hash, DateTimeOffset CreatedAt, DateTimeOffset ExpiresAt, string? UsedBy = null);

/// <summary>A host certificate the cluster CA signed; <see cref="RevokedAt"/> set once revoked.</summary>
/// <param name="Serial">Serial number, upper-case hex as <c>X509Certificate2.SerialNumber</c> formats it.</param>
public sealed record IssuedCertificate(string Serial, string HostId, string HostName, DateTimeOffset IssuedAt, DateTimeOffset? RevokedAt = null, string? RevokedReason = null);
