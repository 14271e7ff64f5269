using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Security;

/// <summary>
/// Whether the other side of a cluster link is a cluster member: its certificate chains to the cluster CA (the only
/// trust anchor; the system store is not consulted), is valid now, and its serial is not revoked. Host names are
/// not checked: the CA signs certificates only for hosts that joined with a token, and every member is as trusted
/// as every other. Use <see cref="ServerCallback"/> / <see cref="ClientCallback"/> as the
/// <c>RemoteCertificateValidationCallback</c> of <c>SslServerAuthenticationOptions</c> / <c>SslClientAuthenticationOptions</c>.
/// </summary>
public sealed class ClusterCertificateValidator(X509Certificate2 caCertificate, Func<string, bool> isRevoked)
{
    public X509Certificate2 CaCertificate => caCertificate;

    public bool Validate(X509Certificate? certificate, out string reason)
    {
        if (certificate is null)
        {
            reason = "no certificate was presented";
            return false;
        }

        using var leaf = certificate as X509Certificate2 is { } c ? X509CertificateLoader.LoadCertificate(c.RawData) : X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(caCertificate);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        if (!chain.Build(leaf))
        {
            reason = "the certificate is not signed by this cluster's CA: " +
                     string.Join(", ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).DefaultIfEmpty("untrusted"));
            return false;
        }

        if (chain.ChainElements.Count < 2 || !chain.ChainElements[^1].Certificate.RawData.AsSpan().SequenceEqual(caCertificate.RawData))
        {
            reason = "the certificate does not chain to this cluster's CA";
            return false;
        }

        if (isRevoked(leaf.SerialNumber))
        {
            reason = $"certificate {leaf.SerialNumber} ({leaf.GetNameInfo(X509NameType.SimpleName, false)}) is revoked";
            return false;
        }

        reason = string.Empty;
        return true;
    }

    /// <summary>For the server side of a link: the client must present a valid cluster certificate.</summary>
    public bool ServerCallback(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) =>
        Validate(certificate, out _);

    /// <summary>For the client side of a link: the server must present a valid cluster certificate (its name is not checked).</summary>
    public bool ClientCallback(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors) =>
        Validate(certificate, out _);
}
