using System.Globalization;

namespace Converge.Cluster.Tests;

/// <summary>
/// A network namespace of the test's own, joined to the test's namespace by a veth pair on a random
/// <c>10.200-250.x.y/30</c> subnet: a host started inside (<see cref="ClusterHost.NetworkNamespace"/>, listening on
/// <see cref="InsideAddress"/>) talks to the hosts outside (listening on <see cref="OutsideAddress"/>) only through the
/// pair, so <see cref="CutAsync"/> (link down) cuts it off and <see cref="HealAsync"/> joins it again. Needs root.
/// Disposing deletes the pair and the namespace, also after a failure.
/// </summary>
public sealed class NetworkPartition : IAsyncDisposable
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(20);

    private NetworkPartition()
    {
        var tag = Guid.NewGuid().ToString("N")[..6];
        Namespace = "cvg-" + tag;
        OutsideLink = "cvg" + tag + "o";
        InsideLink = "cvg" + tag + "i";
        var a = Random.Shared.Next(200, 251);
        var b = Random.Shared.Next(0, 256);
        var c = Random.Shared.Next(0, 64) * 4;
        OutsideAddress = string.Create(CultureInfo.InvariantCulture, $"10.{a}.{b}.{c + 1}");
        InsideAddress = string.Create(CultureInfo.InvariantCulture, $"10.{a}.{b}.{c + 2}");
    }

    public string Namespace { get; }

    public string OutsideLink { get; }

    public string InsideLink { get; }

    public string OutsideAddress { get; }

    public string InsideAddress { get; }

    public bool IsCut { get; private set; }

    public static async Task<NetworkPartition> CreateAsync()
    {
        var net = new NetworkPartition();
        try
        {
            await RunAsync("ip", "netns", "add", net.Namespace);
            await RunAsync("ip", "link", "add", net.OutsideLink, "type", "veth", "peer", "name", net.InsideLink, "netns", net.Namespace);
            await RunAsync("ip", "addr", "add", net.OutsideAddress + "/30", "dev", net.OutsideLink);
            await RunAsync("ip", "link", "set", net.OutsideLink, "up");
            await RunAsync("ip", "-n", net.Namespace, "addr", "add", net.InsideAddress + "/30", "dev", net.InsideLink);
            await RunAsync("ip", "-n", net.Namespace, "link", "set", net.InsideLink, "up");
            await RunAsync("ip", "-n", net.Namespace, "link", "set", "lo", "up");
            return net;
        }
        catch
        {
            await net.DisposeAsync();
            throw;
        }
    }

    /// <summary>Cuts the namespace off: both ends of the pair go down.</summary>
    public async Task CutAsync()
    {
        await RunAsync("ip", "link", "set", OutsideLink, "down");
        await RunAsync("ip", "-n", Namespace, "link", "set", InsideLink, "down");
        IsCut = true;
    }

    public async Task HealAsync()
    {
        await RunAsync("ip", "link", "set", OutsideLink, "up");
        await RunAsync("ip", "-n", Namespace, "link", "set", InsideLink, "up");
        IsCut = false;
    }

    /// <summary>Runs a program inside the namespace (e.g. an NBD client of the cut-off host).</summary>
    public Task<ToolResult> ExecAsync(string file, IEnumerable<string> args, TimeSpan timeout) =>
        Tool.RunAsync("ip", ["netns", "exec", Namespace, file, .. args], timeout, NbdClients.SystemPath);

    public async ValueTask DisposeAsync()
    {
        // Deleting one end deletes the pair; deleting the namespace removes whatever is left in it.
        await Tool.RunAsync("ip", ["link", "del", OutsideLink], CommandTimeout);
        await Tool.RunAsync("ip", ["netns", "del", Namespace], CommandTimeout);
    }

    private static async Task RunAsync(params string[] command) =>
        (await Tool.RunAsync(command[0], command.Skip(1), CommandTimeout)).EnsureSuccess();
}
