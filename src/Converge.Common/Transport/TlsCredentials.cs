using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Common.Transport;

/// <summary>
/// X.509 material for the raw-socket listeners (NBD, peer) from PEM files, and the TLS options built from it:
/// TLS 1.2 or 1.3 only, client certificates checked against the given authorities alone (not the system store).
/// </summary>
public static class TlsCredentials
{
    /// <summary>The TLS versions offered: 1.3, and 1.2 for older clients (the NBD spec requires 1.2).</summary>
    public const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;

    /// <summary>
    /// Loads a certificate and its private key from PEM files; further certificates in <paramref name="certificatePath"/>
    /// (intermediates) are sent with it.
    /// </summary>
    /// <exception cref="TlsConfigurationException">A file is missing or is not a PEM certificate/key pair.</exception>
    public static (X509Certificate2 Certificate, X509Certificate2Collection Chain) LoadCertificate(string certificatePath, string keyPath)
    {
        try
        {
            var certificate = X509Certificate2.CreateFromPemFile(certificatePath, keyPath);
            var all = new X509Certificate2Collection();
            all.ImportFromPemFile(certificatePath);
            var chain = new X509Certificate2Collection();
            foreach (var extra in all)
            {
                if (!string.Equals(extra.Thumbprint, certificate.Thumbprint, StringComparison.Ordinal))
                {
                    chain.Add(extra);
                }
            }

            return (certificate, chain);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new TlsConfigurationException($"cannot load the certificate {certificatePath} with key {keyPath}: {ex.Message}", ex);
        }
    }

    /// <summary>Loads every certificate of a PEM file (trusted authorities).</summary>
    /// <exception cref="TlsConfigurationException">The file is missing or holds no certificate.</exception>
    public static X509Certificate2Collection LoadAuthorities(string path)
    {
        var authorities = new X509Certificate2Collection();
        try
        {
            authorities.ImportFromPemFile(path);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new TlsConfigurationException($"cannot load the CA certificates in {path}: {ex.Message}", ex);
        }

        return authorities.Count > 0 ? authorities : throw new TlsConfigurationException($"{path} holds no PEM certificate");
    }

    /// <summary>
    /// A chain policy that trusts only <paramref name="authorities"/> (no system roots, no revocation fetch: the
    /// listeners must not reach out to the network during a handshake) and, when given, requires
    /// <paramref name="purpose"/> in the certificate's extended key usage (when it has one).
    /// </summary>
    public static X509ChainPolicy ChainPolicy(X509Certificate2Collection authorities, Oid? purpose)
    {
        ArgumentNullException.ThrowIfNull(authorities);
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
            DisableCertificateDownloads = true,
        };
        policy.CustomTrustStore.AddRange(authorities);
        if (purpose is not null)
        {
            policy.ApplicationPolicy.Add(purpose);
        }

        return policy;
    }

    /// <summary>
    /// Server options: this certificate; with <paramref name="clientAuthorities"/>, a client certificate is required and
    /// must chain to one of them (the authorities are also named in the handshake, so a client holding several
    /// certificates picks the right one); without, no client certificate is asked for.
    /// </summary>
    public static SslServerAuthenticationOptions ServerOptions(
        X509Certificate2 certificate, X509Certificate2Collection? chain, X509Certificate2Collection? clientAuthorities)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        var trust = clientAuthorities is null ? null : SslCertificateTrust.CreateForX509Collection(clientAuthorities, sendTrustInHandshake: true);
        return new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(certificate, chain, offline: true, trust),
            EnabledSslProtocols = Protocols,
            ClientCertificateRequired = clientAuthorities is not null,
            CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            CertificateChainPolicy = clientAuthorities is null ? null : ChainPolicy(clientAuthorities, ClientAuthentication),
            CipherSuitesPolicy = CipherSuites,
        };
    }

    /// <summary>
    /// AEAD suites only, AES-128-GCM first: with the server's preference it is what clients get (gnutls, which libnbd and
    /// qemu use, would pick AES-256-GCM), and it costs about a third less CPU per byte on the data path.
    /// </summary>
    public static CipherSuitesPolicy? CipherSuites { get; } = OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()
        ? new CipherSuitesPolicy(
        [
            TlsCipherSuite.TLS_AES_128_GCM_SHA256,
            TlsCipherSuite.TLS_AES_256_GCM_SHA384,
            TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TlsCipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ])
        : null;

    /// <summary>Extended key usage "TLS client authentication".</summary>
    public static Oid ClientAuthentication => new("1.3.6.1.5.5.7.3.2");

    /// <summary>Extended key usage "TLS server authentication".</summary>
    public static Oid ServerAuthentication => new("1.3.6.1.5.5.7.3.1");

    /// <summary>The subject's common name (CN), or null when the subject has none.</summary>
    public static string? CommonName(X509Certificate2? certificate)
    {
        if (certificate is null)
        {
            return null;
        }

        foreach (var rdn in certificate.SubjectName.EnumerateRelativeDistinguishedNames())
        {
            if (!rdn.HasMultipleElements && rdn.GetSingleElementType().Value == "2.5.4.3")
            {
                return rdn.GetSingleElementValue();
            }
        }

        return null;
    }
}
