namespace Converge.Host.Tests;

/// <summary>qemu-io patterns and qemu-img copies against a shared host.</summary>
public sealed class QemuTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task Qemu_io_write_and_read_patterns()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("qio");
        var uri = vdisk.NbdUri;
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, ["write -P 0xa5 0 1M", "read -P 0xa5 0 1M"]), fixture.Host);

        // A second connection sees the data; unaligned offsets read-modify-write without touching neighbours.
        Check.Succeeded(await NbdClients.QemuIoAsync(uri,
        [
            "read -P 0xa5 0 1M",
            "write -P 0x3c 1000 5000",
            "read -P 0xa5 0 1000",
            "read -P 0x3c 1000 5000",
            "read -P 0xa5 6000 1042576",
            "write -P 0x71 1048575 3",
            "read -P 0xa5 1044480 4095",
            "read -P 0x71 1048575 3",
            "read -P 0 1048578 4094",
        ]), fixture.Host);

        // Write zeroes (with and without unmap), discard, and reads of never-written space.
        Check.Succeeded(await NbdClients.QemuIoAsync(uri,
        [
            "write -P 0x11 2M 3M",
            "write -z 2M 1M",
            "write -z -u 3M 1M",
            "discard 4M 1M",
            "read -P 0 2M 3M",
            "write -P 0x22 8M 64k",
            "discard 8M 4k",
            "discard 8200k 100",
            "read -P 0 8M 4k",
            "read -P 0x22 8196k 4k",
            "read -P 0 60M 4M",
            "flush",
        ]), fixture.Host);

        // Nothing above disturbed the first megabyte.
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, ["read -P 0xa5 0 1000", "read -P 0x3c 1000 5000"]), fixture.Host);
    }

    [Fact]
    public async Task Qemu_io_reports_a_mismatch()
    {
        // The checks above must be able to fail: a wrong pattern is an error.
        var vdisk = await fixture.CreateVirtualDiskAsync("qio-neg", "16MiB");
        var result = await NbdClients.QemuIoAsync(vdisk.NbdUri, ["write -P 0x01 0 64k", "read -P 0x02 0 64k"]);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("Pattern verification failed", result.Stdout + result.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Qemu_img_convert_and_compare()
    {
        using var dir = new TempDir("converge-qemu-img");
        var source = dir.File("random.img");
        NbdClients.WriteRandomFile(source, 64 * MiB, seed: 1234);
        var vdisk = await fixture.CreateVirtualDiskAsync("convert", "64MiB");

        Check.Succeeded(await NbdClients.QemuImgAsync(["convert", "-n", "-f", "raw", "-O", "raw", source, vdisk.NbdUri]), fixture.Host);
        Check.Succeeded(await NbdClients.QemuImgAsync(["compare", "-f", "raw", "-F", "raw", source, vdisk.NbdUri]), fixture.Host);

        // Compare must notice a difference.
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["write -P 0x00 40M 4k"]), fixture.Host);
        var differs = await NbdClients.QemuImgAsync(["compare", "-f", "raw", "-F", "raw", source, vdisk.NbdUri]);
        Assert.True(differs.ExitCode == 1, differs.ToString());

        var used = (await fixture.Host.Api.GetVirtualDiskAsync(vdisk.Name)).UsedBytes;
        Assert.InRange(used, 64 * MiB - (1 * MiB), 64 * MiB);
    }
}
