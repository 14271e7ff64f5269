using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Cli;

/// <summary><c>--ca FILE</c>: an https:// API whose certificate chains to a certificate in FILE (PEM) is trusted, as are those the system trusts.</summary>
internal static class TrustedCa
{
    public static RemoteCertificateValidationCallback Validator(string caFile)
    {
        X509Certificate2Collection roots = [];
        try
        {
            roots.ImportFromPemFile(caFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            throw new UsageException($"--ca {caFile}: cannot read a PEM certificate ({e.Message})");
        }

        if (roots.Count == 0)
        {
            throw new UsageException($"--ca {caFile}: no PEM certificate in the file");
        }

        return (_, certificate, chain, errors) =>
        {
            if (errors == SslPolicyErrors.None)
            {
                return true;
            }

            // The name must still match; only the trust anchor is ours.
            if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
            {
                return false;
            }

            using var custom = new X509Chain();
            custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            custom.ChainPolicy.CustomTrustStore.AddRange(roots);
            custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            if (chain is not null)
            {
                foreach (var element in chain.ChainElements.Skip(1))
                {
                    custom.ChainPolicy.ExtraStore.Add(element.Certificate);
                }
            }

            return custom.Build(certificate as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(certificate.GetRawCertData()));
        };
    }
}
