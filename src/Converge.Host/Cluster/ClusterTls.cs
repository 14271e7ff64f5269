using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using Converge.Common.Transport;
using Converge.Security;

namespace Converge.Host.Cluster;

/// <summary>Mutual TLS of host-to-host HTTP (<c>/internal/v1</c>): the clients every caller uses, and the listener's options.</summary>
internal static class ClusterTls
{
    /// <summary>
    /// TLS server name (SNI) a joining host sends: the RPC listener then does not ask for a client certificate, and the
    /// connection may only fetch the CA and exchange a join token for a certificate (<see cref="RpcEndpoints"/>).
    /// </summary>
    public const string JoinServerName = "converge-join";

    /// <summary>
    /// An HTTP client that presents this host's certificate and accepts only servers with a valid cluster certificate.
    /// The identity is read per connection (it does not exist yet when the client is made), and pooled connections are
    /// renewed every minute so a revocation reaches them too.
    /// </summary>
    public static HttpClient NewClient(Func<HostIdentity?> identity, TimeSpan timeout) => new(new SocketsHttpHandler
    {
        PooledConnectionLifetime = TimeSpan.FromMinutes(1),
        SslOptions = new SslClientAuthenticationOptions
        {
            EnabledSslProtocols = SslProtocols.Tls13 | SslProtocols.Tls12,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            LocalCertificateSelectionCallback = (_, _, _, _, _) => identity()?.Certificate!,
            RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                identity() is { } id && id.Validator.Validate(certificate, out _),
        },
    })
    {
        Timeout = timeout,
    };

    /// <summary>The RPC listener's TLS for one connection: a client certificate is required except on a join connection.</summary>
    public static SslServerAuthenticationOptions ServerOptions(HostIdentity identity, bool join) => new()
    {
        ServerCertificateContext = SslStreamCertificateContext.Create(identity.Certificate, [identity.CaCertificate], offline: true),
        EnabledSslProtocols = SslProtocols.Tls13 | SslProtocols.Tls12,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        ClientCertificateRequired = !join,

        // Refused in the handshake, before any request is read: no certificate, another CA's, or a revoked one.
        RemoteCertificateValidationCallback = join ? null : (_, certificate, _, _) => identity.Validator.Validate(certificate, out _),
    };

    /// <summary>
    /// TLS of a listener on the host certificate that requires a client certificate validated like the RPC listener's
    /// (the peer data port; NBD beyond loopback). The identity is read at each handshake: on a joining host it exists
    /// only once the join is done, after the listener was made, and its validator is replaced once the revoked list
    /// is attached.
    /// </summary>
    public static SslServerAuthenticationOptions ServerOptionsRequiringClusterClients(Func<HostIdentity?> identity) => new()
    {
        ServerCertificateSelectionCallback = (_, _) => identity()?.Certificate!,
        EnabledSslProtocols = SslProtocols.Tls13 | SslProtocols.Tls12,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        ClientCertificateRequired = true,
        RemoteCertificateValidationCallback = (_, certificate, _, _) => identity() is { } id && id.Validator.Validate(certificate, out _),
        CipherSuitesPolicy = TlsCredentials.CipherSuites,
    };

    /// <summary>A peer connection's TLS: presents this host's certificate and accepts only a valid cluster certificate.</summary>
    public static SslClientAuthenticationOptions PeerClientOptions(Func<HostIdentity?> identity) => new()
    {
        TargetHost = PeerServerName,
        EnabledSslProtocols = SslProtocols.Tls13 | SslProtocols.Tls12,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        LocalCertificateSelectionCallback = (_, _, _, _, _) => identity()?.Certificate!,
        RemoteCertificateValidationCallback = (_, certificate, _, _) => identity() is { } id && id.Validator.Validate(certificate, out _),
        CipherSuitesPolicy = TlsCredentials.CipherSuites,
    };

    /// <summary>Server name a peer client sends (hosts are addressed by IP; the name is not checked).</summary>
    public const string PeerServerName = "converge-peer";
}
