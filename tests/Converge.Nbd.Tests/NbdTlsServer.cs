using System.Net;
using Converge.Common.Transport;
using Converge.TestKit;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Nbd.Tests;

/// <summary>
/// In-process NBD listeners with TLS, shared per test class: <see cref="RequirePort"/> requires TLS and a client
/// certificate from <see cref="Ca"/>, and admits only CN=alice to the export <see cref="Secret"/>;
/// <see cref="OnPort"/> offers TLS (server certificate only) next to plain NBD. Credentials directories in the qemu and
/// libnbd layout: <see cref="AliceDir"/>, <see cref="BobDir"/>, <see cref="ForeignDir"/> (a client certificate from
/// another CA), <see cref="NoCertDir"/> (CA only).
/// </summary>
public sealed class NbdTlsServer : IAsyncLifetime
{
    public const string Open = "open";
    public const string Secret = "secret";

    private readonly TempDir _dir = new("converge-nbd-tls");
    private NbdListener? _require;
    private NbdListener? _on;

    internal TestCatalog Catalog { get; } = new();

    public TestCertificates Ca { get; } = TestCertificates.CreateAuthority();

    public TestCertificates OtherCa { get; } = TestCertificates.CreateAuthority("Some other CA");

    public int RequirePort { get; private set; }

    public int OnPort { get; private set; }

    public string ServerDir => _dir.File("server");

    public string AliceDir => _dir.File("alice");

    public string BobDir => _dir.File("bob");

    public string ForeignDir => _dir.File("foreign");

    public string NoCertDir => _dir.File("nocert");

    public string TempPath => _dir.Path;

    /// <summary>The options <see cref="RequirePort"/> runs with (tests start more listeners like it).</summary>
    public NbdServerOptions RequireOptions(TimeSpan? handshakeTimeout = null, TimeSpan? idleTimeout = null)
    {
        var (certificate, chain) = TlsCredentials.LoadCertificate(Path.Combine(ServerDir, "server-cert.pem"), Path.Combine(ServerDir, "server-key.pem"));
        return new NbdServerOptions
        {
            TlsMode = NbdTlsMode.Require,
            Tls = TlsCredentials.ServerOptions(certificate, chain, TlsCredentials.LoadAuthorities(Path.Combine(ServerDir, "ca-cert.pem"))),
            Authorizer = NbdExportAccessList.Parse([$"{Secret}=alice,carol"]),
            HandshakeTimeout = handshakeTimeout ?? TimeSpan.FromSeconds(10),
            IdleTimeout = idleTimeout ?? Timeout.InfiniteTimeSpan,
        };
    }

    public async Task<NbdListener> StartAsync(NbdServerOptions options)
    {
        var listener = new NbdListener(new IPEndPoint(IPAddress.Loopback, 0), Catalog, options, NullLogger<NbdListener>.Instance);
        await listener.StartAsync(CancellationToken.None);
        return listener;
    }

    public async Task InitializeAsync()
    {
        Catalog.Add(Open, 64 << 20);
        Catalog.Add(Secret, 16 << 20);
        Ca.WriteServerFiles(ServerDir);
        Ca.WriteClientDirectory(AliceDir, "alice");
        Ca.WriteClientDirectory(BobDir, "bob");
        Ca.WriteClientDirectory(ForeignDir, "alice", clientIssuer: OtherCa);
        Ca.WriteClientDirectory(NoCertDir, null);

        _require = await StartAsync(RequireOptions());
        RequirePort = ((IPEndPoint)_require.LocalEndPoint).Port;

        var (certificate, chain) = TlsCredentials.LoadCertificate(Path.Combine(ServerDir, "server-cert.pem"), Path.Combine(ServerDir, "server-key.pem"));
        _on = await StartAsync(new NbdServerOptions { TlsMode = NbdTlsMode.On, Tls = TlsCredentials.ServerOptions(certificate, chain, null) });
        OnPort = ((IPEndPoint)_on.LocalEndPoint).Port;
    }

    public async Task DisposeAsync()
    {
        foreach (var listener in new[] { _require, _on })
        {
            if (listener is not null)
            {
                await listener.DisposeAsync();
            }
        }

        Ca.Dispose();
        OtherCa.Dispose();
        _dir.Dispose();
    }
}
