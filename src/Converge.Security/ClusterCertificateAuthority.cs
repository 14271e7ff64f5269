using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Security;

/// <summary>
/// The cluster CA: an ECDSA P-256 key and a self-signed certificate. It signs every host certificate. The key lives
/// only on hosts that are Raft voters (docs/security/identity.md).
/// </summary>
public sealed class ClusterCertificateAuthority : IDisposable
{
    public static readonly TimeSpan CaLifetime = TimeSpan.FromDays(3650);
    public static readonly TimeSpan HostCertificateLifetime = TimeSpan.FromDays(825);

    private readonly ECDsa key;

    private ClusterCertificateAuthority(X509Certificate2 certificate, ECDsa key)
    {
        Certificate = certificate;
        this.key = key;
    }

    /// <summary>The CA certificate (public part only).</summary>
    public X509Certificate2 Certificate { get; }

    public string Fingerprint => CertificateFingerprint.Of(Certificate);

    public static ClusterCertificateAuthority Create(string clusterName, DateTimeOffset now)
    {
        var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN=converge cluster CA {clusterName}, O=converge", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        using var selfSigned = request.CreateSelfSigned(now.AddMinutes(-5), now + CaLifetime);
        return new ClusterCertificateAuthority(X509CertificateLoader.LoadCertificate(selfSigned.RawData), key);
    }

    public static ClusterCertificateAuthority FromPem(string certificatePem, string keyPem)
    {
        var certificate = X509Certificate2.CreateFromPem(certificatePem);
        var key = ECDsa.Create();
        key.ImportFromPem(keyPem);
        return new ClusterCertificateAuthority(certificate, key);
    }

    public string KeyPem() => key.ExportPkcs8PrivateKeyPem();

    /// <summary>
    /// Signs a host certificate for the public key in <paramref name="csrPem"/> (a PKCS#10 request). The names in the
    /// certificate are the ones the CA decides (the host's name and addresses), not the ones the request asks for.
    /// </summary>
    /// <exception cref="ArgumentException">The request is not a valid signed PKCS#10 request for an ECDSA or RSA key.</exception>
    public X509Certificate2 SignHostCertificate(string csrPem, string hostName, IEnumerable<IPAddress> addresses, DateTimeOffset now)
    {
        CertificateRequest request;
        try
        {
            request = CertificateRequest.LoadSigningRequestPem(csrPem, HashAlgorithmName.SHA256, CertificateRequestLoadOptions.Default);
        }
        catch (CryptographicException e)
        {
            throw new ArgumentException($"not a valid certificate signing request: {e.Message}", nameof(csrPem), e);
        }

        var signed = new CertificateRequest(new X500DistinguishedName($"CN={hostName}, O=converge"), request.PublicKey, HashAlgorithmName.SHA256);
        signed.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        signed.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, true));
        signed.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(
            [Oid.FromOidValue("1.3.6.1.5.5.7.3.1", OidGroup.EnhancedKeyUsage), Oid.FromOidValue("1.3.6.1.5.5.7.3.2", OidGroup.EnhancedKeyUsage)], false));
        signed.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(signed.PublicKey, false));
        signed.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(Certificate, true, false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(hostName);
        foreach (var address in addresses.Append(IPAddress.Loopback).Distinct())
        {
            names.AddIpAddress(address);
        }

        signed.CertificateExtensions.Add(names.Build());
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f; // a positive serial number
        var notAfter = now + HostCertificateLifetime < Certificate.NotAfter ? now + HostCertificateLifetime : new DateTimeOffset(Certificate.NotAfter.ToUniversalTime());
        return signed.Create(Certificate.SubjectName, X509SignatureGenerator.CreateForECDsa(key), now.AddMinutes(-5), notAfter, serial);
    }

    public void Dispose()
    {
        key.Dispose();
        Certificate.Dispose();
    }
}
