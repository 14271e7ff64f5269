using System.Globalization;

namespace Converge.Cluster.Tests;

/// <summary>
/// A small LAN of the test's own, as separate machines would see each other: a bridge in a namespace of its own, and
/// one namespace per member joined to it by a veth pair, each with its own address on a random <c>10.200-250.x.0/24</c>.
/// The test's own (root) namespace is joined too, at <see cref="TestAddress"/>, so the test can reach every member.
/// Needs root. Disposing deletes every namespace and pair, also after a failure.
/// </summary>
public sealed class NetworkLan : IAsyncDisposable
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(20);
    private readonly string tag = Guid.NewGuid().ToString("N")[..5];
    private readonly string prefix;
    private readonly List<string> namespaces = [];

    private NetworkLan()
    {
        prefix = string.Create(CultureInfo.InvariantCulture, $"10.{Random.Shared.Next(200, 251)}.{Random.Shared.Next(0, 256)}");
        Switch = "cvl-" + tag + "-sw";
        TestLink = "cvl" + tag + "t";
        TestAddress = prefix + ".254";
    }

    /// <summary>The namespace that holds the bridge.</summary>
    public string Switch { get; }

    /// <summary>The root namespace's end of its pair to the bridge.</summary>
    public string TestLink { get; }

    /// <summary>The test process's address on the LAN.</summary>
    public string TestAddress { get; }

    /// <summary>Member namespaces by name, with their addresses.</summary>
    public Dictionary<string, (string Namespace, string Address)> Members { get; } = [];

    /// <summary>Creates the bridge, joins the test's namespace, and one namespace per member name.</summary>
    public static async Task<NetworkLan> CreateAsync(IReadOnlyList<string> members)
    {
        var lan = new NetworkLan();
        try
        {
            await RunAsync("ip", "netns", "add", lan.Switch);
            lan.namespaces.Add(lan.Switch);
            await RunAsync("ip", "-n", lan.Switch, "link", "add", "br0", "type", "bridge");
            await RunAsync("ip", "-n", lan.Switch, "link", "set", "br0", "up");

            // The test's own end: a pair from the root namespace into the switch.
            await RunAsync("ip", "link", "add", lan.TestLink, "type", "veth", "peer", "name", "t0", "netns", lan.Switch);
            await RunAsync("ip", "-n", lan.Switch, "link", "set", "t0", "master", "br0", "up");
            await RunAsync("ip", "addr", "add", lan.TestAddress + "/24", "dev", lan.TestLink);
            await RunAsync("ip", "link", "set", lan.TestLink, "up");

            for (var i = 0; i < members.Count; i++)
            {
                var name = members[i];
                var ns = $"cvl-{lan.tag}-{i}";
                var address = string.Create(CultureInfo.InvariantCulture, $"{lan.prefix}.{i + 1}");
                await RunAsync("ip", "netns", "add", ns);
                lan.namespaces.Add(ns);
                var port = string.Create(CultureInfo.InvariantCulture, $"p{i}");
                await RunAsync("ip", "-n", lan.Switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns);
                await RunAsync("ip", "-n", lan.Switch, "link", "set", port, "master", "br0", "up");
                await RunAsync("ip", "-n", ns, "addr", "add", address + "/24", "dev", "eth0");
                await RunAsync("ip", "-n", ns, "link", "set", "eth0", "up");
                await RunAsync("ip", "-n", ns, "link", "set", "lo", "up");
                lan.Members[name] = (ns, address);
            }

            return lan;
        }
        catch
        {
            await lan.DisposeAsync();
            throw;
        }
    }

    /// <summary>Runs a program inside a member's namespace (a client on that machine).</summary>
    public Task<ToolResult> ExecAsync(string member, string file, IEnumerable<string> args, TimeSpan timeout) =>
        Tool.RunAsync("ip", ["netns", "exec", Members[member].Namespace, file, .. args], timeout, NbdClients.SystemPath);

    public async ValueTask DisposeAsync()
    {
        await Tool.RunAsync("ip", ["link", "del", TestLink], CommandTimeout);
        foreach (var ns in namespaces)
        {
            await Tool.RunAsync("ip", ["netns", "del", ns], CommandTimeout);
        }
    }

    private static async Task RunAsync(params string[] command) =>
        (await Tool.RunAsync(command[0], command.Skip(1), CommandTimeout)).EnsureSuccess();
}
