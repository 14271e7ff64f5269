using System.Diagnostics;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// A cluster of <see cref="ClusterHost"/>s in one temp directory: h1 founds it, the others join through h1's RPC port,
/// each with a join token made through h1's API.
/// </summary>
public sealed class TestCluster : IAsyncDisposable
{
    private readonly TempDir root = new("converge-cluster");

    public List<ClusterHost> Hosts { get; } = [];

    public ClusterHost this[int index] => Hosts[index];

    /// <summary>The cluster's admin token (made by h1 when it founded the cluster); every host's client sends it.</summary>
    public string? Token => Hosts.Count == 0 ? null : Hosts[0].Api.Token;

    public string TempPath(string name) => root.File(name);

    /// <param name="hostArgs">Extra <c>host run</c> arguments every host gets.</param>
    /// <param name="configure">Called for every host before its first start (address, namespace, more arguments).</param>
    public static async Task<TestCluster> StartAsync(
        int hosts, string diskSize = "512MiB", IReadOnlyList<string>? hostArgs = null, Action<ClusterHost>? configure = null)
    {
        var cluster = new TestCluster { HostArgs = hostArgs ?? [] };
        try
        {
            var first = cluster.NewHost("h1", diskSize);
            configure?.Invoke(first);
            first.Launch();
            await first.WaitReadyAsync();
            for (var i = 2; i <= hosts; i++)
            {
                var host = cluster.NewHost($"h{i}", diskSize);
                configure?.Invoke(host);
                host.Launch(first.RpcUrl, (await first.Api.CreateJoinTokenAsync()).Token);
                await host.WaitReadyAsync();
            }

            await cluster.WaitForHostsAsync(hosts);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>Extra <c>host run</c> arguments every host of this cluster gets.</summary>
    public IReadOnlyList<string> HostArgs { get; private init; } = [];

    public ClusterHost NewHost(string name, string diskSize)
    {
        var host = new ClusterHost(root.Path, name, diskSize);
        host.ExtraArgs.AddRange(HostArgs);
        host.Api.Token = Token;
        Hosts.Add(host);
        return host;
    }

    /// <summary>Starts one more host that joins through h1 and waits until every host lists it.</summary>
    public async Task<ClusterHost> AddHostAsync(string diskSize)
    {
        var host = NewHost($"h{Hosts.Count + 1}", diskSize);
        host.Launch(Hosts[0].RpcUrl, (await Hosts[0].Api.CreateJoinTokenAsync()).Token);
        await host.WaitReadyAsync();
        await WaitForHostsAsync(Hosts.Count);
        return host;
    }

    /// <summary>Every running host lists <paramref name="count"/> reachable hosts with exactly one leader.</summary>
    public Task WaitForHostsAsync(int count) => Eventually(async () =>
    {
        foreach (var host in Hosts.Where(h => h.IsServing))
        {
            var hosts = await host.Api.ListHostsAsync();
            if (hosts.Count != count || !hosts.All(h => h.Reachable) || hosts.Count(h => h.Leader) != 1)
            {
                return false;
            }
        }

        return true;
    }, $"every host to list {count} reachable hosts and one leader");

    public async Task RestartAllAsync()
    {
        foreach (var host in Hosts)
        {
            Assert.Equal(0, await host.StopAsync());
        }

        foreach (var host in Hosts)
        {
            host.Launch();
        }

        await Task.WhenAll(Hosts.Select(h => h.WaitReadyAsync()));
        await WaitForHostsAsync(Hosts.Count);
    }

    public static async Task Eventually(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var stopwatch = Stopwatch.StartNew();
        Exception? last = null;
        while (stopwatch.Elapsed < (timeout ?? TimeSpan.FromSeconds(60)))
        {
            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or TaskCanceledException)
            {
                last = e;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"timed out waiting for {what}" + (last is null ? string.Empty : $" (last error: {last.Message})"));
    }

    public async ValueTask DisposeAsync()
    {
        await Task.WhenAll(Hosts.Select(h => h.DisposeAsync().AsTask()));
        root.Dispose();
    }
}
