using System.Globalization;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

public sealed class ClusterTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Three_hosts_mirror_and_stripe_data_and_keep_it_across_a_full_restart()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var hosts = await cluster[1].Api.ListHostsAsync();
        Assert.Equal(["h1", "h2", "h3"], hosts.Select(h => h.Name));
        Assert.All(hosts, h => Assert.True(h.Voter));
        Assert.Single(hosts, h => h.Leader);

        var api = cluster[0].Api;
        await api.PutPolicyAsync("ftt0", new PolicyInfo { FailuresToTolerate = 0 });
        await api.PutPolicyAsync("ftt0-s2", new PolicyInfo { FailuresToTolerate = 0, StripeWidth = 2 });
        await api.PutPolicyAsync("ftt1-s2", new PolicyInfo { FailuresToTolerate = 1, StripeWidth = 2 });

        (string Name, string? Policy, long Size, int Replicas, int Stripes)[] cases =
        [
            ("r0", "ftt0", 16 * MiB, 1, 1),
            ("r0s2", "ftt0-s2", 24 * MiB, 1, 2),
            ("m1", null, 32 * MiB, 2, 1),
            ("m1s2", "ftt1-s2", 40 * MiB, 2, 2),
        ];

        var images = new Dictionary<string, string>();
        foreach (var (name, policy, size, replicas, stripes) in cases)
        {
            var created = await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create(name, size) with { Policy = policy });
            Assert.Equal(policy ?? "default", created.Policy);
            Assert.Equal("compliant", created.Compliance);
            Assert.Equal(VirtualDiskStates.Online, created.State);
            var data = created.Layout!.Where(c => c.Role == "data").ToList();
            Assert.Equal(replicas, data.Select(c => c.Replica).Distinct().Count());
            Assert.Equal(stripes, data.Select(c => c.Stripe).Distinct().Count());
            Assert.Equal(replicas - 1, created.Layout!.Count(c => c.Role == "witness"));

            // Replicas and witnesses on distinct hosts.
            var domains = data.GroupBy(c => c.Replica).Select(g => g.First().HostName).Concat(created.Layout!.Where(c => c.Role == "witness").Select(c => c.HostName)).ToList();
            Assert.Equal(domains.Count, domains.Distinct().Count());

            var image = cluster.TempPath(name + ".img");
            NbdClients.WriteRandomFile(image, size, seed: name.GetHashCode(StringComparison.Ordinal));
            images[name] = image;
            await WriteThroughAsync(cluster[0], name, image);
            await CompareThroughAsync(cluster[1], name, image);
            await CompareThroughAsync(cluster[2], name, image);
            await AssertReplicasIdenticalAsync(cluster, name);
        }

        await cluster.RestartAllAsync();

        var after = await cluster[2].Api.ListVirtualDisksAsync();
        Assert.Equal(cases.Select(c => c.Name).Order(StringComparer.Ordinal), after.Select(v => v.Name));
        Assert.Contains(await cluster[1].Api.ListPoliciesAsync(), p => p.Name == "ftt1-s2" && p.StripeWidth == 2 && p.FailuresToTolerate == 1);
        foreach (var (name, _, _, _, _) in cases)
        {
            await CompareThroughAsync(cluster[2], name, images[name]);
            await CompareThroughAsync(cluster[1], name, images[name]);
            await AssertReplicasIdenticalAsync(cluster, name);
        }

        // A write after the restart reaches every replica again.
        await WriteThroughAsync(cluster[1], "m1", images["r0"], length: 16 * MiB);
        await AssertReplicasIdenticalAsync(cluster, "m1");
    }

    [Fact]
    public async Task Impossible_or_invalid_requests_are_refused_and_create_nothing()
    {
        await using var cluster = await TestCluster.StartAsync(3);
        var api = cluster[1].Api;
        await api.PutPolicyAsync("ftt2", new PolicyInfo { FailuresToTolerate = 2 });
        await api.PutPolicyAsync("ftt0", new PolicyInfo { FailuresToTolerate = 0 });

        var ftt2 = await Assert.ThrowsAsync<ConvergeApiException>(() =>
            api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("big", "64MiB") with { Policy = "ftt2" }));
        Assert.Equal(400, ftt2.Status);
        Assert.Contains("FTT=2 with RAID-1 needs 5 fault domains; cluster has 3", ftt2.Detail, StringComparison.Ordinal);

        var unknownPolicy = await Assert.ThrowsAsync<ConvergeApiException>(() =>
            api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("x", "64MiB") with { Policy = "nope" }));
        Assert.Equal(404, unknownPolicy.Status);
        Assert.Contains("policy 'nope' does not exist", unknownPolicy.Detail, StringComparison.Ordinal);

        var tooBig = await Assert.ThrowsAsync<ConvergeApiException>(() =>
            api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("huge", "4GiB") with { Policy = "ftt0" }));
        Assert.Equal(507, tooBig.Status);
        Assert.Contains("capacity", tooBig.Detail, StringComparison.Ordinal);

        var badPolicy = await Assert.ThrowsAsync<ConvergeApiException>(() => api.PutPolicyAsync("bad", new PolicyInfo { FailuresToTolerate = 7 }));
        Assert.Equal(400, badPolicy.Status);
        Assert.Contains("failures to tolerate", badPolicy.Detail, StringComparison.Ordinal);

        var cli = await NbdClients.ConvergeAsync(["--api", cluster[2].ApiUrl, "vdisk", "create", "cli", "--size", "64MiB", "--policy", "ftt2"]);
        Assert.Equal(1, cli.ExitCode);
        Assert.Contains("needs 5 fault domains", cli.Stderr, StringComparison.Ordinal);

        Assert.Empty(await api.ListVirtualDisksAsync());
        await AssertNoComponentsAsync(cluster);

        await api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("x", "16MiB") with { Policy = "ftt0" });
        var duplicate = await Assert.ThrowsAsync<ConvergeApiException>(() => cluster[2].Api.CreateVirtualDiskAsync("x", "16MiB"));
        Assert.Equal(409, duplicate.Status);
        Assert.Single(await api.ListVirtualDisksAsync());

        Assert.Equal(404, (await Assert.ThrowsAsync<ConvergeApiException>(() => api.GetVirtualDiskAsync("missing"))).Status);
        Assert.Equal(404, (await Assert.ThrowsAsync<ConvergeApiException>(() => api.DeleteVirtualDiskAsync("missing"))).Status);
        var inUse = await Assert.ThrowsAsync<ConvergeApiException>(() => api.DeletePolicyAsync("ftt0"));
        Assert.Equal(409, inUse.Status);

        await cluster[2].Api.DeleteVirtualDiskAsync("x");
        Assert.Empty(await cluster[2].Api.ListVirtualDisksAsync());
        await AssertNoComponentsAsync(cluster);
        await api.DeletePolicyAsync("ftt0");
        Assert.DoesNotContain(await api.ListPoliciesAsync(), p => p.Name == "ftt0");

        // Other hosts apply the change moments later (display reads use each host's applied state).
        await TestCluster.Eventually(
            async () => (await cluster[0].Api.ListPoliciesAsync()).All(p => p.Name != "ftt0"), "h1 to see the policy deleted");
    }

    [Fact]
    public async Task Added_hosts_take_part_as_metadata_clients_and_ftt2_uses_five()
    {
        await using var cluster = await TestCluster.StartAsync(3);

        // The fourth host has the roomiest disks: an unmirrored virtual disk lands on it.
        var h4 = await cluster.AddHostAsync("2GiB");
        var listed = await cluster[0].Api.ListHostsAsync();
        Assert.False(listed.Single(h => h.Name == "h4").Voter);
        Assert.Equal(3, listed.Count(h => h.Voter));
        await cluster[0].Api.PutPolicyAsync("ftt0", new PolicyInfo { FailuresToTolerate = 0 });
        var onH4 = await h4.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("roomy", 64 * MiB) with { Policy = "ftt0" });
        Assert.All(onH4.Layout!, c => Assert.Equal("h4", c.HostName));
        var image = cluster.TempPath("roomy.img");
        NbdClients.WriteRandomFile(image, 64 * MiB, seed: 4);
        await WriteThroughAsync(cluster[1], "roomy", image);
        await CompareThroughAsync(h4, "roomy", image);
        await CompareThroughAsync(cluster[0], "roomy", image);

        // Five fault domains: FTT=2 (3 replicas + 2 witnesses) becomes possible.
        var h5 = await cluster.AddHostAsync("1GiB");
        await h5.Api.PutPolicyAsync("ftt2", new PolicyInfo { FailuresToTolerate = 2 });
        var ftt2 = await h5.Api.CreateVirtualDiskAsync(CreateVirtualDiskRequest.Create("triple", 32 * MiB) with { Policy = "ftt2" });
        Assert.Equal(5, ftt2.Layout!.Select(c => c.HostName).Distinct().Count());
        Assert.Equal(3, ftt2.Layout!.Count(c => c.Role == "data"));
        Assert.Equal("compliant", ftt2.Compliance);
        var tripleImage = cluster.TempPath("triple.img");
        NbdClients.WriteRandomFile(tripleImage, 32 * MiB, seed: 5);
        await WriteThroughAsync(h5, "triple", tripleImage);
        await CompareThroughAsync(cluster[0], "triple", tripleImage);
        await CompareThroughAsync(h4, "triple", tripleImage);
        await AssertReplicasIdenticalAsync(cluster, "triple");
    }

    internal static async Task WriteThroughAsync(ClusterHost host, string vdisk, string image, long? length = null)
    {
        var source = image;
        if (length is { } l)
        {
            source = image + ".part";
            await using (var input = File.OpenRead(image))
            await using (var output = File.Create(source))
            {
                var buffer = new byte[l];
                await input.ReadExactlyAsync(buffer);
                await output.WriteAsync(buffer);
            }
        }

        (await NbdClients.QemuImgAsync(["convert", "-n", "-f", "raw", "-O", "raw", source, host.NbdUri(vdisk)], TimeSpan.FromMinutes(2))).EnsureSuccess();
    }

    internal static async Task CompareThroughAsync(ClusterHost host, string vdisk, string image)
    {
        var result = await NbdClients.QemuImgAsync(["compare", "-f", "raw", "-F", "raw", image, host.NbdUri(vdisk)], TimeSpan.FromMinutes(2));
        Assert.True(result.ExitCode == 0, $"{vdisk} through {host.Name} differs from {image}:\n{result}");
    }

    /// <summary>For every stripe piece, the components of all replicas hold the same bytes (SHA-256 from each host's local store).</summary>
    internal static async Task AssertReplicasIdenticalAsync(TestCluster cluster, string vdisk)
    {
        var info = await cluster[0].Api.GetVirtualDiskAsync(vdisk);
        var data = info.Layout!.Where(c => c.Role == "data").ToList();
        foreach (var piece in data.GroupBy(c => (c.Stripe, c.StripeOffset)))
        {
            var digests = new List<string>();
            foreach (var component in piece)
            {
                var host = cluster.Hosts.Single(h => h.Name == component.HostName);
                var digest = await host.RpcApi.GetComponentDigestAsync(component.Id);
                Assert.Equal(component.Length, digest.SizeBytes);
                digests.Add(digest.Sha256);
            }

            Assert.Equal(info.Layout!.Count(c => c.Role == "data") / data.Select(c => (c.Stripe, c.StripeOffset)).Distinct().Count(), digests.Count);
            Assert.True(digests.Distinct().Count() == 1, $"{vdisk} stripe {piece.Key.Stripe.ToString(CultureInfo.InvariantCulture)}: replicas differ ({string.Join(", ", digests)})");
        }
    }

    private static async Task AssertNoComponentsAsync(TestCluster cluster)
    {
        foreach (var host in cluster.Hosts)
        {
            Assert.All(await host.Api.ListDisksAsync(), d => Assert.Equal(0, d.ComponentCount));
        }
    }
}
