using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// Cluster identity end to end (docs/security/identity.md): key files, join tokens, the host RPC and Raft ports on
/// mutual TLS, and revocation, against real host processes with raw clients.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ClusterIdentityTests
{
    private static readonly TimeSpan RefusedWithin = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task KeyFilesAreOwnerOnlyAndAHostJoinsOnlyWithAValidUnusedToken()
    {
        await using var cluster = await TestCluster.StartAsync(2);
        foreach (var host in cluster.Hosts)
        {
            // Both are voters, so both hold the CA key.
            foreach (var key in new[] { "host.key", "ca.key" })
            {
                var path = Path.Combine(host.DataDir, "tls", key);
                Assert.True(File.Exists(path), $"{path} is missing");
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
            }

            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(host.DataDir, "tls")));
        }

        var h1 = cluster[0];
        var valid = (await h1.Api.CreateJoinTokenAsync("10m")).Token;
        var parts = valid.Split('.');
        var wrongSecret = string.Join('.', parts[0], parts[1], new string('0', 32), parts[3]);
        var otherCluster = string.Join('.', parts[0], parts[1], parts[2], new string('a', 64));
        var expiringInfo = await h1.Api.CreateJoinTokenAsync("1s");
        var expiring = expiringInfo.Token;

        // A token spent by a real join.
        var spent = (await h1.Api.CreateJoinTokenAsync("10m")).Token;
        await using (var h3 = new ClusterHost(cluster.TempPath("joined"), "h3", "256MiB"))
        {
            h3.Launch(h1.RpcUrl, spent);
            await h3.WaitReadyAsync();
        }

        while (DateTimeOffset.UtcNow <= expiringInfo.ExpiresAt.AddMilliseconds(200))
        {
            await Task.Delay(100); // until the 1 s token has expired (the host clocks are this machine's)
        }
        var cases = new (string Name, string? Token, string Expected)[]
        {
            ("no token", null, "--join needs --join-token"),
            ("malformed token", "hello", "a join token looks like"),
            ("wrong secret", wrongSecret, "not valid for this cluster"),
            ("another cluster's CA", otherCluster, "belongs to another cluster"),
            ("used token", spent, "already used"),
            ("expired token", expiring, "expired"),
        };
        var before = await h1.Api.ListHostsAsync();
        var index = 0;
        foreach (var (name, token, expected) in cases)
        {
            index++;
            await using var joiner = new ClusterHost(cluster.TempPath("refused"), "x" + index.ToString(CultureInfo.InvariantCulture), "256MiB");
            joiner.Launch(h1.RpcUrl, token);
            var exit = await joiner.WaitExitAsync(RefusedWithin);
            Assert.True(exit != 0, $"{name}: the join should be refused but the host exited with 0.\n{joiner.LogTail()}");
            Assert.Contains(expected, File.ReadAllText(joiner.LogPath), StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(joiner.DataDir, "membership.json")), $"{name}: the refused host recorded a membership");
        }

        var after = await h1.Api.ListHostsAsync();
        Assert.Equal(before.Select(h => h.Name).Order(), after.Select(h => h.Name).Order());
        Assert.DoesNotContain(after, h => h.Name.StartsWith('x'));

        // The valid token was never spent by the refused attempts: it still works once.
        await using var h4 = new ClusterHost(cluster.TempPath("late"), "h4", "256MiB");
        h4.Launch(h1.RpcUrl, valid);
        await h4.WaitReadyAsync();
    }

    [Fact]
    public async Task RpcAndRaftPortsRefuseClientsWithoutAClusterCertificate()
    {
        await using var cluster = await TestCluster.StartAsync(2);
        var h1 = cluster[0];
        await h1.Api.PutPolicyAsync("ftt0", new PolicyInfo { Name = "ftt0", FailuresToTolerate = 0 });
        await h1.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("keep", "16MiB") with { Policy = "ftt0" });
        var vdisk = await h1.Api.GetVirtualDiskAsync("keep");
        var forged = $$"""{"$type":"deleteVirtualDisk","commandId":"{{Guid.NewGuid()}}","virtualDiskId":"{{vdisk.Id}}","now":"2030-01-01T00:00:00Z"}""";
        var request = "POST /internal/v1/metadata/propose HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
                      $"Content-Length: {Encoding.UTF8.GetByteCount(forged)}\r\n\r\n{forged}";

        foreach (var (port, what) in new[] { (h1.RpcPort, "RPC"), (h1.RaftPort, "Raft") })
        {
            Assert.True(await PlainTcpAsync(port, request) == string.Empty, $"{what} port answered plain TCP");
            Assert.True(await TlsAsync(port, request, clientCertificate: null) == string.Empty, $"{what} port answered TLS without a client certificate");
            using var foreign = ForeignCertificate();
            Assert.True(await TlsAsync(port, request, foreign) == string.Empty, $"{what} port answered a certificate from another CA");
        }

        // The same with an HTTP client: a certificate from another CA gets no answer at all.
        using (var foreign = ForeignCertificate())
        using (var client = new HttpClient(new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions { ClientCertificates = [foreign], RemoteCertificateValidationCallback = (_, _, _, _) => true },
        }))
        {
            await Assert.ThrowsAsync<HttpRequestException>(() => client.PostAsync(
                h1.RpcUrl + "/internal/v1/metadata/propose", new StringContent(forged, Encoding.UTF8, "application/json")));
        }

        // Nothing was deleted.
        Assert.Equal(vdisk.Id, (await h1.Api.GetVirtualDiskAsync("keep")).Id);
        Assert.Equal(vdisk.Id, (await cluster[1].Api.GetVirtualDiskAsync("keep")).Id);

        // Host RPC is gone from the API port, whatever the case of the path.
        foreach (var path in new[] { "/internal/v1/metadata/propose", "/INTERNAL/v1/metadata/propose", "/Internal/V1/metadata/propose" })
        {
            using var response = await h1.Http.PostAsync(path, new StringContent(forged, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }

        // With a valid cluster certificate, a malformed command is a 400 that says why (it was a 500).
        foreach (var body in new[] { "{\"x\":1}", "garbage", "{\"$type\":\"noSuchCommand\"}", "{\"$type\":\"deleteVirtualDisk\"}" })
        {
            using var response = await cluster[1].RpcHttp.PostAsync(
                h1.RpcUrl + "/internal/v1/metadata/propose", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{body}: {(int)response.StatusCode} {text}");
            Assert.Contains("not a metadata command", text, StringComparison.Ordinal);
        }

        Assert.Equal(vdisk.Id, (await h1.Api.GetVirtualDiskAsync("keep")).Id);
    }

    [Fact]
    public async Task ARevokedHostCanNoLongerConnect()
    {
        // One voter: h2 is a metadata client, so every call it makes goes over host RPC.
        await using var cluster = await TestCluster.StartAsync(2, hostArgs: ["--voters", "1"]);
        var (h1, h2) = (cluster[0], cluster[1]);
        using (var ok = await h2.RpcHttp.GetAsync(h1.RpcUrl + "/internal/v1/resync"))
        {
            Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        }

        var revoked = await h1.Api.RevokeHostAsync("h2");
        Assert.NotEmpty(revoked.RevokedSerials);

        // A new connection with h2's certificate is refused in the handshake (fresh client: no pooled connection).
        using (var fresh = ClusterHost.NewRpcClient(h2.DataDir, new Uri(h1.RpcUrl)))
        {
            await Assert.ThrowsAsync<HttpRequestException>(() => fresh.GetAsync("/internal/v1/resync"));
        }

        // An open connection is refused at its next request.
        var deadline = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            try
            {
                using var response = await h2.RpcHttp.GetAsync(h1.RpcUrl + "/internal/v1/resync");
                if (response.StatusCode == HttpStatusCode.Forbidden)
                {
                    break;
                }
            }
            catch (HttpRequestException)
            {
                break;
            }

            Assert.True(DateTimeOffset.UtcNow < deadline, "h2's open connection was still served after the revocation");
            await Task.Delay(100);
        }

        // Its next start cannot rejoin: it never follows the metadata again, so it never becomes ready.
        await h2.StopAsync();
        h2.Launch();
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        while (stopwatch.Elapsed < TimeSpan.FromSeconds(15) && h2.IsRunning)
        {
            try
            {
                var health = await h2.Api.GetHealthAsync();
                Assert.NotEqual("ready", health.Status);
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or TaskCanceledException)
            {
            }

            await Task.Delay(250);
        }

        Assert.Contains("revoked", File.ReadAllText(h1.LogPath), StringComparison.Ordinal);
    }

    /// <summary>Sends <paramref name="request"/> over plain TCP; returns what came back (empty: nothing).</summary>
    private static async Task<string> PlainTcpAsync(int port, string request)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        var stream = client.GetStream();
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
            return await ReadAllAsync(stream);
        }
        catch (IOException)
        {
            return string.Empty;
        }
    }

    /// <summary>TLS (any server certificate accepted) with or without a client certificate, then the request.</summary>
    private static async Task<string> TlsAsync(int port, string request, X509Certificate2? clientCertificate)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        await using var tls = new SslStream(client.GetStream());
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = "converge",
                ClientCertificates = clientCertificate is null ? null : [clientCertificate],
                RemoteCertificateValidationCallback = (_, _, _, _) => true,
            }, timeout.Token);
            await tls.WriteAsync(Encoding.ASCII.GetBytes(request));
            return await ReadAllAsync(tls);
        }
        catch (Exception e) when (e is IOException or AuthenticationException or OperationCanceledException)
        {
            return string.Empty;
        }
    }

    private static async Task<string> ReadAllAsync(Stream stream)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        var buffer = new byte[4096];
        var text = new StringBuilder();
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer, timeout.Token)) > 0)
            {
                text.Append(Encoding.ASCII.GetString(buffer, 0, read));
            }
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
        }

        return text.ToString();
    }

    /// <summary>A client certificate signed by a CA of its own: the right shape, the wrong cluster.</summary>
    private static X509Certificate2 ForeignCertificate()
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=foreign CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=h1, O=converge", key, HashAlgorithmName.SHA256);
        using var signed = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), [1, 2, 3, 4]);
        using var withKey = signed.CopyWithPrivateKey(key);
        return X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
    }
}
