using System.Globalization;

namespace Converge.Host.Tests;

/// <summary>Many exports and many clients at once on one daemon.</summary>
public sealed class ConcurrencyTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private const int Exports = 8;
    private const int ClientsPerExport = 3;

    [Fact]
    public async Task Many_exports_and_concurrent_clients_keep_their_data_apart()
    {
        var vdisks = new List<string>();
        for (var i = 0; i < Exports; i++)
        {
            vdisks.Add((await fixture.CreateVirtualDiskAsync("many", "32MiB")).NbdUri);
        }

        // Every client writes its own pattern into its own 8 MiB slice, concurrently with all the others.
        var writers = new List<Task<ToolResult>>();
        for (var e = 0; e < Exports; e++)
        {
            for (var c = 0; c < ClientsPerExport; c++)
            {
                writers.Add(NbdClients.QemuIoAsync(vdisks[e],
                [
                    $"write -P {Pattern(e, c)} {Slice(c)} 4M",
                    $"write -P {Pattern(e, c)} {Slice(c) + (4 << 20)} 4M",
                    "flush",
                    $"read -P {Pattern(e, c)} {Slice(c)} 8M",
                ]));
            }
        }

        foreach (var result in await Task.WhenAll(writers))
        {
            Check.Succeeded(result, fixture.Host);
        }

        // Then many readers at once, each checking every slice of one export.
        var readers = new List<Task<ToolResult>>();
        for (var e = 0; e < Exports; e++)
        {
            for (var r = 0; r < 2; r++)
            {
                var commands = Enumerable.Range(0, ClientsPerExport).Select(c => $"read -P {Pattern(e, c)} {Slice(c)} 8M").ToList();
                commands.Add($"read -P 0 {Slice(ClientsPerExport)} 8M");
                readers.Add(NbdClients.QemuIoAsync(vdisks[e], commands));
            }
        }

        foreach (var result in await Task.WhenAll(readers))
        {
            Check.Succeeded(result, fixture.Host);
        }

        var list = Check.Succeeded(await NbdClients.NbdInfoAsync(["--list", $"nbd://{fixture.Host.NbdEndpoint}"]), fixture.Host);
        foreach (var uri in vdisks)
        {
            Assert.Contains($"export=\"{uri[(uri.LastIndexOf('/') + 1)..]}\"", list.Stdout, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Concurrent_fio_jobs_on_one_export_with_multi_conn()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("multiconn", "64MiB");

        // Four connections to the same export, each verifying its own 16 MiB region.
        var result = await NbdClients.FioAsync(
        [
            "--name=multi",
            "--ioengine=nbd",
            $"--uri={vdisk.NbdUri}",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=8",
            "--numjobs=4",
            "--size=16M",
            "--offset_increment=16M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_dump=0",
        ], TimeSpan.FromMinutes(5));
        Check.Succeeded(result, fixture.Host);
        Assert.DoesNotContain("verify:", result.Stdout + result.Stderr, StringComparison.OrdinalIgnoreCase);
    }

    private static string Pattern(int export, int client) =>
        "0x" + (0x10 + (export * ClientsPerExport) + client).ToString("x2", CultureInfo.InvariantCulture);

    private static long Slice(int client) => (long)client * (8 << 20);
}
