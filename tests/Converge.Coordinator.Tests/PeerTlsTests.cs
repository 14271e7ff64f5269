using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Converge.Common;
using Converge.Common.Transport;
using Converge.Coordinator.Peer;
using Converge.TestKit;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Coordinator.Tests;

/// <summary>
/// The peer protocol over mutual TLS (a client certificate from the cluster CA, or nothing is read), and the per
/// connection byte budget that stops the reader instead of buffering.
/// </summary>
public sealed class PeerTlsTests : IAsyncLifetime, IDisposable
{
    private readonly TestCertificates _ca = TestCertificates.CreateAuthority("cluster CA");
    private readonly TestCertificates _otherCa = TestCertificates.CreateAuthority("another cluster");
    private readonly CountingHandler _handler = new();
    private PeerListener? _listener;
    private IPEndPoint _endPoint = new(IPAddress.Loopback, 0);

    public async Task InitializeAsync()
    {
        var server = _ca.IssueServer("host-a");
        var options = TlsCredentials.ServerOptions(server, null, [_ca.Authority]);
        _listener = new PeerListener(new IPEndPoint(IPAddress.Loopback, 0), _handler, NullLogger<PeerListener>.Instance, options, TimeSpan.FromSeconds(3));
        await _listener.StartAsync(CancellationToken.None);
        _endPoint = (IPEndPoint)_listener.LocalEndPoint;
    }

    public async Task DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }
    }

    public void Dispose()
    {
        _ca.Dispose();
        _otherCa.Dispose();
    }

    [Fact]
    public async Task Client_with_a_certificate_from_the_cluster_ca_writes_and_reads()
    {
        await using var client = new PeerClient(_endPoint, TimeSpan.FromSeconds(5), ClientOptions(_ca.IssueClient("host-b")));
        var component = Guid.NewGuid();
        var data = new byte[1 << 20];
        new Random(3).NextBytes(data);
        await client.SendAsync(Request(PeerOp.Write, component, 0, data.Length), data, Memory<byte>.Empty, CancellationToken.None);

        var back = new byte[data.Length];
        var length = await client.SendAsync(Request(PeerOp.Read, component, 0, back.Length), ReadOnlyMemory<byte>.Empty, back, CancellationToken.None);
        Assert.Equal(data.Length, length);
        Assert.True(data.AsSpan().SequenceEqual(back));

        // Many small requests in flight over one TLS connection.
        await Task.WhenAll(Enumerable.Range(0, 64).Select(i =>
            client.SendAsync(Request(PeerOp.Write, component, i * 4096L, 4096), new byte[4096], Memory<byte>.Empty, CancellationToken.None).AsTask()));
        Assert.Equal(66, _handler.Calls);
    }

    [Fact]
    public async Task Clients_without_a_valid_certificate_are_refused_before_any_request_is_read()
    {
        var refused = new (string What, PeerClient Client)[]
        {
            ("no client certificate", new PeerClient(_endPoint, TimeSpan.FromSeconds(5), ClientOptions(null))),
            ("a certificate from another CA", new PeerClient(_endPoint, TimeSpan.FromSeconds(5), ClientOptions(_otherCa.IssueClient("intruder")))),
            ("plain TCP", new PeerClient(_endPoint, TimeSpan.FromSeconds(5))),
        };

        foreach (var (what, client) in refused)
        {
            await using (client)
            {
                var error = await Assert.ThrowsAsync<VolumeException>(async () =>
                    await client.SendAsync(Request(PeerOp.DeleteComponent, Guid.NewGuid(), 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None));
                Assert.True(error.Error == VolumeError.Unavailable, $"{what}: {error}");
            }
        }

        // A raw client that connects and sends nothing is cut at the handshake timeout.
        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await raw.ConnectAsync(_endPoint);
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        Assert.Equal(0, await raw.ReceiveAsync(new byte[16], deadline.Token));

        Assert.Equal(0, _handler.Calls);
    }

    [Fact]
    public void Server_tls_without_client_certificates_is_rejected()
    {
        var options = TlsCredentials.ServerOptions(_ca.IssueServer("host-a"), null, clientAuthorities: null);
        Assert.Throws<ArgumentException>(() => new PeerListener(new IPEndPoint(IPAddress.Loopback, 0), _handler, NullLogger<PeerListener>.Instance, options));
    }

    [Fact]
    public async Task Bytes_in_flight_per_connection_stay_within_the_budget_and_large_writes_complete()
    {
        var blocking = new CountingHandler { Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
        await using var listener = new PeerListener(new IPEndPoint(IPAddress.Loopback, 0), blocking, NullLogger<PeerListener>.Instance);
        await listener.StartAsync(CancellationToken.None);
        await using var client = new PeerClient(listener.LocalEndPoint, TimeSpan.FromSeconds(5));

        const int writeBytes = 4 << 20;
        const int writes = 40;
        var payload = new byte[writeBytes];
        var component = Guid.NewGuid();
        var sending = Enumerable.Range(0, writes).Select(i =>
            client.SendAsync(Request(PeerOp.Write, component, (long)i * writeBytes, writeBytes), payload, Memory<byte>.Empty, CancellationToken.None).AsTask()).ToList();

        // The handlers hold every request; the reader stops once the budget is used (without it, 40 would arrive).
        var limit = (int)(PeerSession.MaxInFlightBytes / writeBytes);
        await WaitUntilAsync(() => blocking.Calls >= limit, TimeSpan.FromSeconds(10));
        var plateau = DateTime.UtcNow + TimeSpan.FromSeconds(1);
        while (DateTime.UtcNow < plateau)
        {
            Assert.InRange(blocking.PayloadBytes, 0, PeerSession.MaxInFlightBytes);
            await Task.Delay(50);
        }

        Assert.Equal(limit, blocking.Calls);

        // Released, everything is read and answered (the client's sends did not time out meanwhile).
        blocking.Gate.SetResult();
        await Task.WhenAll(sending).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(writes, blocking.Calls);

        // The largest request (32 MiB) still passes.
        var large = new byte[BlockGeometry.MaxRequestBytes];
        await client.SendAsync(Request(PeerOp.Write, component, 0, large.Length), large, Memory<byte>.Empty, CancellationToken.None);
    }

    private SslClientAuthenticationOptions ClientOptions(X509Certificate2? certificate) => new()
    {
        TargetHost = "localhost",
        ClientCertificates = certificate is null ? null : [certificate],
        EnabledSslProtocols = TlsCredentials.Protocols,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        CertificateChainPolicy = TlsCredentials.ChainPolicy([_ca.Authority], TlsCredentials.ServerAuthentication),
    };

    private static PeerRequestHeader Request(PeerOp op, Guid target, long offset, int length) =>
        new(op, PeerFlags.None, 0, target, 1, 1, offset, length);

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not reached in time");
            await Task.Delay(20);
        }
    }

    /// <summary>Counts requests and payload bytes; with <see cref="Gate"/>, every request waits for it.</summary>
    private sealed class CountingHandler : IPeerRequestHandler
    {
        private readonly Dictionary<long, byte[]> _data = [];
        private int _calls;
        private long _payloadBytes;

        public TaskCompletionSource? Gate { get; init; }

        public int Calls => Volatile.Read(ref _calls);

        public long PayloadBytes => Interlocked.Read(ref _payloadBytes);

        public int ReplyCapacity(in PeerRequestHeader header) => header.Op == PeerOp.Read ? header.Length : 0;

        public async ValueTask<PeerResult> HandleAsync(
            PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _calls);
            Interlocked.Add(ref _payloadBytes, payload.Length);
            if (Gate is not null)
            {
                await Gate.Task.WaitAsync(cancellationToken);
            }

            lock (_data)
            {
                if (header.Op == PeerOp.Write)
                {
                    _data[header.Offset] = payload.ToArray();
                    return PeerResult.Ok;
                }

                if (header.Op == PeerOp.Read && _data.TryGetValue(header.Offset, out var stored))
                {
                    stored.AsSpan(0, Math.Min(stored.Length, reply.Length)).CopyTo(reply.Span);
                    return new PeerResult(0, Math.Min(stored.Length, reply.Length));
                }

                return PeerResult.Ok;
            }
        }
    }
}
