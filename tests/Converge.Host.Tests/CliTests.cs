using System.Text.Json;
using Converge.Management.Contracts;

namespace Converge.Host.Tests;

/// <summary>The real <c>converge</c> binary against a real host: output, exit codes, and that refused commands change nothing.</summary>
public sealed class CliTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private string Api => fixture.Host.ApiUrl;

    [Fact]
    public async Task Create_list_show_resize_delete()
    {
        var created = Check.Succeeded(await Cli("vdisk", "create", "cli-a", "--size", "64MiB"));
        Assert.Contains(fixture.Host.NbdUri("cli-a"), created.Stdout, StringComparison.Ordinal);

        var list = await ListAsync();
        var a = Assert.Single(list, v => v.Name == "cli-a");
        Assert.Equal(64L << 20, a.SizeBytes);
        Assert.Equal("online", a.State);

        var table = Check.Succeeded(await Cli("vdisk", "list"));
        Assert.Contains("cli-a", table.Stdout, StringComparison.Ordinal);

        var show = Check.Succeeded(await Cli("vdisk", "show", "cli-a", "--json"));
        var shown = JsonSerializer.Deserialize(show.Stdout, ContractsJsonContext.Default.VirtualDiskInfo)!;
        Assert.Equal(a.Id, shown.Id);
        Assert.Equal(fixture.Host.NbdUri("cli-a"), shown.NbdUri);

        // Grow, and the NBD export sees the new size.
        Check.Succeeded(await Cli("vdisk", "resize", "cli-a", "--size", "128MiB"));
        Assert.Equal(128L << 20, (await fixture.Host.Api.GetVirtualDiskAsync("cli-a")).SizeBytes);
        var size = Check.Succeeded(await NbdClients.NbdInfoAsync(["--size", fixture.Host.NbdUri("cli-a")]));
        Assert.Equal((128L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture), size.Stdout.Trim());

        Check.Succeeded(await Cli("vdisk", "delete", "cli-a"));
        Assert.DoesNotContain(await ListAsync(), v => v.Name == "cli-a");
    }

    [Fact]
    public async Task Disk_list_and_status()
    {
        var disks = Check.Succeeded(await Cli("disk", "list", "--json"));
        var parsed = JsonSerializer.Deserialize(disks.Stdout, ContractsJsonContext.Default.IReadOnlyListDiskInfo)!;
        var disk = Assert.Single(parsed);
        Assert.Equal("online", disk.State);
        Assert.Equal(Path.Combine(fixture.DataDir, "d1.img"), disk.Path);
        Assert.True(disk.CapacityBytes > 3L << 30 && disk.CapacityBytes <= 4L << 30, $"capacity {disk.CapacityBytes}");

        var status = Check.Succeeded(await Cli("status", "--json"));
        var info = JsonSerializer.Deserialize(status.Stdout, ContractsJsonContext.Default.StatusInfo)!;
        Assert.Equal(1, info.Host.DiskCount);
        Assert.Single(info.Disks);

        Check.Succeeded(await Cli("status"));
    }

    [Theory]
    [InlineData(2, "vdisk", "create", "Bad_Name", "--size", "64MiB")]
    [InlineData(2, "vdisk", "create", "-starts-with-dash", "--size", "64MiB")]
    [InlineData(2, "vdisk", "create", "fine-name", "--size", "12parsecs")]
    [InlineData(2, "vdisk", "create", "fine-name", "--size", "-5GiB")]
    [InlineData(2, "vdisk", "create", "fine-name")]
    [InlineData(2, "vdisk", "resize", "cli-base", "--size", "lots")]
    [InlineData(2, "vdisk", "frobnicate")]
    [InlineData(1, "vdisk", "create", "cli-base", "--size", "64MiB")]
    [InlineData(1, "vdisk", "create", "too-big", "--size", "100TiB")]
    [InlineData(1, "vdisk", "resize", "cli-base", "--size", "32MiB")]
    [InlineData(1, "vdisk", "resize", "cli-base", "--size", "100TiB")]
    [InlineData(1, "vdisk", "resize", "no-such-vdisk", "--size", "1GiB")]
    [InlineData(1, "vdisk", "delete", "no-such-vdisk")]
    [InlineData(1, "vdisk", "show", "no-such-vdisk")]
    public async Task Refused_commands_exit_nonzero_and_change_nothing(int expectedExitCode, params string[] args)
    {
        if (await fixture.Host.Api.TryGetVirtualDiskAsync("cli-base") is null)
        {
            await fixture.Host.Api.CreateVirtualDiskAsync("cli-base", "64MiB");
        }

        var before = await ListAsync();
        var result = Check.ExitCode(expectedExitCode, await Cli(args));
        Assert.False(string.IsNullOrWhiteSpace(result.Stderr), $"a refusal says why on stderr\n{result}");
        var after = await ListAsync();
        Assert.Equal(Describe(before), Describe(after));
    }

    [Fact]
    public async Task Size_not_a_multiple_of_4KiB_is_refused()
    {
        var before = await ListAsync();
        var result = await Cli("vdisk", "create", "odd-size", "--size", "1000001");
        Assert.True(result.ExitCode is 1 or 2, result.ToString());
        Assert.Contains("4096", result.Stderr + result.Stdout, StringComparison.Ordinal);
        Assert.Equal(Describe(before), Describe(await ListAsync()));
    }

    [Fact]
    public async Task Unreachable_api_exits_3()
    {
        var port = FreePort.Allocate();
        var result = await NbdClients.ConvergeAsync(["vdisk", "list", "--api", $"http://127.0.0.1:{port}"]);
        Check.ExitCode(3, result);
    }

    private Task<ToolResult> Cli(params string[] args) => NbdClients.ConvergeAsync([.. args, "--api", Api]);

    private async Task<IReadOnlyList<VirtualDiskInfo>> ListAsync()
    {
        var result = Check.Succeeded(await Cli("vdisk", "list", "--json"));
        return JsonSerializer.Deserialize(result.Stdout, ContractsJsonContext.Default.IReadOnlyListVirtualDiskInfo)!;
    }

    private static string Describe(IEnumerable<VirtualDiskInfo> vdisks) =>
        string.Join("\n", vdisks.OrderBy(v => v.Name, StringComparer.Ordinal).Select(v => $"{v.Name} {v.Id} {v.SizeBytes} {v.State}"));
}
