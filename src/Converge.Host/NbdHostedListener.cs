using Converge.Common.Transport;
using Converge.Nbd;

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
    public static NbdServerOptions CreateServerOptions(HostOptions options)
    {
        if (options.NbdTls == NbdTlsMode.Off)
        {
            return new NbdServerOptions { Time = options.Time };
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
