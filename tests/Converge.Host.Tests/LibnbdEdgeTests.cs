namespace Converge.Host.Tests;

/// <summary>Protocol edges through libnbd (python) against the real daemon, and nbdsh one-liners.</summary>
public sealed class LibnbdEdgeTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    [Fact]
    public async Task Protocol_edges_end_to_end()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("edges", "96MiB");
        var result = Check.Succeeded(await NbdClients.PythonAsync("nbd_edges.py", [vdisk.NbdUri]), fixture.Host);
        Assert.Contains("ALL OK", result.Stdout, StringComparison.Ordinal);

        // The daemon is still healthy and the export still serves.
        Assert.Equal("ready", (await fixture.Host.Api.GetHealthAsync()).Status);
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["read -P 0xee 100659200 4k"]), fixture.Host);
    }

    [Fact]
    public async Task Nbdsh_sees_size_and_roundtrips_data()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("nbdsh", "32MiB");
        const string code =
            "assert h.get_size() == 32 * 1024 * 1024, h.get_size()\n" +
            "buf = bytes(range(256)) * 64\n" +
            "h.pwrite(buf, 12345, nbd.CMD_FLAG_FUA)\n" +
            "assert h.pread(len(buf), 12345) == buf\n" +
            "h.flush()\n" +
            "print('nbdsh ok')";
        var result = Check.Succeeded(await NbdClients.NbdShAsync(vdisk.NbdUri, code), fixture.Host);
        Assert.Contains("nbdsh ok", result.Stdout, StringComparison.Ordinal);

        // A failing assertion must fail the run (the check above can fail).
        var failing = await NbdClients.NbdShAsync(vdisk.NbdUri, "assert h.pread(1, 0) == b'\\x01'");
        Assert.NotEqual(0, failing.ExitCode);
    }

    [Fact]
    public async Task Deleted_export_refuses_new_connections_and_its_name_is_reusable()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("deleted", "16MiB");
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["write -P 0x42 0 64k"]), fixture.Host);
        await fixture.Host.Api.DeleteVirtualDiskAsync(vdisk.Name);
        Assert.Null(await fixture.Host.Api.TryGetVirtualDiskAsync(vdisk.Name));
        var result = await NbdClients.QemuIoAsync(vdisk.NbdUri, ["read 0 4k"]);
        Assert.NotEqual(0, result.ExitCode);

        // The name can be reused and the new disk is empty.
        var again = await fixture.Host.Api.CreateVirtualDiskAsync(vdisk.Name, "16MiB");
        Check.Succeeded(await NbdClients.QemuIoAsync(again.NbdUri, ["read -P 0 0 64k"]), fixture.Host);
    }
}
