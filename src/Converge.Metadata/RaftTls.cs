using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using DotNext.Net.Security;

namespace Converge.Metadata;

/// <summary>The Raft transport's mutual TLS: <see cref="Certificate"/> on both sides, <see cref="Validate"/> for the other side's certificate.</summary>
public sealed record RaftTls(X509Certificate2 Certificate, RemoteCertificateValidationCallback Validate)
{
    internal SslOptions ToSslOptions()
    {
        var ssl = new SslOptions();
        ssl.ServerOptions.ServerCertificate = Certificate;
        ssl.ServerOptions.ClientCertificateRequired = true;
        ssl.ServerOptions.RemoteCertificateValidationCallback = Validate;
        ssl.ServerOptions.CertificateRevocationCheckMode = X509RevocationMode.NoCheck;
        ssl.ClientOptions.ClientCertificates = [Certificate];
        ssl.ClientOptions.RemoteCertificateValidationCallback = Validate;
        ssl.ClientOptions.CertificateRevocationCheckMode = X509RevocationMode.NoCheck;

        // Members are addressed by IP; the certificate is checked against the cluster CA, not a name.
        ssl.ClientOptions.TargetHost = "converge";
        return ssl;
    }
}
