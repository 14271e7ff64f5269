using System.Net.Security;
using Converge.Common.Transport;
using Converge.Host.Cluster;
using Converge.Nbd;
using Converge.Security;

namespace Converge.Host;

/// <summary>Starts and stops the <see cref="NbdListener"/> with the app (Converge.Nbd itself has no hosting dependency).</summary>
internal sealed class NbdHostedListener(NbdListener listener) : IHostedService, IAsyncDisposable
{
    /// <exception cref="IOException">The NBD port cannot be bound.</exception>
    public Task StartAsync(CancellationToken cancellationToken) => listener.StartAsync(cancellationToken);

    /// <summary>Stops reading requests, answers the ones in flight; cuts what is left when <paramref name="cancellationToken"/> (the shutdown timeout) fires.</summary>
    public Task StopAsync(CancellationToken cancellationToken) => listener.StopAsync(cancellationToken);

    public ValueTask DisposeAsync() => listener.DisposeAsync();

    /// <summary>The NBD server options from the host's: TLS from PEM files and the per-export access lists.</summary>
    /// <exception cref="HostStartException">A certificate, key or CA file cannot be loaded.</exception>
    /// <param name="identity">Cluster mode: this host's identity once loaded, for <see cref="HostOptions.NbdUsesClusterCertificate"/>.</param>
    public static NbdServerOptions CreateServerOptions(HostOptions options, Func<HostIdentity?> identity)
    {
        if (options.NbdTls == NbdTlsMode.Off)
        {
            return new NbdServerOptions { Time = options.Time };
        }

        if (options.NbdUsesClusterCertificate)
        {
            // Read per handshake (the certificate exists once the host founded or joined); clients need a certificate
            // from the cluster CA, or from --nbd-tls-ca when given.
            var tls = ClusterTls.ServerOptionsRequiringClusterClients(identity);
            if (options.NbdTlsCa is not null)
            {
                tls.CertificateChainPolicy = TlsCredentials.ChainPolicy(TlsCredentials.LoadAuthorities(options.NbdTlsCa), TlsCredentials.ClientAuthentication);
                tls.RemoteCertificateValidationCallback = (_, certificate, _, errors) => certificate is not null && errors == SslPolicyErrors.None;
            }

            return new NbdServerOptions
            {
                Time = options.Time,
                TlsMode = options.NbdTls,
                Tls = tls,
                Authorizer = options.NbdAllow.Count == 0 ? null : NbdExportAccessList.Parse(options.NbdAllow),
            };
        }

        try
        {
            var (certificate, chain) = TlsCredentials.LoadCertificate(options.NbdTlsCertificate!, options.NbdTlsKey!);
            var authorities = options.NbdTlsCa is null ? null : TlsCredentials.LoadAuthorities(options.NbdTlsCa);
            return new NbdServerOptions
            {
                Time = options.Time,
                TlsMode = options.NbdTls,
                Tls = TlsCredentials.ServerOptions(certificate, chain, authorities),
                Authorizer = options.NbdAllow.Count == 0 ? null : NbdExportAccessList.Parse(options.NbdAllow),
            };
        }
        catch (TlsConfigurationException e)
        {
            throw new HostStartException($"NBD TLS: {e.Message}", e);
        }
    }
}
