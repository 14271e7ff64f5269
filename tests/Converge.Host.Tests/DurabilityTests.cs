namespace Converge.Host.Tests;

/// <summary>Data written with qemu-img survives a clean restart and a kill -9 after the flush qemu-img ends with.</summary>
public sealed class DurabilityTests : IAsyncLifetime
{
    private const long MiB = 1 << 20;
    private readonly TempDir dir = new("converge-durability");
    private HostProcess? host;

    private HostProcess Host => host!;

    public async Task InitializeAsync() => host = await HostProcess.StartAsync(dir.File("host"), "2GiB");

    public async Task DisposeAsync()
    {
        if (host is not null)
        {
            await host.DisposeAsync();
        }

        dir.Dispose();
    }

    [Fact]
    public async Task Converted_data_survives_sigterm_restart_and_kill9_after_flush()
    {
        var first = dir.File("first.img");
        var second = dir.File("second.img");
        NbdClients.WriteRandomFile(first, 64 * MiB, seed: 1);
        NbdClients.WriteRandomFile(second, 64 * MiB, seed: 2);
        await Host.Api.CreateVirtualDiskAsync("first", "64MiB");
        await Host.Api.CreateVirtualDiskAsync("second", "64MiB");

        await ConvertAsync(first, "first");
        await CompareAsync(first, "first");

        // Clean restart: SIGTERM, exit code 0, same data.
        await Host.RestartAsync();
        await CompareAsync(first, "first");
        Assert.Contains("ready", Host.ReadLog(), StringComparison.Ordinal);

        // qemu-img convert flushes at the end: after its exit the data is durable, a crash cannot lose it.
        await ConvertAsync(second, "second");
        await Host.Kill9Async();
        await Host.StartAgainAsync();
        await CompareAsync(first, "first");
        await CompareAsync(second, "second");

        var vdisks = await Host.Api.ListVirtualDisksAsync();
        Assert.Equal(["first", "second"], vdisks.Select(v => v.Name).Order());
        Assert.All(vdisks, v => Assert.Equal("online", v.State));
        Assert.All(vdisks, v => Assert.Equal(0, v.ChecksumErrors));
    }

    private async Task ConvertAsync(string file, string export) =>
        Check.Succeeded(await NbdClients.QemuImgAsync(["convert", "-n", "-f", "raw", "-O", "raw", file, Host.NbdUri(export)]), Host);

    private async Task CompareAsync(string file, string export) =>
        Check.Succeeded(await NbdClients.QemuImgAsync(["compare", "-f", "raw", "-F", "raw", file, Host.NbdUri(export)]), Host);
}
