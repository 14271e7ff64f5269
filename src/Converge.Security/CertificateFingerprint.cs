using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Security;

/// <summary>SHA-256 over a certificate's DER bytes, lower-case hex: how the cluster CA is pinned (join tokens, metadata).</summary>
public static class CertificateFingerprint
{
    public static string Of(X509Certificate2 certificate) =>
        Convert.ToHexStringLower(SHA256.HashData(certificate.RawData));
}
