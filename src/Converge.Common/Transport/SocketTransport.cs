using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;

namespace Converge.Common.Transport;

/// <summary>
/// The byte stream of one raw-socket connection (NBD, peer): the socket itself, or, after a TLS handshake, an
/// <see cref="SslStream"/> over it. Without TLS every call is the socket call the protocols made before (same
/// receive-into-caller-memory, same gather send), so the plain fast path costs one predictable branch. With TLS the
/// protocols keep their framing and buffers; only the bytes pass through the stream. One receiver and one sender may
/// run at the same time (what <see cref="SslStream"/> allows); callers already serialise their sends.
/// </summary>
public sealed class SocketTransport : IDisposable
{
    private SslStream? _tls;

    public SocketTransport(Socket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        Socket = socket;
    }

    public Socket Socket { get; }

    /// <summary>Whether a TLS handshake completed: everything after it is encrypted.</summary>
    public bool IsTls => _tls is not null;

    /// <summary>The TLS session, once authenticated (protocol version, cipher, peer certificate).</summary>
    public SslStream? Tls => _tls;

    /// <summary>The certificate the other side presented (and the validation callback accepted); null without TLS or without one.</summary>
    public X509Certificate2? RemoteCertificate => _tls?.RemoteCertificate as X509Certificate2;

    /// <summary>Receives what is available (at least one byte) into <paramref name="buffer"/>; 0 at end of stream.</summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        _tls is null ? Socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken) : _tls.ReadAsync(buffer, cancellationToken);

    /// <summary>Sends all of <paramref name="data"/>.</summary>
    public ValueTask SendAllAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        _tls is null ? SendAllRawAsync(data, cancellationToken) : _tls.WriteAsync(data, cancellationToken);

    /// <summary>
    /// Sends <c>pair[0]</c> then <c>pair[1]</c>: one gather send on the raw socket (a header and a large payload in
    /// one syscall); two writes through TLS, which frames records of at most 16 KiB either way. The caller owns
    /// <paramref name="pair"/> (reused, so the send allocates no list).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask SendPairAsync(ArraySegment<byte>[] pair, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(pair);
        if (_tls is not null)
        {
            await _tls.WriteAsync(pair[0], cancellationToken);
            await _tls.WriteAsync(pair[1], cancellationToken);
            return;
        }

        var first = pair[0].Count;
        var second = pair[1].Count;
        var sent = await Socket.SendAsync(pair, SocketFlags.None);
        if (sent < first + second)
        {
            // A short gather send: finish it piece by piece.
            if (sent < first)
            {
                await SendAllRawAsync(pair[0].AsMemory(sent), cancellationToken);
                sent = first;
            }

            await SendAllRawAsync(pair[1].AsMemory(sent - first), cancellationToken);
        }
    }

    /// <summary>
    /// Runs the server side of a TLS handshake on the socket; afterwards every receive and send goes through TLS.
    /// Bytes already read from the socket by the caller are not seen by the handshake, so call it at a protocol point
    /// where the client must wait for the server (after NBD_OPT_STARTTLS's ACK, or before the first request).
    /// </summary>
    /// <exception cref="TimeoutException">The handshake did not finish within <paramref name="timeout"/>.</exception>
    /// <exception cref="System.Security.Authentication.AuthenticationException">The handshake failed (no or a rejected certificate, no common protocol).</exception>
    public Task AuthenticateAsServerAsync(
        SslServerAuthenticationOptions options, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken) =>
        AuthenticateAsync(stream => stream.AuthenticateAsServerAsync(options, cancellationToken), timeout, time, cancellationToken);

    /// <summary>Runs the client side of a TLS handshake; see <see cref="AuthenticateAsServerAsync"/>.</summary>
    public Task AuthenticateAsClientAsync(
        SslClientAuthenticationOptions options, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken) =>
        AuthenticateAsync(stream => stream.AuthenticateAsClientAsync(options, cancellationToken), timeout, time, cancellationToken);

    /// <summary>Sends TLS close_notify (the orderly end of a TLS session); best effort, never throws.</summary>
    public async ValueTask CloseTlsAsync(TimeSpan timeout)
    {
        if (_tls is null)
        {
            return;
        }

        try
        {
            await _tls.ShutdownAsync().WaitAsync(timeout);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or InvalidOperationException or TimeoutException or NotSupportedException)
        {
        }
    }

    /// <summary>Shuts both directions of the socket down (a blocked receive returns 0 or fails). Never throws.</summary>
    public void Shutdown()
    {
        try
        {
            Socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
    }

    public void Dispose()
    {
        _tls?.Dispose();
        Socket.Dispose();
    }

    private async Task AuthenticateAsync(Func<SslStream, Task> authenticate, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        if (_tls is not null)
        {
            throw new InvalidOperationException("TLS is already established on this connection");
        }

        var stream = new SslStream(new ReadAheadSocketStream(Socket), leaveInnerStreamOpen: false);
        try
        {
            var handshake = authenticate(stream);
            try
            {
                await handshake.WaitAsync(timeout, time, cancellationToken);
            }
            catch (TimeoutException)
            {
                // Cut the socket so the handshake stops waiting for a peer that stalls mid-handshake.
                Shutdown();
                await handshake.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                throw new TimeoutException($"the TLS handshake did not finish within {timeout.TotalSeconds:0.#} s");
            }
        }
        catch
        {
            await stream.DisposeAsync();
            throw;
        }

        _tls = stream;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendAllRawAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (!data.IsEmpty)
        {
            var n = await Socket.SendAsync(data, SocketFlags.None, cancellationToken);
            data = data[n..];
        }
    }
}
