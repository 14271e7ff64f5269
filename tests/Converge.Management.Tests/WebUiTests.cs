using Xunit.Abstractions;

namespace Converge.Management.Tests;

/// <summary>
/// The web UI in a real headless Chromium against a real 3-host cluster: it shows the hosts and virtual disks, creates
/// a virtual disk through its form (with the admin token; a read-only token's attempt is refused in the page), and shows a component's host as unreachable and the
/// component as absent after that host is killed. Screenshots go to <c>tests/artifacts/</c>.
/// </summary>
public sealed class WebUiTests(ITestOutputHelper output)
{
    public static string ArtifactsDirectory
    {
        get
        {
            var dir = Environment.GetEnvironmentVariable("CONVERGE_TEST_ARTIFACTS") ?? Path.Combine(RepoPaths.RepoRoot, "tests", "artifacts");
            Directory.CreateDirectory(dir);
            return dir;
        }
    }

    [Fact]
    public async Task Dashboard_shows_the_cluster_creates_a_vdisk_and_shows_a_stopped_hosts_component_absent()
    {
        Assert.True(HeadlessChromium.Available, $"{HeadlessChromium.Binary} is missing: install Debian's chromium package (./test.sh does)");
        await using var cluster = await TestCluster.StartAsync(3);
        await cluster[0].Api.CreateVirtualDiskAsync("seed", "64MiB");
        await using var browser = await HeadlessChromium.StartAsync();

        await browser.NavigateAsync(cluster[0].ApiUrl + "/");
        await browser.WaitForAsync("document.body.dataset.loaded === 'true' && document.querySelectorAll('#hosts tbody tr[data-host]').length === 3", "three hosts");
        foreach (var host in new[] { "h1", "h2", "h3" })
        {
            Assert.Equal("yes", await Cell(browser, $"#hosts tr[data-host={host}] [data-field=reachable]"));
        }

        Assert.Equal("online", await Cell(browser, "#vdisks tr[data-vdisk=seed] [data-field=state]"));
        Assert.Equal("compliant", await Cell(browser, "#vdisks tr[data-vdisk=seed] [data-field=compliance]"));
        await browser.WaitForAsync("document.querySelectorAll('#layouts [data-layout=seed] .component').length === 3", "the layout of seed (2 replicas and a witness)");
        await browser.WaitForAsync("document.querySelectorAll('#health tbody tr').length >= 5", "the health checks");

        // Without the token the form is refused in the page, and nothing is created.
        await Submit(browser, "web1", "64MiB");
        await browser.WaitForAsync("document.querySelector('#message').textContent.includes('admin token')", "a message asking for the token");
        Assert.Null(await cluster[0].Api.TryGetVirtualDiskAsync("web1"));

        // A wrong token: the API's problem detail is shown, nothing is created.
        await EnterToken(browser, "cvg_wrong");
        await Submit(browser, "web1", "64MiB");
        await browser.WaitForAsync("document.querySelector('#message').textContent.includes('token is wrong')", "the 401 detail");
        Assert.Null(await cluster[0].Api.TryGetVirtualDiskAsync("web1"));

        // The right token: created, visible through the API and in the page.
        await EnterToken(browser, cluster.Token!);
        await Submit(browser, "web1", "64MiB");
        await browser.WaitForAsync("document.querySelector('#message').textContent.includes('created virtual disk web1')", "the created message");
        var created = await cluster[0].Api.GetVirtualDiskAsync("web1");
        Assert.Equal(64L << 20, created.SizeBytes);
        Assert.Equal("default", created.Policy);
        await browser.WaitForAsync("document.querySelector('#vdisks tr[data-vdisk=web1]') !== null", "web1 in the table");
        await SaveScreenshotAsync(browser, "webui-cluster.png");

        // A read-only token: the page still shows everything, and its change is refused with the 403 detail, nothing made.
        var viewer = await cluster[0].Api.CreateTokenAsync("viewer", "read-only");
        await EnterToken(browser, viewer.Token);
        await Submit(browser, "web2", "64MiB");
        await browser.WaitForAsync(
            "document.querySelector('#message').textContent.includes('refused') && document.querySelector('#message').textContent.includes('read-only')",
            "the 403 detail");
        Assert.Null(await cluster[0].Api.TryGetVirtualDiskAsync("web2"));
        await browser.WaitForAsync("document.querySelector('#updated').textContent.startsWith('updated')", "a refresh with the read-only token");

        // Stop (SIGKILL) a host other than the one serving the page that holds a data component of web1.
        var victim = created.Layout!.First(c => c.Role == "data" && c.HostName != "h1");
        var victimHost = cluster.Hosts.Single(h => h.Name == victim.HostName);
        output.WriteLine($"killing {victimHost.Name}, which holds component {victim.Id} of web1");
        await victimHost.KillAsync();

        var component = $"#layouts [data-layout=web1] .component[data-component-id='{victim.Id}']";
        await browser.WaitForAsync($"document.querySelector(\"{component}\").dataset.hostReachable === 'false'", "the component's host as unreachable", TimeSpan.FromSeconds(60));
        await browser.WaitForAsync($"document.querySelector(\"#hosts tr[data-host={victimHost.Name}] [data-field=reachable]\").textContent === 'no'", "the host as not reachable", TimeSpan.FromSeconds(60));

        // The component's state as the API reports it (issue 4: a silent host's components are committed absent by the
        // metadata leader's heartbeat monitor). The page shows data-state from the same API.
        await TestCluster.Eventually(
            async () => (await cluster[0].Api.GetVirtualDiskAsync("web1")).Layout!.Single(c => c.Id == victim.Id).State == "absent",
            "the API to report the stopped host's component absent",
            TimeSpan.FromSeconds(60));
        await browser.WaitForAsync($"document.querySelector(\"{component}\").dataset.state === 'absent'", "the component as absent", TimeSpan.FromSeconds(30));
        Assert.Contains("absent", await browser.EvaluateAsync<string>($"document.querySelector(\"{component} .component-state\").textContent"), StringComparison.Ordinal);
        await SaveScreenshotAsync(browser, "webui-host-stopped.png");
    }

    private async Task SaveScreenshotAsync(HeadlessChromium browser, string name)
    {
        var png = await browser.ScreenshotAsync();
        Assert.True(png.Length > 1000 && png[1] == 'P' && png[2] == 'N' && png[3] == 'G', "not a PNG");
        var path = Path.Combine(ArtifactsDirectory, name);
        await File.WriteAllBytesAsync(path, png);
        output.WriteLine($"screenshot: {path}");
        Console.WriteLine($"web UI screenshot: {path}");
    }

    internal static async Task<string> Cell(HeadlessChromium browser, string selector) =>
        (await browser.EvaluateAsync<string>($"(document.querySelector({HeadlessChromium.Js(selector)}) || {{}}).textContent || ''"))!.Trim();

    private static async Task EnterToken(HeadlessChromium browser, string token) =>
        await browser.EvaluateAsync(
            $"document.querySelector('#token').value = {HeadlessChromium.Js(token)}; document.querySelector('#token-form button').click(); true");

    private static async Task Submit(HeadlessChromium browser, string name, string size)
    {
        await browser.EvaluateAsync("document.querySelector('#message').textContent = ''; true");
        await browser.EvaluateAsync(
            "(() => { const f = document.querySelector('#create-vdisk');" +
            $" f.elements['name'].value = {HeadlessChromium.Js(name)}; f.elements['size'].value = {HeadlessChromium.Js(size)};" +
            " f.querySelector('button').click(); return true; })()");
    }
}
