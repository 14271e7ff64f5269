namespace Converge.Host.Tests;

/// <summary>
/// <c>converge host run --nbd-tls require</c> with PEM files, a client CA and an access list, driven by nbdinfo,
/// qemu-img and qemu-io over TLS; and the start-up errors of a TLS configuration that cannot work.
/// </summary>
public sealed class NbdTlsTests
{
    [Fact]
    public async Task Host_with_nbd_tls_require_serves_tls_clients_and_refuses_plain_and_unlisted_ones()
    {
        using var dir = new TempDir("converge-nbd-tls-host");
        using var ca = TestCertificates.CreateAuthority();
        var pki = dir.File("pki");
        ca.WriteServerFiles(pki);
        var alice = ca.WriteClientDirectory(dir.File("alice"), "alice");
        var bob = ca.WriteClientDirectory(dir.File("bob"), "bob");
        var data = dir.File("data");
        await using var host = await HostProcess.StartAsync(
            data,
            [new DiskSpec(Path.Combine(data, "d1.img"), "1GiB")],
            name: null,
            [
                "--nbd-tls", "require",
                "--nbd-tls-cert", Path.Combine(pki, "server-cert.pem"),
                "--nbd-tls-key", Path.Combine(pki, "server-key.pem"),
                "--nbd-tls-ca", Path.Combine(pki, "ca-cert.pem"),
                "--nbd-allow", "private=alice",
            ]);
        await host.Api.CreateVirtualDiskAsync("shared", "64MiB");
        await host.Api.CreateVirtualDiskAsync("private", "32MiB");

        string Nbds(string export, string creds) => $"nbds://{host.NbdEndpoint}/{export}?tls-certificates={creds}";

        var list = await NbdClients.NbdInfoAsync(["--list", Nbds("", bob)]);
        Assert.True(list.Succeeded, list.ToString());
        Assert.Contains("shared", list.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("private", list.Stdout, StringComparison.Ordinal);

        var plain = await NbdClients.NbdInfoAsync(["--list", host.NbdUri("")]);
        Assert.False(plain.Succeeded, plain.ToString());
        Assert.DoesNotContain("shared", plain.Stdout, StringComparison.Ordinal);

        Assert.False((await NbdClients.NbdInfoAsync([Nbds("private", bob)])).Succeeded);
        Assert.True((await NbdClients.NbdInfoAsync([Nbds("private", alice)])).Succeeded);

        var source = dir.File("source.raw");
        NbdClients.WriteRandomFile(source, 16 << 20, seed: 5);
        var creds = $"tls-creds-x509,id=tls0,dir={alice},endpoint=client";
        var target = $"driver=raw,file.driver=nbd,file.host=127.0.0.1,file.port={host.NbdPort},file.export=private,file.tls-creds=tls0";
        var convert = await NbdClients.QemuImgAsync(["convert", "-n", "--object", creds, "-f", "raw", source, "--target-image-opts", target]);
        Assert.True(convert.Succeeded, convert.ToString());
        var json = "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"host\":\"127.0.0.1\",\"port\":\"" + host.NbdPort + "\",\"export\":\"private\",\"tls-creds\":\"tls0\"}}";
        var compare = await NbdClients.QemuImgAsync(["compare", "--object", creds, "-f", "raw", "-F", "raw", source, json]);
        Assert.True(compare.Succeeded, compare.ToString());

        var io = await Tool.RunAsync(
            "qemu-io", ["--object", creds, "--image-opts", target, "-c", "write -P 0x3c 20M 64k", "-c", "read -P 0x3c 20M 64k"], NbdClients.DefaultTimeout, NbdClients.SystemPath);
        Assert.True(io.Succeeded && !io.Stdout.Contains("verification failed", StringComparison.Ordinal), io.ToString());
    }

    [Theory]
    [InlineData("--nbd-tls require needs a server certificate", "--nbd-tls", "require")]
    [InlineData("--nbd-tls 'maybe': give off, on or require", "--nbd-tls", "maybe")]
    [InlineData("--nbd-tls-cert is given but --nbd-tls is off", "--nbd-tls-cert", "/nonexistent/cert.pem")]
    [InlineData("--nbd-allow needs --nbd-tls-ca", "--nbd-allow", "a=b")]
    public async Task Unusable_tls_configuration_is_a_start_up_error(string message, params string[] args)
    {
        using var dir = new TempDir("converge-nbd-tls-bad");
        var result = await NbdClients.ConvergeAsync(
            ["host", "run", "--data", dir.Path, "--disk", dir.File("d1.img") + ":1GiB", "--nbd-listen", $"127.0.0.1:{FreePort.Allocate()}", "--api-listen", $"127.0.0.1:{FreePort.Allocate()}", .. args]);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Contains(message, result.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(dir.File("d1.img")), "nothing may be created before the configuration is checked");
    }

    [Fact]
    public async Task Key_that_does_not_match_the_certificate_is_a_start_up_error()
    {
        using var dir = new TempDir("converge-nbd-tls-key");
        using var ca = TestCertificates.CreateAuthority();
        ca.WriteServerFiles(dir.File("a"));
        ca.WriteServerFiles(dir.File("b"));
        var result = await NbdClients.ConvergeAsync(
        [
            "host", "run", "--data", dir.File("data"), "--disk", dir.File("d1.img") + ":1GiB",
            "--nbd-listen", $"127.0.0.1:{FreePort.Allocate()}", "--api-listen", $"127.0.0.1:{FreePort.Allocate()}",
            "--nbd-tls", "on", "--nbd-tls-cert", Path.Combine(dir.File("a"), "server-cert.pem"), "--nbd-tls-key", Path.Combine(dir.File("b"), "server-key.pem"),
        ]);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("NBD TLS: cannot load the certificate", result.Stderr + result.Stdout, StringComparison.Ordinal);
    }
}
