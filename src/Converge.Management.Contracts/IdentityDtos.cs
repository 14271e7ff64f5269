namespace Converge.Management.Contracts;

/// <summary><c>POST /api/v1/cluster/join-tokens</c>: a single-use token for one host to join.</summary>
public sealed record CreateJoinTokenRequest
{
    /// <summary>How long the token is valid, e.g. <c>1h</c>, <c>30m</c>, <c>600s</c> (default 1 h, at most 7 days).</summary>
    public string? Ttl { get; init; }
}

public sealed record JoinTokenInfo
{
    /// <summary>The token to give <c>converge host run --join-token</c>; shown once, only its salted hash is stored.</summary>
    public required string Token { get; init; }

    public required string Id { get; init; }

    public required DateTimeOffset ExpiresAt { get; init; }

    /// <summary>SHA-256 of the cluster CA certificate, also inside the token.</summary>
    public required string CaFingerprint { get; init; }
}

/// <summary>
/// <c>POST /internal/v1/cluster/certificate</c> (host RPC port, TLS without a client certificate): a joining host sends
/// a join token and a certificate signing request for its new key.
/// </summary>
public sealed record JoinCertificateRequest
{
    public required string Token { get; init; }
    public required string HostId { get; init; }
    public required string Name { get; init; }

    /// <summary>PKCS#10 request (PEM) for the joining host's key.</summary>
    public required string Csr { get; init; }

    /// <summary>The addresses the host listens on, for the certificate's subject alternative names.</summary>
    public IReadOnlyList<string> Addresses { get; init; } = [];
}

public sealed record JoinCertificateResponse
{
    /// <summary>The host's certificate (PEM), signed by the cluster CA.</summary>
    public required string Certificate { get; init; }

    /// <summary>The cluster CA certificate (PEM).</summary>
    public required string CaCertificate { get; init; }
}

/// <summary><c>POST /api/v1/hosts/{name}/revoke</c>: the host's certificates are revoked; it can no longer reach a cluster port.</summary>
public sealed record RevokeHostInfo
{
    public required string Host { get; init; }

    /// <summary>Serial numbers revoked by this call (all the host's certificates).</summary>
    public required IReadOnlyList<string> RevokedSerials { get; init; }
}
