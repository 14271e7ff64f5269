namespace Converge.Host.Tests;

/// <summary>fio writes with crc32c verification through its NBD engine; any verify error fails the job.</summary>
public sealed class FioVerifyTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    [Theory]
    [InlineData("randwrite-4k", "randwrite", "--bs=4k", 16)]
    [InlineData("randwrite-mixed", "randwrite", "--bsrange=4k-256k", 8)]
    [InlineData("write-seq-1m", "write", "--bs=1m", 4)]
    public async Task Fio_verify_crc32c_passes(string name, string rw, string blockSize, int iodepth)
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("fio", "128MiB");
        var result = await NbdClients.FioAsync(
        [
            $"--name={name}",
            "--ioengine=nbd",
            $"--uri={vdisk.NbdUri}",
            $"--rw={rw}",
            blockSize,
            $"--iodepth={iodepth}",
            "--size=64M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_dump=0",
            "--randrepeat=1",
            "--output-format=normal",
        ], TimeSpan.FromMinutes(5));
        Check.Succeeded(result, fixture.Host);
        Assert.DoesNotContain("verify:", result.Stdout + result.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("bad magic", result.Stdout + result.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("err= 0", result.Stdout, StringComparison.Ordinal);
    }
}
