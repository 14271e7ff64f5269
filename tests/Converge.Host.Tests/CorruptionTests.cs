namespace Converge.Host.Tests;

/// <summary>
/// Bytes flipped in the disk file under a running daemon: reading them through NBD fails with an I/O error (never
/// returns the bad data), the checksum counters rise, and everything else keeps being served.
/// </summary>
public sealed class CorruptionTests : IAsyncLifetime
{
    private const int Block = 4096;
    private const byte Pattern = 0x5c;
    private readonly TempDir dir = new("converge-corrupt");
    private HostProcess? host;

    private HostProcess Host => host!;

    public async Task InitializeAsync() => host = await HostProcess.StartAsync(dir.File("host"), "256MiB");

    public async Task DisposeAsync()
    {
        if (host is not null)
        {
            await host.DisposeAsync();
        }

        dir.Dispose();
    }

    [Fact]
    public async Task A_corrupted_block_reads_as_an_io_error_and_is_counted()
    {
        var vdisk = await Host.Api.CreateVirtualDiskAsync("victim", "32MiB");
        var uri = vdisk.NbdUri;
        const long target = 8 << 20;
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, ["write -P 0xa1 0 1M", $"write -P 0x{Pattern:x2} {target} 64k", "write -P 0xa2 16M 1M", "flush"]), Host);
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, [$"read -P 0x{Pattern:x2} {target} 64k"]), Host);
        var diskPath = vdisk.DiskPath;
        var checksumErrorsBefore = (await Host.Api.ListDisksAsync()).Single(d => d.Path == diskPath).ChecksumErrors;

        // Find a data block that holds the pattern and flip bytes in it, through the page cache the daemon reads from.
        var physical = DiskFiles.FindFilledBlock(diskPath, Pattern);
        Assert.True(physical >= 0, $"no 4 KiB block of 0x{Pattern:x2} found in {diskPath}");
        using (var file = new FileStream(diskPath, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite))
        {
            var buffer = new byte[Block];
            file.Position = physical;
            file.ReadExactly(buffer);
            buffer[100] ^= 0xff;
            buffer[2000] ^= 0x01;
            file.Position = physical;
            file.Write(buffer);
            file.Flush();
        }

        // The whole range fails, with EIO, and never returns data.
        var whole = await NbdClients.QemuIoAsync(uri, [$"read {target} 64k"]);
        Assert.True(whole.ExitCode != 0, $"reading a corrupted block must fail\n{whole}");
        Assert.Contains("Input/output error", whole.Stdout + whole.Stderr, StringComparison.Ordinal);

        // Exactly one logical block of the 16 fails (libnbd sees EIO); the other 15 read back intact.
        var probe = await NbdClients.NbdShAsync(uri,
            "import errno\n" +
            "bad = []\n" +
            "for i in range(16):\n" +
            "    try:\n" +
            $"        data = h.pread(4096, {target} + i * 4096)\n" +
            $"        assert data == b'\\x{Pattern:x2}' * 4096, 'block %d returned wrong data' % i\n" +
            "    except nbd.Error as e:\n" +
            "        assert e.errno in (errno.EIO, 'EIO'), 'block %d failed with errno %s' % (i, e.errno)\n" +
            "        bad.append(i)\n" +
            "assert len(bad) == 1, bad\n" +
            "print('BAD', bad[0])\n");
        Check.Succeeded(probe, Host);

        // Counters rise; the daemon keeps serving this export and others.
        var disk = (await Host.Api.ListDisksAsync()).Single(d => d.Path == diskPath);
        Assert.True(disk.ChecksumErrors > checksumErrorsBefore, $"disk checksumErrors {disk.ChecksumErrors} did not rise above {checksumErrorsBefore}");
        Assert.True((await Host.Api.GetVirtualDiskAsync("victim")).ChecksumErrors > 0, "the vdisk's checksumErrors should rise too");
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, ["read -P 0xa1 0 1M", "read -P 0xa2 16M 1M", "read -P 0 2M 1M"]), Host);
        var other = await Host.Api.CreateVirtualDiskAsync("bystander", "16MiB");
        Check.Succeeded(await NbdClients.QemuIoAsync(other.NbdUri, ["write -P 0x33 0 1M", "read -P 0x33 0 1M"]), Host);
        Assert.Equal("ready", (await Host.Api.GetHealthAsync()).Status);

        // Rewriting the bad range heals it (redirect-on-write puts the data in a fresh block).
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, [$"write -P 0x5d {target} 64k", $"read -P 0x5d {target} 64k"]), Host);
    }
}
