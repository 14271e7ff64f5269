using System.Collections.Immutable;

namespace Converge.Metadata;

/// <summary>Cluster identity: join tokens and the host certificates the cluster CA issued (and revoked).</summary>
public sealed partial record ClusterState
{
    /// <summary>Join tokens by id (kept after use or expiry; a used or expired one is refused).</summary>
    public ImmutableSortedDictionary<string, JoinTokenRecord> JoinTokens { get; init; } = EmptyMap<JoinTokenRecord>();

    /// <summary>Host certificates by serial.</summary>
    public ImmutableSortedDictionary<string, IssuedCertificate> Certificates { get; init; } = EmptyMap<IssuedCertificate>();

    /// <summary>Whether the certificate with this serial was revoked.</summary>
    public bool IsRevoked(string serial) => Certificates.TryGetValue(serial, out var c) && c.RevokedAt is not null;

    private (ClusterState, CommandResult) ApplyCreateJoinToken(CreateJoinToken c)
    {
        if (string.IsNullOrEmpty(c.TokenId) || string.IsNullOrEmpty(c.Salt) || string.IsNullOrEmpty(c.Hash) || c.ExpiresAt <= c.CreatedAt)
        {
            return Refuse("a join token needs an id, a salt, a hash and an expiry after its creation");
        }

        if (JoinTokens.ContainsKey(c.TokenId))
        {
            return Refuse($"join token {c.TokenId} exists");
        }

        // Expired tokens older than a day are dropped here so the map does not grow without bound.
        var kept = JoinTokens.Where(t => t.Value.ExpiresAt > c.CreatedAt.AddDays(-1)).ToImmutableSortedDictionary(StringComparer.Ordinal);
        return (this with { JoinTokens = kept.Add(c.TokenId, new JoinTokenRecord(c.TokenId, c.Salt, c.Hash, c.CreatedAt, c.ExpiresAt)) }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyConsumeJoinToken(ConsumeJoinToken c)
    {
        if (!JoinTokens.TryGetValue(c.TokenId, out var token))
        {
            return Refuse("the join token is not known to this cluster");
        }

        if (token.UsedBy is not null)
        {
            return Refuse("the join token was already used; create another with 'converge cluster join-token create'");
        }

        if (c.Now >= token.ExpiresAt)
        {
            return Refuse($"the join token expired at {token.ExpiresAt:u}; create another with 'converge cluster join-token create'");
        }

        if (Certificates.ContainsKey(c.CertificateSerial))
        {
            return Refuse($"certificate serial {c.CertificateSerial} was issued before");
        }

        return (this with
        {
            JoinTokens = JoinTokens.SetItem(c.TokenId, token with { UsedBy = c.HostName }),
            Certificates = Certificates.Add(c.CertificateSerial, new IssuedCertificate(c.CertificateSerial, c.HostId, c.HostName, c.Now)),
        }, CommandResult.Ok());
    }

    private (ClusterState, CommandResult) ApplyRecordCertificate(RecordCertificate c) =>
        Certificates.ContainsKey(c.CertificateSerial)
            ? Refuse($"certificate serial {c.CertificateSerial} was issued before")
            : (this with { Certificates = Certificates.Add(c.CertificateSerial, new IssuedCertificate(c.CertificateSerial, c.HostId, c.HostName, c.IssuedAt)) }, CommandResult.Ok());

    private (ClusterState, CommandResult) ApplyRevokeHostCertificates(RevokeHostCertificates c) =>
        Certificates.Values.Any(x => x.HostId == c.HostId)
            ? (RevokeCertificatesOf(c.HostId, c.At, c.Reason), CommandResult.Ok())
            : Refuse($"no certificate was issued to host {c.HostId}");

    private ClusterState RevokeCertificatesOf(string hostId, DateTimeOffset at, string reason)
    {
        var certificates = Certificates;
        foreach (var certificate in Certificates.Values.Where(x => x.HostId == hostId && x.RevokedAt is null))
        {
            certificates = certificates.SetItem(certificate.Serial, certificate with { RevokedAt = at, RevokedReason = reason });
        }

        return this with { Certificates = certificates };
    }
}
