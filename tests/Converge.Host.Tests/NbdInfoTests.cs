using System.Text.Json;

namespace Converge.Host.Tests;

/// <summary>What nbdinfo sees: the export list and every negotiated capability.</summary>
public sealed class NbdInfoTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    [Fact]
    public async Task List_shows_every_export()
    {
        var created = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            created.Add((await fixture.CreateVirtualDiskAsync("list", "16MiB")).Name);
        }

        var text = Check.Succeeded(await NbdClients.NbdInfoAsync(["--list", $"nbd://{fixture.Host.NbdEndpoint}"]), fixture.Host);
        foreach (var name in created)
        {
            Assert.Contains($"export=\"{name}\"", text.Stdout, StringComparison.Ordinal);
        }

        var json = Check.Succeeded(await NbdClients.NbdInfoAsync(["--list", "--json", $"nbd://{fixture.Host.NbdEndpoint}"]), fixture.Host);
        using var doc = JsonDocument.Parse(json.Stdout);
        var names = doc.RootElement.GetProperty("exports").EnumerateArray()
            .Select(e => e.GetProperty("export-name").GetString()).ToHashSet();
        Assert.Superset(created.ToHashSet(), names!);
        foreach (var vdisk in await fixture.Host.Api.ListVirtualDisksAsync())
        {
            Assert.Contains(vdisk.Name, names);
        }
    }

    [Fact]
    public async Task Json_reports_size_and_every_capability()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("info", "48MiB");
        Assert.Equal(fixture.Host.NbdUri(vdisk.Name), vdisk.NbdUri);

        var result = Check.Succeeded(await NbdClients.NbdInfoAsync(["--json", vdisk.NbdUri]), fixture.Host);
        using var doc = JsonDocument.Parse(result.Stdout);
        var root = doc.RootElement;
        Assert.Equal("newstyle-fixed", root.GetProperty("protocol").GetString());
        Assert.True(root.GetProperty("structured").GetBoolean(), "structured replies must be negotiated");
        var export = Assert.Single(root.GetProperty("exports").EnumerateArray().ToArray());
        Assert.Equal(vdisk.Name, export.GetProperty("export-name").GetString());
        Assert.Equal(48L << 20, export.GetProperty("export-size").GetInt64());
        Assert.Contains("base:allocation", export.GetProperty("contexts").EnumerateArray().Select(c => c.GetString()));
        Assert.False(export.GetProperty("is_read_only").GetBoolean());
        foreach (var flag in new[] { "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_cache" })
        {
            Assert.True(export.TryGetProperty(flag, out var value) && value.GetBoolean(), $"{flag} should be true:\n{result.Stdout}");
        }
    }

    [Fact]
    public async Task Unknown_export_is_refused()
    {
        var result = await NbdClients.NbdInfoAsync([fixture.Host.NbdUri("no-such-export")]);
        Assert.NotEqual(0, result.ExitCode);

        // The server keeps serving.
        var vdisk = await fixture.CreateVirtualDiskAsync("after-unknown", "16MiB");
        Check.Succeeded(await NbdClients.NbdInfoAsync(["--size", vdisk.NbdUri]), fixture.Host);
    }
}
