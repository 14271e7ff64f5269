using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Converge.TestKit;

/// <summary>
/// A throwaway X.509 authority (ECDSA P-256) for TLS tests, and the PEM files in the layout qemu's
/// <c>tls-creds-x509</c> and libnbd's <c>tls-certificates=DIR</c> read: <c>ca-cert.pem</c>, <c>server-cert.pem</c> /
/// <c>server-key.pem</c>, <c>client-cert.pem</c> / <c>client-key.pem</c>.
/// </summary>
public sealed class TestCertificates : IDisposable
{
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");

    private TestCertificates(X509Certificate2 authority)
    {
        Authority = authority;
    }

    /// <summary>The CA certificate, with its private key.</summary>
    public X509Certificate2 Authority { get; }

    public static TestCertificates CreateAuthority(string commonName = "Converge test CA")
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        return new TestCertificates(request.CreateSelfSigned(now.AddHours(-1), now.AddDays(2)));
    }

    /// <summary>A server certificate for 127.0.0.1 and localhost, with its key.</summary>
    public X509Certificate2 IssueServer(string commonName = "localhost") => Issue(commonName, ServerAuth, server: true);

    /// <summary>A client certificate whose subject CN is <paramref name="commonName"/>, with its key.</summary>
    public X509Certificate2 IssueClient(string commonName) => Issue(commonName, ClientAuth, server: false);

    /// <summary>Writes <c>ca-cert.pem</c>, <c>server-cert.pem</c>, <c>server-key.pem</c> into <paramref name="directory"/>.</summary>
    public void WriteServerFiles(string directory, string commonName = "localhost")
    {
        Directory.CreateDirectory(directory);
        WritePem(Path.Combine(directory, "ca-cert.pem"), Authority.ExportCertificatePem());
        WritePair(IssueServer(commonName), Path.Combine(directory, "server-cert.pem"), Path.Combine(directory, "server-key.pem"));
    }

    /// <summary>
    /// Writes a client credentials directory: <c>ca-cert.pem</c> (this authority, which the client trusts for the
    /// server), and, unless <paramref name="clientCommonName"/> is null, <c>client-cert.pem</c>/<c>client-key.pem</c>
    /// issued by <paramref name="clientIssuer"/> (default: this authority).
    /// </summary>
    public string WriteClientDirectory(string directory, string? clientCommonName, TestCertificates? clientIssuer = null)
    {
        Directory.CreateDirectory(directory);
        WritePem(Path.Combine(directory, "ca-cert.pem"), Authority.ExportCertificatePem());
        if (clientCommonName is not null)
        {
            WritePair(
                (clientIssuer ?? this).IssueClient(clientCommonName),
                Path.Combine(directory, "client-cert.pem"),
                Path.Combine(directory, "client-key.pem"));
        }

        return directory;
    }

    public void Dispose() => Authority.Dispose();

    private X509Certificate2 Issue(string commonName, Oid purpose, bool server)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}, O=Converge tests", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([purpose], false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Authority, true, false));
        if (server)
        {
            var names = new SubjectAlternativeNameBuilder();
            names.AddIpAddress(IPAddress.Loopback);
            names.AddDnsName("localhost");
            request.CertificateExtensions.Add(names.Build());
        }

        var serial = new byte[16];
        RandomNumberGenerator.Fill(serial);
        serial[0] &= 0x7f;
        var now = DateTimeOffset.UtcNow;
        using var certificate = request.Create(Authority, now.AddHours(-1), now.AddDays(1), serial);
        return certificate.CopyWithPrivateKey(key);
    }

    private static void WritePair(X509Certificate2 certificate, string certificatePath, string keyPath)
    {
        using (certificate)
        {
            WritePem(certificatePath, certificate.ExportCertificatePem());
            using var key = certificate.GetECDsaPrivateKey()!;
            WritePem(keyPath, key.ExportPkcs8PrivateKeyPem());
        }
    }

    private static void WritePem(string path, string pem)
    {
        File.WriteAllText(path, pem + "\n");
        if (!OperatingSystem.IsWindows())
        {
            // gnutls and qemu do not insist, but key files should not be readable by others.
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }
}
