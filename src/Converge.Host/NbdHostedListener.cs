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
}
