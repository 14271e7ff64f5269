using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Converge.Management.Contracts;

namespace Converge.Host.Tests;

/// <summary>
/// A standalone host's API security: HTTPS with a certificate the test makes (through the real CLI with <c>--ca</c>),
/// no plain HTTP beyond loopback, reads behind a token when anonymous reads are off, tokens salted in a 0600 file, and
/// the admin token of a host from before salted tokens kept across the upgrade and rotated by the CLI.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class ApiSecurityTests
{
    [Fact]
    public async Task Https_api_with_a_test_ca_works_through_the_cli_and_rotation_rewrites_the_token_file()
    {
        using var dir = new TempDir();
        var (caPath, certPath, keyPath) = MakeCertificates(dir);
        var apiPort = FreePort.Allocate();
        var api = $"https://127.0.0.1:{apiPort}";
        var data = dir.File("data");
        using var host = await StartAsync(dir, data, apiPort, ["--api-tls-cert", certPath, "--api-tls-key", keyPath]);
        await WaitReadyAsync(api, host, caPath);

        Check.Succeeded(await Cli(api, "--ca", caPath, "vdisk", "create", "tls-a", "--size", "64MiB"));
        var list = Check.Succeeded(await Cli(api, "--ca", caPath, "vdisk", "list", "--json"));
        Assert.Contains(JsonSerializer.Deserialize(list.Stdout, ContractsJsonContext.Default.IReadOnlyListVirtualDiskInfo)!, v => v.Name == "tls-a");
        var info = JsonSerializer.Deserialize(Check.Succeeded(await Cli(api, "--ca", caPath, "status", "--json")).Stdout, ContractsJsonContext.Default.StatusInfo)!;
        Assert.Equal(api, info.Host.ApiEndpoint);

        // Without the CA the certificate is not trusted: a clear failure, nothing sent.
        var untrusted = Check.ExitCode(1, await Cli(api, "vdisk", "create", "tls-b", "--size", "64MiB"));
        Assert.Contains("TLS handshake failed", untrusted.Stderr, StringComparison.Ordinal);
        Check.ExitCode(2, await Cli(api, "--ca", dir.File("missing.pem"), "vdisk", "list"));

        // Rotation through the CLI: the token file it used (DATA/admin-token) is rewritten, 0600; the old token is refused.
        var oldToken = File.ReadAllText(Path.Combine(data, "admin-token")).Trim();
        var rotated = Check.Succeeded(await Cli(api, "--ca", caPath, "token", "rotate-admin"));
        Assert.Contains(Path.Combine(data, "admin-token"), rotated.Stdout, StringComparison.Ordinal);
        var newToken = File.ReadAllText(Path.Combine(data, "admin-token")).Trim();
        Assert.NotEqual(oldToken, newToken);
        Assert.DoesNotContain(newToken, rotated.Stdout, StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(data, "admin-token")));
        var stale = Check.ExitCode(1, await Cli(api, "--ca", caPath, "--token", oldToken, "vdisk", "delete", "tls-a"));
        Assert.Contains("token is wrong", stale.Stderr, StringComparison.Ordinal);
        Check.Succeeded(await Cli(api, "--ca", caPath, "vdisk", "delete", "tls-a"));

        // Token commands: create (secret once), list (never a secret), revoke; exit codes as the rest of the CLI.
        var created = JsonSerializer.Deserialize(
            Check.Succeeded(await Cli(api, "--ca", caPath, "token", "create", "ci", "--role", "read-only", "--json")).Stdout, ContractsJsonContext.Default.CreatedApiTokenInfo)!;
        var listed = Check.Succeeded(await Cli(api, "--ca", caPath, "token", "list", "--json")).Stdout;
        Assert.Contains("\"ci\"", listed, StringComparison.Ordinal);
        Assert.DoesNotContain(created.Token, listed, StringComparison.Ordinal);
        Assert.Contains("read-only", Check.Succeeded(await Cli(api, "--ca", caPath, "token", "list")).Stdout, StringComparison.Ordinal);
        var forbidden = Check.ExitCode(1, await Cli(api, "--ca", caPath, "--token", created.Token, "vdisk", "create", "ro", "--size", "64MiB"));
        Assert.Contains("read-only", forbidden.Stderr, StringComparison.Ordinal);
        Check.ExitCode(2, await Cli(api, "--ca", caPath, "token", "create", "x", "--role", "root"));
        Check.ExitCode(2, await Cli(api, "--ca", caPath, "token", "create", "Bad Name", "--role", "admin"));
        Assert.Contains("already exists", Check.ExitCode(1, await Cli(api, "--ca", caPath, "token", "create", "ci", "--role", "admin")).Stderr, StringComparison.Ordinal);
        Assert.Contains("no token with id", Check.ExitCode(1, await Cli(api, "--ca", caPath, "token", "revoke", "0123456789ab")).Stderr, StringComparison.Ordinal);
        Check.Succeeded(await Cli(api, "--ca", caPath, "token", "revoke", created.Info.Id));
        Assert.DoesNotContain("\"ci\"", Check.Succeeded(await Cli(api, "--ca", caPath, "token", "list", "--json")).Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Binding_the_api_beyond_loopback_without_tls_is_refused_at_start()
    {
        using var dir = new TempDir();
        var result = Check.ExitCode(2, await NbdClients.ConvergeAsync([
            "host", "run", "--data", dir.File("data"), "--disk", dir.File("d1.img") + ":64MiB",
            "--nbd-listen", $"127.0.0.1:{FreePort.Allocate()}", "--api-listen", $"0.0.0.0:{FreePort.Allocate()}"]));
        Assert.Contains("beyond loopback", result.Stderr, StringComparison.Ordinal);
        Assert.Contains("--api-tls-cert", result.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(dir.File("d1.img")));
    }

    [Fact]
    public async Task Reads_need_a_token_without_anonymous_reads_and_an_old_hosts_token_survives_the_upgrade_salted()
    {
        using var dir = new TempDir();
        var data = dir.File("data");
        Directory.CreateDirectory(data);

        // A host from before salted tokens: its token and the token's unsalted SHA-256.
        const string OldToken = "cvg_an-old-hosts-admin-token-of-enough-length";
        File.WriteAllText(Path.Combine(data, "admin-token"), OldToken + "\n");
        var unsalted = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(OldToken)));
        File.WriteAllText(Path.Combine(data, "admin-token.sha256"), unsalted + "\n");

        var apiPort = FreePort.Allocate();
        var api = $"http://127.0.0.1:{apiPort}";
        using var host = await StartAsync(dir, data, apiPort, ["--api-anonymous-read", "false"]);
        await WaitReadyAsync(api, host, caPath: null);

        using var http = new HttpClient { BaseAddress = new Uri(api) };
        using (var anonymous = await http.GetAsync("/api/v1/vdisks"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
            Assert.Contains("reading this API needs a token", await anonymous.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        var admin = new ConvergeApiClient(http, OldToken);
        await admin.CreateVirtualDiskAsync("kept", "64MiB");
        var reader = await admin.CreateTokenAsync("reader", "read-only");
        Assert.Contains(await new ConvergeApiClient(http, reader.Token).ListVirtualDisksAsync(), v => v.Name == "kept");
        Assert.Equal(403, (await Assert.ThrowsAsync<ConvergeApiException>(() => new ConvergeApiClient(http, reader.Token).DeleteVirtualDiskAsync("kept"))).Status);

        // Salted in a private file; the unsalted hash and every secret are gone from disk and from every answer.
        Assert.False(File.Exists(Path.Combine(data, "admin-token.sha256")));
        var tokensFile = Path.Combine(data, "api-tokens.json");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(tokensFile));
        var stored = File.ReadAllText(tokensFile);
        Assert.Contains("\"salt\"", stored, StringComparison.Ordinal);
        Assert.Equal(4, stored.Split('"').Count(v => v.Length >= 32 && v.All(char.IsAsciiHexDigitLower)));
        foreach (var secret in new[] { unsalted, OldToken, reader.Token })
        {
            Assert.DoesNotContain(secret, stored, StringComparison.Ordinal);
        }

        foreach (var path in new[] { "/api/v1/host", "/api/v1/tokens", "/api/v1/disks", "/api/v1/vdisks", "/api/v1/health/checks", "/openapi/v1.json" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", OldToken);
            using var response = await http.SendAsync(request);
            Assert.True(response.IsSuccessStatusCode, $"GET {path}: {(int)response.StatusCode}");
            var body = await response.Content.ReadAsStringAsync();
            // Salts (32 hex digits) and hashes (64); the ids (12) are listed on purpose.
            foreach (var hex in stored.Split('"').Where(v => v.Length >= 32 && v.All(char.IsAsciiHexDigitLower)))
            {
                Assert.False(body.Contains(hex, StringComparison.Ordinal), $"GET {path} returned a stored hash or salt");
            }
        }
    }

    private static Task<ToolResult> Cli(string api, params string[] args) => NbdClients.ConvergeAsync([.. args, "--api", api]);

    private static async Task<HostHandle> StartAsync(TempDir dir, string data, int apiPort, string[] extra)
    {
        Directory.CreateDirectory(data);
        var log = dir.File("host.log");
        var process = ConvergeLauncher.Start(dir.Path, log, [
            "host", "run", "--data", data, "--disk", Path.Combine(data, "d1.img") + ":256MiB",
            "--nbd-listen", $"127.0.0.1:{FreePort.Allocate()}", "--api-listen", $"127.0.0.1:{apiPort}", .. extra], 1);
        await Task.CompletedTask;
        return new HostHandle(process, log);
    }

    private static async Task WaitReadyAsync(string api, HostHandle host, string? caPath)
    {
        using var handler = new SocketsHttpHandler();
        if (caPath is not null)
        {
            var ca = X509CertificateLoader.LoadCertificateFromFile(caPath);
            handler.SslOptions.RemoteCertificateValidationCallback = (_, cert, _, _) =>
            {
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return cert is X509Certificate2 c && chain.Build(c);
            };
        }

        using var http = new HttpClient(handler) { BaseAddress = new Uri(api), Timeout = TimeSpan.FromSeconds(5) };
        var stopwatch = Stopwatch.StartNew();
        while (stopwatch.Elapsed < HostProcess.ReadyTimeout)
        {
            Assert.False(host.Process.HasExited, $"the host exited with {(host.Process.HasExited ? host.Process.ExitCode : 0)}:\n{File.ReadAllText(host.LogPath)}");
            try
            {
                using var response = await http.GetAsync("/api/v1/health");
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
            }

            await Task.Delay(100);
        }

        Assert.Fail($"the host was not ready in time:\n{File.ReadAllText(host.LogPath)}");
    }

    /// <summary>A test CA (ECDSA P-256) and a server certificate it signs for 127.0.0.1, as PEM files.</summary>
    private static (string Ca, string Cert, string Key) MakeCertificates(TempDir dir)
    {
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=converge test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        using var ca = caRequest.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        san.AddDnsName("localhost");
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var cert = request.Create(ca, DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1), RandomNumberGenerator.GetBytes(8));

        var paths = (dir.File("ca.pem"), dir.File("api.pem"), dir.File("api.key"));
        File.WriteAllText(paths.Item1, ca.ExportCertificatePem());
        File.WriteAllText(paths.Item2, cert.ExportCertificatePem());
        File.WriteAllText(paths.Item3, key.ExportPkcs8PrivateKeyPem());
        return paths;
    }

    /// <summary>A host process this test started: stopped (SIGTERM, then SIGKILL) by its PID at the end.</summary>
    private sealed class HostHandle(Process process, string logPath) : IDisposable
    {
        public Process Process { get; } = process;

        public string LogPath { get; } = logPath;

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                using var term = Process.Start("kill", ["-TERM", Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
                term?.WaitForExit();
                if (!Process.WaitForExit(TimeSpan.FromSeconds(30)))
                {
                    Process.Kill();
                    Process.WaitForExit();
                }
            }

            Process.Dispose();
        }
    }
}
