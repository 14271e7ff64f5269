namespace Converge.Metadata;

/// <summary>Records a join token: only its salted hash (<see cref="JoinTokenRecord"/>). The secret is never stored.</summary>
public sealed record CreateJoinToken(Guid CommandId, string TokenId, string Salt, string Hash, DateTimeOffset CreatedAt, DateTimeOffset ExpiresAt)
    : MetadataCommand(CommandId);

/// <summary>
/// Uses a join token once, atomically: refused if it is unknown, used or expired at <see cref="Now"/>. The issuing
/// voter checked the secret against the hash before proposing; the certificate it signed is recorded as issued to
/// <see cref="HostId"/>.
/// </summary>
public sealed record ConsumeJoinToken(Guid CommandId, string TokenId, string HostId, string HostName, string CertificateSerial, DateTimeOffset Now)
    : MetadataCommand(CommandId);

/// <summary>Records a certificate issued without a token (the founder's own).</summary>
public sealed record RecordCertificate(Guid CommandId, string HostId, string HostName, string CertificateSerial, DateTimeOffset IssuedAt)
    : MetadataCommand(CommandId);

/// <summary>Revokes every certificate issued to a host: cluster links refuse them from then on.</summary>
public sealed record RevokeHostCertificates(Guid CommandId, string HostId, DateTimeOffset At, string Reason)
    : MetadataCommand(CommandId);
