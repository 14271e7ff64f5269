namespace Converge.Host.Tests;

/// <summary>What a host remembers across restarts, and how it treats a disk that vanished while it was down.</summary>
public sealed class RestartTests : IDisposable
{
    private readonly TempDir dir = new("converge-restart");

    public void Dispose() => dir.Dispose();

    [Fact]
    public async Task Metadata_and_data_survive_restarts()
    {
        await using var host = await HostProcess.StartAsync(dir.File("host"), "1GiB");
        var id = (await host.Api.GetHostAsync()).Id;
        await host.Api.CreateVirtualDiskAsync("keep-a", "64MiB");
        await host.Api.CreateVirtualDiskAsync("keep-b", "32MiB");
        await host.Api.CreateVirtualDiskAsync("gone", "16MiB");
        await host.Api.ResizeVirtualDiskAsync("keep-b", "48MiB");
        await host.Api.DeleteVirtualDiskAsync("gone");
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri("keep-a"), ["write -P 0x61 0 2M", "write -P 0x62 60M 4M"]), host);
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri("keep-b"), ["write -P 0x63 44M 4M"]), host);
        var before = await host.Api.ListVirtualDisksAsync();

        Assert.True(File.Exists(Path.Combine(host.DataDir, "host.json")), "host.json is written");
        Assert.True(File.Exists(Path.Combine(host.DataDir, "host.pid")), "host.pid is written while running");

        await host.RestartAsync();
        Assert.Equal(id, (await host.Api.GetHostAsync()).Id);
        var after = await host.Api.ListVirtualDisksAsync();
        Assert.Equal(
            before.Select(v => (v.Name, v.Id, v.SizeBytes)).Order(),
            after.Select(v => (v.Name, v.Id, v.SizeBytes)).Order());
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri("keep-a"), ["read -P 0x61 0 2M", "read -P 0 2M 58M", "read -P 0x62 60M 4M"]), host);
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri("keep-b"), ["read -P 0 0 44M", "read -P 0x63 44M 4M"]), host);

        // And after a crash: metadata changes acknowledged by the API are not lost.
        await host.Api.CreateVirtualDiskAsync("after-crash", "16MiB");
        await host.RestartAsync(crash: true);
        Assert.NotNull(await host.Api.TryGetVirtualDiskAsync("after-crash"));
        Assert.Equal(48L << 20, (await host.Api.GetVirtualDiskAsync("keep-b")).SizeBytes);
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri("keep-a"), ["read -P 0x61 0 2M", "read -P 0x62 60M 4M"]), host);
    }

    [Fact]
    public async Task A_disk_removed_while_stopped_is_reported_missing_and_never_recreated()
    {
        var data = dir.File("host");
        var d1 = Path.Combine(data, "d1.img");
        var d2 = Path.Combine(data, "d2.img");
        await using var host = await HostProcess.StartAsync(data, [new DiskSpec(d1, "1GiB"), new DiskSpec(d2, "1GiB")]);
        var disks = await host.Api.ListDisksAsync();
        Assert.Equal(2, disks.Count);
        Assert.All(disks, d => Assert.Equal("online", d.State));

        for (var i = 0; i < 4; i++)
        {
            await host.Api.CreateVirtualDiskAsync($"v{i}", "64MiB");
            Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri($"v{i}"), [$"write -P 0x{0x40 + i:x2} 0 1M"]), host);
        }

        var vdisks = await host.Api.ListVirtualDisksAsync();
        var victim = vdisks.Single(v => v.Name == "v0").DiskPath;
        Assert.Contains(victim, new[] { d1, d2 });

        Assert.Equal(0, await host.StopAsync());
        File.Delete(victim);
        await host.StartAgainAsync();

        Assert.False(File.Exists(victim), "the host must not recreate a missing disk file");
        var after = await host.Api.ListDisksAsync();
        var missing = Assert.Single(after, d => d.Path == victim);
        Assert.Equal("missing", missing.State);
        Assert.False(string.IsNullOrWhiteSpace(missing.Error), "a missing disk says why");
        Assert.All(after.Where(d => d.Path != victim), d => Assert.Equal("online", d.State));

        foreach (var v in await host.Api.ListVirtualDisksAsync())
        {
            var expected = vdisks.Single(x => x.Name == v.Name).DiskPath == victim ? "unavailable" : "online";
            Assert.True(expected == v.State, $"{v.Name} on {v.DiskPath}: expected {expected}, got {v.State}");
            var read = await NbdClients.QemuIoAsync(v.NbdUri, [$"read -P 0x{0x40 + int.Parse(v.Name[1..], System.Globalization.CultureInfo.InvariantCulture):x2} 0 1M"]);
            if (expected == "online")
            {
                Check.Succeeded(read, host);
            }
            else
            {
                Assert.NotEqual(0, read.ExitCode);
            }
        }

        Assert.Contains(victim, host.ReadLog(), StringComparison.Ordinal);

        // A second restart still does not create it.
        await host.RestartAsync();
        Assert.False(File.Exists(victim));
    }
}
