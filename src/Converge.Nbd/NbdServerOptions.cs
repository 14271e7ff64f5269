using System.Net.Security;
using Converge.Common;

namespace Converge.Nbd;

/// <summary>Per-server NBD settings; immutable once the server starts.</summary>
public sealed class NbdServerOptions
{
    /// <summary>
    /// Largest READ or WRITE payload accepted, advertised as the maximum payload size in
    /// <c>NBD_INFO_BLOCK_SIZE</c>. Between 4096 and <see cref="BlockGeometry.MaxRequestBytes"/>.
    /// </summary>
    public int MaxRequestBytes { get; init; } = BlockGeometry.MaxRequestBytes;

    /// <summary>
    /// Time a client has to finish option haggling, including a TLS handshake, before the connection is dropped (each
    /// connection has its own session task, so a slow handshake holds only its own connection).
    /// </summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A connection in the transmission phase that receives nothing for this long is closed (between 1 and 1.25 times
    /// this). Infinite (the default): never; NBD clients such as the kernel's keep idle connections for hours.
    /// </summary>
    public TimeSpan IdleTimeout { get; init; } = Timeout.InfiniteTimeSpan;

    /// <summary>NBD_OPT_STARTTLS: off, offered (on) or required before any other option (require).</summary>
    public NbdTlsMode TlsMode { get; init; } = NbdTlsMode.Off;

    /// <summary>
    /// The server certificate and client-certificate policy for STARTTLS (see <c>TlsCredentials.ServerOptions</c>);
    /// required unless <see cref="TlsMode"/> is off. With <c>ClientCertificateRequired</c>, a client's certificate
    /// subject CN becomes its identity for <see cref="Authorizer"/>.
    /// </summary>
    public SslServerAuthenticationOptions? Tls { get; init; }

    /// <summary>Per-export access lists by client identity; null: every client the TLS mode admits may use every export.</summary>
    public INbdExportAuthorizer? Authorizer { get; init; }

    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Requests a single connection may have in flight before the server stops reading from it.</summary>
    public int MaxInFlightRequests { get; init; } = 64;

    /// <summary>Payload bytes (READ and WRITE) a single connection may have in flight before the server stops reading.</summary>
    public long MaxInFlightBytes { get; init; } = 256L * 1024 * 1024;

    /// <summary>
    /// READ requests of at least this many bytes run on the thread pool instead of the connection's reader, so one
    /// connection's large reads use more than one core (0: never). WRITEs always start on the reader, which holds their
    /// just-received payload in its core's cache (docs/io-path.md). <c>CONVERGE_NBD_OFFLOAD_BYTES</c> in the
    /// environment overrides the default (for A/B benchmarks).
    /// </summary>
    public int OffloadBytes { get; init; } =
        int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_NBD_OFFLOAD_BYTES"), out var bytes) ? bytes : 256 * 1024;

    /// <summary>Throws <see cref="ArgumentException"/> with an operator-readable message when a value is out of range.</summary>
    public void Validate()
    {
        if (MaxRequestBytes < BlockGeometry.BlockSize || MaxRequestBytes > BlockGeometry.MaxRequestBytes)
        {
            throw new ArgumentException(
                $"NBD MaxRequestBytes is {MaxRequestBytes}; it must be between {BlockGeometry.BlockSize} and {BlockGeometry.MaxRequestBytes}");
        }

        if (HandshakeTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException($"NBD HandshakeTimeout is {HandshakeTimeout}; it must be positive");
        }

        if (MaxInFlightRequests < 1)
        {
            throw new ArgumentException($"NBD MaxInFlightRequests is {MaxInFlightRequests}; it must be at least 1");
        }

        if (MaxInFlightBytes < MaxRequestBytes)
        {
            throw new ArgumentException(
                $"NBD MaxInFlightBytes is {MaxInFlightBytes}; it must be at least MaxRequestBytes ({MaxRequestBytes})");
        }

        if (IdleTimeout <= TimeSpan.Zero && IdleTimeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException($"NBD IdleTimeout is {IdleTimeout}; it must be positive (or infinite)");
        }

        if (TlsMode != NbdTlsMode.Off && Tls is null)
        {
            throw new ArgumentException($"NBD TLS mode '{TlsMode.ToString().ToLowerInvariant()}' needs a server certificate");
        }

        ArgumentNullException.ThrowIfNull(Time);
    }
}
