using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Converge.TestKit;

namespace Converge.Nbd.Tests;

/// <summary>
/// NBD over TLS (NBD_OPT_STARTTLS) with real clients (nbdinfo, qemu-img, qemu-io over nbds:// and tls-creds) and a raw
/// client for the wire rules: FORCEDTLS answers, bad STARTTLS sequences, per-export access lists, timeouts.
/// </summary>
public sealed class TlsTests : IClassFixture<NbdTlsServer>
{
    private const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptStartTls = 5, OptInfo = 6, OptGo = 7, OptStructured = 8;
    private const uint RepAck = 1, RepServer = 2, RepInfo = 3;
    private const uint ErrUnsup = 0x8000_0001, ErrPolicy = 0x8000_0002, ErrInvalid = 0x8000_0003, ErrTlsReqd = 0x8000_0005;

    private readonly NbdTlsServer _server;

    public TlsTests(NbdTlsServer server)
    {
        _server = server;
    }

    private static string Nbds(int port, string export, string dir) => $"nbds://127.0.0.1:{port}/{export}?tls-certificates={dir}";

    [Fact]
    public async Task Nbdinfo_over_tls_lists_only_the_exports_the_certificate_may_use()
    {
        var alice = await NbdClients.NbdInfoAsync(["--list", "--json", Nbds(_server.RequirePort, "", _server.AliceDir)]);
        Assert.True(alice.Succeeded, alice.ToString());
        Assert.Equal([NbdTlsServer.Open, NbdTlsServer.Secret], ExportNames(alice.Stdout));

        var bob = await NbdClients.NbdInfoAsync(["--list", "--json", Nbds(_server.RequirePort, "", _server.BobDir)]);
        Assert.True(bob.Succeeded, bob.ToString());
        Assert.Equal([NbdTlsServer.Open], ExportNames(bob.Stdout));

        var info = await NbdClients.NbdInfoAsync(["--json", Nbds(_server.RequirePort, NbdTlsServer.Open, _server.BobDir)]);
        Assert.True(info.Succeeded, info.ToString());
        Assert.Equal(64L << 20, JsonDocument.Parse(info.Stdout).RootElement.GetProperty("exports")[0].GetProperty("export-size").GetInt64());
    }

    [Fact]
    public async Task Export_with_an_access_list_admits_alice_and_refuses_bob()
    {
        var alice = await Tools.PythonAsync(
            """
            h = nbd.NBD()
            h.set_uri_allow_local_file(True)
            h.connect_uri(uri)
            assert h.get_tls_negotiated()
            h.pwrite(b'\xa1' * 4096, 8192)
            assert h.pread(4096, 8192) == b'\xa1' * 4096
            """,
            Nbds(_server.RequirePort, NbdTlsServer.Secret, _server.AliceDir));
        Assert.True(alice.ExitCode == 0, alice.ToString());

        var bob = await NbdInfoDebugAsync([Nbds(_server.RequirePort, NbdTlsServer.Secret, _server.BobDir)]);
        Assert.False(bob.Succeeded, bob.ToString());
        Assert.True(bob.Stderr.Contains("server error message: export 'secret' does not admit certificate CN=bob", StringComparison.Ordinal), bob.ToString());
    }

    [Fact]
    public async Task Qemu_img_and_qemu_io_over_tls_write_and_read_back()
    {
        var source = Path.Combine(_server.TempPath, "qemu-source.raw");
        NbdClients.WriteRandomFile(source, 8 << 20, seed: 17);
        var creds = $"tls-creds-x509,id=tls0,dir={_server.AliceDir},endpoint=client";
        var target = $"driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port={_server.RequirePort},file.export={NbdTlsServer.Open},file.tls-creds=tls0";
        var json = "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"host\":\"127.0.0.1\",\"port\":\"" + _server.RequirePort
            + "\",\"export\":\"" + NbdTlsServer.Open + "\",\"tls-creds\":\"tls0\"}}";

        var convert = await NbdClients.QemuImgAsync(["convert", "-n", "--object", creds, "-f", "raw", source, "--target-image-opts", target]);
        Assert.True(convert.Succeeded, convert.ToString());

        var compare = await NbdClients.QemuImgAsync(["compare", "--object", creds, "-f", "raw", "-F", "raw", source, json]);
        Assert.True(compare.Succeeded, compare.ToString());

        var info = await NbdClients.QemuImgAsync(["info", "--object", creds, "--image-opts", target]);
        Assert.True(info.Succeeded, info.ToString());
        Assert.Contains("64 MiB", info.Stdout, StringComparison.Ordinal);

        var io = await Tool.RunAsync(
            "qemu-io",
            ["--object", creds, "--image-opts", target, "-c", "write -P 0x5a 32M 1M", "-c", "read -P 0x5a 32M 1M", "-c", "read -P 0x00 40M 4k"],
            NbdClients.DefaultTimeout,
            NbdClients.SystemPath);
        Assert.True(io.Succeeded && !io.Stdout.Contains("Pattern verification failed", StringComparison.Ordinal), io.ToString());

        // The check can fail: a wrong pattern is reported.
        var wrong = await Tool.RunAsync("qemu-io", ["--object", creds, "--image-opts", target, "-c", "read -P 0x5b 32M 4k"], NbdClients.DefaultTimeout, NbdClients.SystemPath);
        Assert.Contains("Pattern verification failed", wrong.Stdout + wrong.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Plain_client_under_require_gets_tls_required_and_sees_no_export()
    {
        // libnbd 1.14 prints the server's message in its debug output only.
        var plain = await NbdInfoDebugAsync(["--list", $"nbd://127.0.0.1:{_server.RequirePort}"]);
        Assert.False(plain.Succeeded, plain.ToString());
        Assert.True(plain.Stderr.Contains("server error message: this server requires TLS", StringComparison.Ordinal), plain.ToString());

        await using var client = await HelloAsync(_server.RequirePort);
        foreach (var (option, data) in new[]
        {
            (OptList, Array.Empty<byte>()),
            (OptInfo, RawNbdClient.InfoRequest(NbdTlsServer.Open)),
            (OptGo, RawNbdClient.InfoRequest(NbdTlsServer.Open)),
            (OptStructured, Array.Empty<byte>()),
            (99u, Array.Empty<byte>()),
        })
        {
            await client.SendOptionAsync(option, data);
            var replies = await client.ReadOptionRepliesAsync();
            Assert.Single(replies);
            Assert.Equal((option, ErrTlsReqd), (replies[0].Option, replies[0].Type));
            Assert.DoesNotContain(NbdTlsServer.Open, Encoding.UTF8.GetString(replies[0].Data), StringComparison.Ordinal);
        }

        // EXPORT_NAME cannot be answered with an error: the session ends.
        await client.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes(NbdTlsServer.Open));
        Assert.True(await client.WaitForCloseAsync(TimeSpan.FromSeconds(10)));

        // ABORT is answered.
        await using var aborting = await HelloAsync(_server.RequirePort);
        await aborting.SendOptionAsync(OptAbort, []);
        Assert.Equal(RepAck, (await aborting.ReadOptionReplyAsync()).Type);
    }

    [Fact]
    public async Task Refused_export_leaves_the_tls_connection_usable_for_others()
    {
        await using var tls = await StartTlsAsync(_server.RequirePort, "bob");
        await tls.SendOptionAsync(OptInfo, RawNbdClient.InfoRequest(NbdTlsServer.Secret));
        var refused = await tls.ReadOptionRepliesAsync();
        Assert.Equal(ErrPolicy, Assert.Single(refused).Type);

        await tls.SendOptionAsync(OptGo, RawNbdClient.InfoRequest(NbdTlsServer.Open));
        var go = await tls.ReadOptionRepliesAsync();
        Assert.Equal(RepAck, go[^1].Type);
        Assert.Contains(go, r => r.Type == RepInfo);

        await tls.SendRequestAsync(0, 0, 7, 0, 4096);
        var reply = await tls.ReadReplyAsync(4096);
        Assert.Equal((7ul, 0u), (reply.Handle, reply.Error));
    }

    [Fact]
    public async Task Bad_starttls_sequences_get_the_errors_the_spec_names()
    {
        // STARTTLS with data: INVALID, and the connection goes on (still plain).
        await using (var client = await HelloAsync(_server.RequirePort))
        {
            await client.SendOptionAsync(OptStartTls, [1, 2, 3]);
            Assert.Equal(ErrInvalid, (await client.ReadOptionReplyAsync()).Type);
            await client.SendOptionAsync(OptList, []);
            Assert.Equal(ErrTlsReqd, (await client.ReadOptionReplyAsync()).Type);
        }

        // STARTTLS a second time, inside TLS: INVALID, never TLS_REQD.
        await using (var tls = await StartTlsAsync(_server.RequirePort, "alice"))
        {
            await tls.SendOptionAsync(OptStartTls, []);
            Assert.Equal(ErrInvalid, (await tls.ReadOptionReplyAsync()).Type);
            await tls.SendOptionAsync(OptList, []);
            var list = await tls.ReadOptionRepliesAsync();
            Assert.Equal(RepAck, list[^1].Type);
            Assert.Equal(2, list.Count(r => r.Type == RepServer));
        }

        // A server without TLS refuses STARTTLS by policy (NOTLS) and keeps serving in the clear.
        await using var off = await _server.StartAsync(new NbdServerOptions());
        await using (var client = await HelloAsync(((System.Net.IPEndPoint)off.LocalEndPoint).Port))
        {
            await client.SendOptionAsync(OptStartTls, []);
            var reply = await client.ReadOptionReplyAsync();
            Assert.Equal(ErrPolicy, reply.Type);
            Assert.NotEqual(ErrUnsup, reply.Type);
            await client.SendOptionAsync(OptList, []);
            Assert.Equal(RepAck, (await client.ReadOptionRepliesAsync())[^1].Type);
        }

        // Plain bytes where the TLS handshake should be: the session ends.
        await using (var client = await HelloAsync(_server.RequirePort))
        {
            await client.SendOptionAsync(OptStartTls, []);
            Assert.Equal(RepAck, (await client.ReadOptionReplyAsync()).Type);
            await client.SendOptionAsync(OptList, []);
            Assert.True(await client.WaitForCloseAsync(TimeSpan.FromSeconds(10)));
        }
    }

    [Fact]
    public async Task Client_certificates_from_another_ca_or_none_are_refused()
    {
        var foreign = await NbdClients.NbdInfoAsync([Nbds(_server.RequirePort, NbdTlsServer.Open, _server.ForeignDir)]);
        Assert.False(foreign.Succeeded, foreign.ToString());

        var none = await NbdClients.NbdInfoAsync([Nbds(_server.RequirePort, NbdTlsServer.Open, _server.NoCertDir)]);
        Assert.False(none.Succeeded, none.ToString());

        var alice = await NbdClients.NbdInfoAsync([Nbds(_server.RequirePort, NbdTlsServer.Open, _server.AliceDir)]);
        Assert.True(alice.Succeeded, alice.ToString());
    }

    [Fact]
    public async Task Tls_on_serves_plain_and_tls_clients()
    {
        var plain = await NbdClients.NbdInfoAsync(["--json", $"nbd://127.0.0.1:{_server.OnPort}/{NbdTlsServer.Open}"]);
        Assert.True(plain.Succeeded, plain.ToString());

        // A server certificate only: no client certificate asked for.
        var tls = await Tools.PythonAsync(
            """
            h = nbd.NBD()
            h.set_uri_allow_local_file(True)
            h.connect_uri(uri)
            assert h.get_tls_negotiated()
            h.pread(4096, 0)
            """,
            Nbds(_server.OnPort, NbdTlsServer.Open, _server.NoCertDir));
        Assert.True(tls.ExitCode == 0, tls.ToString());
    }

    [Fact]
    public async Task Stalled_tls_handshake_times_out_without_blocking_other_clients()
    {
        await using var listener = await _server.StartAsync(_server.RequireOptions(handshakeTimeout: TimeSpan.FromSeconds(2)));
        var port = ((System.Net.IPEndPoint)listener.LocalEndPoint).Port;
        await using var stalled = await HelloAsync(port);
        await stalled.SendOptionAsync(OptStartTls, []);
        Assert.Equal(RepAck, (await stalled.ReadOptionReplyAsync()).Type);

        // While that client sends no TLS hello, another one is served.
        var alice = await NbdClients.NbdInfoAsync([Nbds(port, NbdTlsServer.Open, _server.AliceDir)]);
        Assert.True(alice.Succeeded, alice.ToString());
        Assert.True(await stalled.WaitForCloseAsync(TimeSpan.FromSeconds(10)), "the stalled handshake was not cut");
    }

    [Fact]
    public async Task Idle_connection_is_closed_after_the_idle_timeout()
    {
        await using var listener = await _server.StartAsync(_server.RequireOptions(idleTimeout: TimeSpan.FromSeconds(1)));
        var port = ((System.Net.IPEndPoint)listener.LocalEndPoint).Port;
        await using var tls = await StartTlsAsync(port, "alice");
        await tls.SendOptionAsync(OptGo, RawNbdClient.InfoRequest(NbdTlsServer.Open));
        Assert.Equal(RepAck, (await tls.ReadOptionRepliesAsync())[^1].Type);
        await tls.SendRequestAsync(0, 0, 1, 0, 512);
        Assert.Equal(0u, (await tls.ReadReplyAsync(512)).Error);

        var started = DateTime.UtcNow;
        Assert.True(await tls.WaitForCloseAsync(TimeSpan.FromSeconds(10)), "the idle connection was not closed");
        Assert.InRange(DateTime.UtcNow - started, TimeSpan.FromSeconds(0.9), TimeSpan.FromSeconds(5));
    }

    private static Task<ToolResult> NbdInfoDebugAsync(string[] args) =>
        Tool.RunAsync("nbdinfo", args, NbdClients.DefaultTimeout, new Dictionary<string, string>(NbdClients.SystemPath) { ["LIBNBD_DEBUG"] = "1" });

    private static List<string> ExportNames(string json) =>
        [.. JsonDocument.Parse(json).RootElement.GetProperty("exports").EnumerateArray().Select(e => e.GetProperty("export-name").GetString()!).Order(StringComparer.Ordinal)];

    private static async Task<RawNbdClient> HelloAsync(int port)
    {
        var client = await RawNbdClient.ConnectAsync(port);
        await client.ReadGreetingAsync();
        await client.SendClientFlagsAsync(3);
        return client;
    }

    /// <summary>Greeting, STARTTLS, then a TLS handshake with a client certificate for CN=<paramref name="clientName"/>.</summary>
    private async Task<RawNbdClient> StartTlsAsync(int port, string clientName)
    {
        var plain = await HelloAsync(port);
        await plain.SendOptionAsync(OptStartTls, []);
        Assert.Equal(RepAck, (await plain.ReadOptionReplyAsync()).Type);
        var ssl = new SslStream(plain.Stream, leaveInnerStreamOpen: false);
        var certificate = _server.Ca.IssueClient(clientName);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ClientCertificates = [certificate],
            CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                CustomTrustStore = { _server.Ca.Authority },
                RevocationMode = X509RevocationMode.NoCheck,
            },
        });
        return new RawNbdClient(ssl);
    }
}
