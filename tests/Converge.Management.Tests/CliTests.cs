using System.Text.Json;
using Converge.Management.Contracts;
using Xunit.Abstractions;

namespace Converge.Management.Tests;

/// <summary>
/// The <c>converge</c> CLI against a real cluster: every management command with <c>--json</c>, tokens and exit codes;
/// and <c>converge status --json</c>, the API and the web UI (read from the page's DOM) agree on the same cluster.
/// </summary>
public sealed class CliTests(ApiClusterFixture fixture, ITestOutputHelper output) : IClassFixture<ApiClusterFixture>
{
    private TestCluster Cluster => fixture.Cluster;

    [Fact]
    public async Task Status_the_api_and_the_web_ui_agree()
    {
        await Cluster[0].Api.PutPolicyAsync("solo", new PolicyInfo { FailuresToTolerate = 0 });
        await Cluster[0].Api.CreateVirtualDiskAsync(new CreateVirtualDiskRequest { Name = "beta", Size = JsonSerializer.SerializeToElement("32MiB"), Policy = "solo" });

        await TestCluster.Eventually(
            async () => (await Task.WhenAll(Cluster.Hosts.Select(h => h.Api.TryGetVirtualDiskAsync("beta")))).All(v => v is not null),
            "every host to have applied beta");
        var api = (await Cluster[1].Api.TryGetClusterAsync())!;
        var cli = JsonSerializer.Deserialize(Ok(await Cli(Cluster[2], "status", "--json")).Stdout, ContractsJsonContext.Default.StatusInfo)!;
        var fromCli = cli.Cluster!;

        Assert.Equal(Hosts(api), Hosts(fromCli));
        Assert.Equal(Vdisks(api), Vdisks(fromCli));
        Assert.Equal(api.CapacityBytes, fromCli.CapacityBytes);
        Assert.Equal(api.ProvisionedBytes, fromCli.ProvisionedBytes);
        Assert.Equal(api.Disks.Select(d => (d.HostName, d.Path, d.CapacityBytes, d.ProvisionedBytes)), fromCli.Disks.Select(d => (d.HostName, d.Path, d.CapacityBytes, d.ProvisionedBytes)));

        Assert.True(HeadlessChromium.Available, $"{HeadlessChromium.Binary} is missing: install Debian's chromium package (./test.sh does)");
        await using var browser = await HeadlessChromium.StartAsync();
        await browser.NavigateAsync(Cluster[0].ApiUrl + "/");
        await browser.WaitForAsync(
            "document.body.dataset.loaded === 'true' && document.querySelector('#vdisks tr[data-vdisk=beta]') !== null", "the cluster with beta");
        var ui = (await browser.EvaluateAsync(
            """
            JSON.stringify({
              hosts: [...document.querySelectorAll('#hosts tbody tr[data-host]')].map(r =>
                [r.dataset.host, r.querySelector('[data-field=state] span').textContent, r.querySelector('[data-field=reachable]').textContent].join(' ')),
              vdisks: [...document.querySelectorAll('#vdisks tbody tr[data-vdisk]')].map(r =>
                [r.dataset.vdisk, r.querySelector('[data-field=size]').dataset.bytes, r.querySelector('[data-field=policy]').textContent,
                 r.querySelector('[data-field=state]').textContent, r.querySelector('[data-field=compliance] span').textContent].join(' ')),
              capacity: document.querySelector('[data-field=capacity]').dataset.capacity,
              provisioned: document.querySelector('[data-field=capacity]').dataset.provisioned,
              components: Object.fromEntries([...document.querySelectorAll('#layouts [data-layout]')].map(l =>
                [l.dataset.layout, [...l.querySelectorAll('.component')].map(c => c.dataset.host + ':' + c.dataset.state).sort().join(',')])),
            })
            """))!.GetValue<string>();
        output.WriteLine(ui);
        var page = JsonDocument.Parse(ui).RootElement;
        Assert.Equal(Hosts(api), page.GetProperty("hosts").EnumerateArray().Select(e => e.GetString()!).ToList());
        Assert.Equal(Vdisks(api), page.GetProperty("vdisks").EnumerateArray().Select(e => e.GetString()!).ToList());
        Assert.Equal(api.CapacityBytes.ToString(System.Globalization.CultureInfo.InvariantCulture), page.GetProperty("capacity").GetString());
        Assert.Equal(api.ProvisionedBytes.ToString(System.Globalization.CultureInfo.InvariantCulture), page.GetProperty("provisioned").GetString());
        foreach (var v in api.VirtualDisks)
        {
            Assert.Equal(
                string.Join(',', v.Layout!.Select(c => c.HostName + ":" + c.State).Order(StringComparer.Ordinal)),
                page.GetProperty("components").GetProperty(v.Name).GetString());
        }

        await Cluster[0].Api.DeleteVirtualDiskAsync("beta");
        await Cluster[0].Api.DeletePolicyAsync("solo");
    }

    [Fact]
    public async Task Every_management_command_with_json_tokens_and_exit_codes()
    {
        var h1 = Cluster[0];
        var h2 = Cluster[1];

        var health = JsonSerializer.Deserialize(Ok(await Cli(h1, "health", "--json")).Stdout, ContractsJsonContext.Default.HealthReport)!;
        Assert.Equal("ok", health.Status);
        Assert.Contains("Host connectivity", Ok(await Cli(h1, "health")).Stdout, StringComparison.Ordinal);

        var events = JsonSerializer.Deserialize(Ok(await Cli(h2, "events", "--json", "--limit", "5")).Stdout, ContractsJsonContext.Default.IReadOnlyListEventInfo)!;
        Assert.InRange(events.Count, 1, 5);
        Exit(2, await Cli(h1, "events", "--limit", "0"));

        var resync = JsonSerializer.Deserialize(Ok(await Cli(h1, "resync", "--json")).Stdout, ContractsJsonContext.Default.ResyncReport)!;
        Assert.Empty(resync.Copies);
        Assert.Contains("no resync", Ok(await Cli(h1, "resync", "--follow")).Stdout, StringComparison.Ordinal);

        var domains = JsonSerializer.Deserialize(Ok(await Cli(h1, "fault-domains", "--json")).Stdout, ContractsJsonContext.Default.IReadOnlyListFaultDomainInfo)!;
        Assert.Equal(["h1", "h2", "h3"], domains.Select(d => d.Name));
        var compliance = JsonSerializer.Deserialize(Ok(await Cli(h1, "compliance", "--json")).Stdout, ContractsJsonContext.Default.IReadOnlyListComplianceInfo)!;
        Assert.Equal("compliant", compliance.Single(c => c.VirtualDisk == "alpha").Compliance);
        var layout = JsonSerializer.Deserialize(Ok(await Cli(h1, "vdisk", "layout", "alpha", "--json")).Stdout, ContractsJsonContext.Default.IReadOnlyListComponentInfo)!;
        Assert.Equal(3, layout.Count);
        Assert.Contains(Cluster.Hosts.Select(h => h.ApiUrl + "/metrics").First(), Ok(await Cli(h1, "metrics")).Stdout, StringComparison.Ordinal);
        Assert.Contains("converge_disk_capacity_bytes", Ok(await Cli(h1, "metrics", "--raw")).Stdout, StringComparison.Ordinal);
        Assert.Contains(h2.ApiUrl + "/", Ok(await Cli(h1, "ui")).Stdout, StringComparison.Ordinal);

        // Changes: the CLI finds the founder's token in h1's data directory (also when asking h2: h1 is on this machine).
        Ok(await Cli(h1, "policy", "create", "gold", "--ftt", "1", "--iops-limit", "100"));
        var gold = JsonSerializer.Deserialize(Ok(await Cli(h1, "policy", "update", "gold", "--iops-limit", "200", "--reservation", "5", "--json")).Stdout, ContractsJsonContext.Default.PolicyInfo)!;
        Assert.Equal((1, 200, 5), (gold.FailuresToTolerate, gold.IopsLimit, gold.ObjectSpaceReservationPercent));
        Assert.Equal(200, JsonSerializer.Deserialize(Ok(await Cli(h2, "policy", "show", "gold", "--json")).Stdout, ContractsJsonContext.Default.PolicyInfo)!.IopsLimit);

        var wrong = Exit(1, await Cli(h1, "vdisk", "create", "gamma", "--size", "32MiB", "--token", "cvg_wrong"));
        Assert.Contains("token is wrong", wrong.Stderr, StringComparison.Ordinal);
        Assert.Null(await h1.Api.TryGetVirtualDiskAsync("gamma"));
        Ok(await Cli(h2, "vdisk", "create", "gamma", "--size", "32MiB"));
        Ok(await Cli(h2, "vdisk", "resize", "gamma", "--size", "48MiB", "--token", Cluster.Token!));

        var changed = JsonSerializer.Deserialize(Ok(await Cli(h1, "vdisk", "set-policy", "gamma", "--policy", "gold", "--json")).Stdout, ContractsJsonContext.Default.VirtualDiskInfo)!;
        Assert.Equal("gold", changed.Policy);
        Ok(await Cli(h1, "policy", "create", "wide", "--ftt", "1", "--stripe-width", "2"));
        Assert.Contains("re-layout is not built", Exit(1, await Cli(h1, "vdisk", "set-policy", "gamma", "--policy", "wide")).Stderr, StringComparison.Ordinal);
        Exit(2, await Cli(h1, "vdisk", "set-policy", "gamma", "--policy", "Not A Name"));

        // Maintenance.
        Exit(2, await Cli(h1, "host", "maintenance", "enter", "h2", "--mode", "sideways"));
        Assert.Contains("not in the cluster", Exit(1, await Cli(h1, "host", "maintenance", "enter", "h9")).Stderr, StringComparison.Ordinal);
        var entered = JsonSerializer.Deserialize(Ok(await Cli(h1, "host", "maintenance", "enter", "h2", "--mode", "no-data-migration", "--json")).Stdout, ContractsJsonContext.Default.ClusterHostInfo)!;
        Assert.Equal(("maintenance", "no-data-migration"), (entered.State, entered.MaintenanceMode));
        var shown = JsonSerializer.Deserialize(Ok(await Cli(h1, "host", "show", "h2", "--json")).Stdout, ContractsJsonContext.Default.ClusterHostInfo)!;
        Assert.Equal("maintenance", shown.State);
        Assert.Equal(4, Exit(4, await Cli(h1, "health")).ExitCode);
        Ok(await Cli(h1, "host", "maintenance", "exit", "h2"));
        Assert.Contains("is not in maintenance", Exit(1, await Cli(h1, "host", "maintenance", "exit", "h2")).Stderr, StringComparison.Ordinal);

        // Decommission and rebalance: refusals change nothing; a dry run only plans.
        Assert.Contains("cannot decommission host h2", Exit(1, await Cli(h1, "host", "decommission", "h2")).Stderr, StringComparison.Ordinal);
        Assert.Contains("not in the cluster", Exit(1, await Cli(h1, "host", "decommission", "h9")).Stderr, StringComparison.Ordinal);
        Assert.Equal("active", (await h1.Api.GetClusterHostAsync("h2")).State);
        Assert.Contains("is not in the cluster", Exit(1, await Cli(h1, "disk", "decommission", "0123456789abcdef")).Stderr, StringComparison.Ordinal);
        var plan = JsonSerializer.Deserialize(Ok(await Cli(h2, "cluster", "rebalance", "--dry-run", "--json")).Stdout, ContractsJsonContext.Default.RebalanceInfo)!;
        Assert.NotEqual("running", plan.State);
        Assert.NotEqual("running", (await h1.Api.GetRebalanceAsync()).State);
        Exit(2, await Cli(h1, "cluster", "rebalance", "--threshold", "0"));
        Exit(2, await Cli(h1, "cluster", "rebalance", "--dry-run", "--stop"));

        Ok(await Cli(h1, "vdisk", "delete", "gamma"));
        Ok(await Cli(h1, "policy", "delete", "gold"));
        Ok(await Cli(h1, "policy", "delete", "wide"));
        Exit(3, await NbdClients.ConvergeAsync(["health", "--api", "http://127.0.0.1:1"]));
    }

    private static Task<ToolResult> Cli(ClusterHost host, params string[] args) =>
        NbdClients.ConvergeAsync([.. args, "--api", host.ApiUrl]);

    private static ToolResult Ok(ToolResult result) => Exit(0, result);

    private static ToolResult Exit(int expected, ToolResult result)
    {
        Assert.True(result.ExitCode == expected, $"expected exit code {expected}\n{result}");
        return result;
    }

    private static List<string> Hosts(ClusterStatusInfo status) =>
        [.. status.Hosts.Select(h => $"{h.Name} {h.State} {(h.Reachable ? "yes" : "no")}")];

    private static List<string> Vdisks(ClusterStatusInfo status) =>
        [.. status.VirtualDisks.Select(v => $"{v.Name} {v.SizeBytes} {v.Policy} {v.State} {v.Compliance}")];
}
