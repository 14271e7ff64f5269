using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Converge.Management.Contracts;

namespace Converge.Management.Tests;

/// <summary>
/// The management API attacked as a browser page, a read-only client and a token thief would, on a real 3-host
/// cluster: cross-site-style requests, Origin and Host mismatches, read-only tokens on changes, revoked and rotated
/// tokens; and no answer carries a token's hash or salt.
/// </summary>
public sealed class ApiSecurityTests(ApiClusterFixture fixture) : IClassFixture<ApiClusterFixture>
{
    private TestCluster Cluster => fixture.Cluster;

    private ClusterHost H1 => Cluster[0];

    [Fact]
    public async Task Cross_site_style_requests_are_refused_and_change_nothing()
    {
        var before = await SnapshotAsync();
        using var plain = new HttpClient { BaseAddress = new Uri(H1.ApiUrl) };
        var form = "name=sneaky&size=64MiB";

        // What a page of another site can send with no preflight: a form POST, no token. Refused.
        using (var response = await plain.SendAsync(Request(HttpMethod.Post, "/api/v1/vdisks", form, "application/x-www-form-urlencoded", token: null, origin: "http://evil.example")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.False(response.Headers.Contains("Access-Control-Allow-Origin"));
        }

        // Even with the admin token (say, a browser that had it), a form or text/plain body is not taken: 415, nothing made.
        foreach (var type in new[] { "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x" })
        {
            using var response = await plain.SendAsync(Request(HttpMethod.Post, "/api/v1/vdisks", form, type, Cluster.Token, origin: null));
            var problem = await ApiTests.ProblemAsync(response);
            Assert.True(response.StatusCode == HttpStatusCode.UnsupportedMediaType, $"{type}: {(int)response.StatusCode} {problem.Detail}");
            Assert.Contains("application/json", problem.Detail, StringComparison.Ordinal);
            Assert.Contains("X-Converge-Client", problem.Detail, StringComparison.Ordinal);
        }

        // A change without a body needs the client header.
        using (var response = await plain.SendAsync(Request(HttpMethod.Delete, "/api/v1/vdisks/alpha", null, null, Cluster.Token, origin: null)))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        }

        // JSON with the token, but from a page of another origin: 403.
        foreach (var origin in new[] { "http://evil.example", "null", H1.ApiUrl.Replace("127.0.0.1", "localhost", StringComparison.Ordinal), "https://" + new Uri(H1.ApiUrl).Authority })
        {
            using var response = await plain.SendAsync(Request(HttpMethod.Post, "/api/v1/vdisks", """{"name":"sneaky","size":"64MiB"}""", "application/json", Cluster.Token, origin));
            var problem = await ApiTests.ProblemAsync(response);
            Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"Origin {origin}: {(int)response.StatusCode} {problem.Detail}");
            Assert.Contains("not of this API", problem.Detail, StringComparison.Ordinal);
            Assert.False(response.Headers.Contains("Access-Control-Allow-Origin"));
        }

        // A Host header that is not this API's (DNS rebinding): refused, for reads too.
        foreach (var host in new[] { "evil.example", "attacker.example:7480", "10.1.2.3" })
        {
            using var request = Request(HttpMethod.Post, "/api/v1/vdisks", """{"name":"sneaky","size":"64MiB"}""", "application/json", Cluster.Token, origin: null);
            request.Headers.Host = host;
            using var response = await plain.SendAsync(request);
            Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"Host {host}: {(int)response.StatusCode}");
            using var read = new HttpRequestMessage(HttpMethod.Get, "/api/v1/vdisks");
            read.Headers.Host = host;
            using var readResponse = await plain.SendAsync(read);
            Assert.Equal(HttpStatusCode.BadRequest, readResponse.StatusCode);
        }

        // A CORS preflight gets no grant.
        using (var preflight = new HttpRequestMessage(HttpMethod.Options, "/api/v1/vdisks"))
        {
            preflight.Headers.Add("Origin", "http://evil.example");
            preflight.Headers.Add("Access-Control-Request-Method", "DELETE");
            using var response = await plain.SendAsync(preflight);
            Assert.False(response.Headers.Contains("Access-Control-Allow-Origin"));
            Assert.False(response.IsSuccessStatusCode);
        }

        Assert.Null(await H1.Api.TryGetVirtualDiskAsync("sneaky"));
        Assert.Equal(before, await SnapshotAsync());

        // The same-origin page (the web UI) and the other loopback names may change things.
        var localhost = H1.ApiUrl.Replace("127.0.0.1", "localhost", StringComparison.Ordinal);
        using (var request = Request(HttpMethod.Post, "/api/v1/cluster/rebalance", """{"dryRun":true}""", "application/json", Cluster.Token, origin: localhost))
        {
            request.Headers.Host = new Uri(localhost).Authority;
            using var response = await plain.SendAsync(request);
            Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode} {(await ApiTests.ProblemAsync(response)).Detail}");
        }

        using (var response = await plain.SendAsync(Request(HttpMethod.Post, "/api/v1/cluster/rebalance", null, null, Cluster.Token, origin: H1.ApiUrl, clientHeader: true)))
        {
            Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode} {(await ApiTests.ProblemAsync(response)).Detail}");
        }
    }

    [Fact]
    public async Task A_read_only_token_reads_everywhere_and_gets_403_on_every_change()
    {
        var created = await H1.Api.CreateTokenAsync("viewer", "read-only");
        Assert.Equal("read-only", created.Info.Role);
        var before = await SnapshotAsync();
        foreach (var host in Cluster.Hosts)
        {
            using var http = new HttpClient { BaseAddress = new Uri(host.ApiUrl) };
            var viewer = new ConvergeApiClient(http, created.Token);
            await TestCluster.Eventually(async () => (await viewer.ListTokensAsync()).Any(t => t.Id == created.Info.Id), $"{host.Name} to know the token");
            Assert.Contains(await viewer.ListVirtualDisksAsync(), v => v.Name == "alpha");
            Assert.Equal(3, (await viewer.ListHostsAsync()).Count);
            Assert.Equal("ok", (await viewer.GetHealthChecksAsync()).Status);

            foreach (var (method, path, body) in ApiTests.MutationCalls)
            {
                using var request = new HttpRequestMessage(method, path);
                if (body is not null)
                {
                    request.Content = new StringContent(body, Encoding.UTF8, "application/json");
                }

                using var response = await viewer.SendRawAsync(request);
                var problem = await ApiTests.ProblemAsync(response);
                Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{method} {path} on {host.Name}: {(int)response.StatusCode} {problem.Detail}");
                Assert.Equal(403, problem.Status);
                Assert.Contains("needs an admin token; the token 'viewer' is read-only", problem.Detail, StringComparison.Ordinal);
            }
        }

        Assert.Equal(before, await SnapshotAsync());
        Assert.DoesNotContain(await H1.Api.ListTokensAsync(), t => t.Name == "sneaky");
        await H1.Api.RevokeTokenAsync(created.Info.Id);
    }

    [Fact]
    public async Task Tokens_are_created_revoked_and_rotated_and_each_works_only_while_valid()
    {
        // An admin token made on h1 works on h3 once replicated.
        var ops = await H1.Api.CreateTokenAsync("ops", "admin");
        Assert.StartsWith("cvg_", ops.Token, StringComparison.Ordinal);
        using var http3 = new HttpClient { BaseAddress = new Uri(Cluster[2].ApiUrl) };
        var asOps = new ConvergeApiClient(http3, ops.Token);
        await TestCluster.Eventually(async () => (await asOps.ListTokensAsync()).Any(t => t.Id == ops.Info.Id), "h3 to know the token");
        await asOps.PutPolicyAsync("ops-made", new PolicyInfo { FailuresToTolerate = 1 });
        await asOps.DeletePolicyAsync("ops-made");

        // Refusals are clear and change nothing.
        var duplicate = await Assert.ThrowsAsync<ConvergeApiException>(() => H1.Api.CreateTokenAsync("ops", "read-only"));
        Assert.Equal(409, duplicate.Status);
        Assert.Contains("a token named 'ops' already exists", duplicate.Detail, StringComparison.Ordinal);
        var role = await Assert.ThrowsAsync<ConvergeApiException>(() => H1.Api.CreateTokenAsync("x1", "root"));
        Assert.Equal(400, role.Status);
        Assert.Contains("'root' is not one of admin, read-only", role.Detail, StringComparison.Ordinal);
        var name = await Assert.ThrowsAsync<ConvergeApiException>(() => H1.Api.CreateTokenAsync("Bad Name", "admin"));
        Assert.Equal(400, name.Status);
        var unknown = await Assert.ThrowsAsync<ConvergeApiException>(() => H1.Api.RevokeTokenAsync("0123456789ab"));
        Assert.Equal(404, unknown.Status);
        Assert.Contains("no token with id '0123456789ab'", unknown.Detail, StringComparison.Ordinal);
        Assert.Equal(2, (await H1.Api.ListTokensAsync()).Count(t => t.Name is "ops" or "admin"));

        // Rotation replaces the token it is called with: the old secret stops working everywhere, the new one works.
        var rotated = await asOps.RotateAdminTokenAsync();
        Assert.Equal(ops.Info.Id, rotated.Revoked);
        Assert.Equal("ops", rotated.Info.Name);
        Assert.NotEqual(ops.Token, rotated.Token);
        foreach (var host in Cluster.Hosts)
        {
            using var http = new HttpClient { BaseAddress = new Uri(host.ApiUrl) };
            var old = new ConvergeApiClient(http, ops.Token);
            await TestCluster.Eventually(
                async () =>
                {
                    try
                    {
                        await old.ListVirtualDisksAsync();
                        return false;
                    }
                    catch (ConvergeApiException e)
                    {
                        return e.Status == 401;
                    }
                },
                $"{host.Name} to refuse the rotated-out token");
            var change = await Assert.ThrowsAsync<ConvergeApiException>(() => old.PutPolicyAsync("stale", new PolicyInfo { FailuresToTolerate = 1 }));
            Assert.Equal(401, change.Status);
            var refused = await Assert.ThrowsAsync<ConvergeApiException>(() => old.ListVirtualDisksAsync());
            Assert.Contains("token is wrong", refused.Detail, StringComparison.Ordinal);
        }

        Assert.DoesNotContain(await H1.Api.ListPoliciesAsync(), p => p.Name == "stale");
        var asRotated = new ConvergeApiClient(http3, rotated.Token);
        await TestCluster.Eventually(async () => (await asRotated.ListTokensAsync()).Any(t => t.Id == rotated.Info.Id), "h3 to know the new token");
        await asRotated.PutPolicyAsync("rotated-made", new PolicyInfo { FailuresToTolerate = 1 });

        // A read-only token cannot rotate; a revoked token is refused at once on the host that revoked it.
        var reader = await H1.Api.CreateTokenAsync("reader", "read-only");
        using var http1 = new HttpClient { BaseAddress = new Uri(H1.ApiUrl) };
        Assert.Equal(403, (await Assert.ThrowsAsync<ConvergeApiException>(() => new ConvergeApiClient(http1, reader.Token).RotateAdminTokenAsync())).Status);
        await H1.Api.RevokeTokenAsync(rotated.Info.Id);
        await H1.Api.RevokeTokenAsync(reader.Info.Id);
        var revoked = await Assert.ThrowsAsync<ConvergeApiException>(() => new ConvergeApiClient(http1, rotated.Token).DeletePolicyAsync("rotated-made"));
        Assert.Equal(401, revoked.Status);
        Assert.NotNull(await H1.Api.GetPolicyAsync("rotated-made"));
        await H1.Api.DeletePolicyAsync("rotated-made");

        // The founder's admin token is untouched by all this.
        Assert.Equal(["admin"], (await H1.Api.ListTokensAsync()).Select(t => t.Name));
    }

    [Fact]
    public async Task No_answer_of_the_api_carries_a_token_hash_salt_or_secret()
    {
        var extra = await H1.Api.CreateTokenAsync("hash-probe", "read-only");
        try
        {
            await AssertNoSecretServedAsync(extra);
        }
        finally
        {
            await H1.Api.RevokeTokenAsync(extra.Info.Id);
        }
    }

    private async Task AssertNoSecretServedAsync(CreatedApiTokenInfo extra)
    {
        // Where the hosts keep the salted hashes: the replicated state, on the host RPC port (mutual TLS), not the API.
        var state = JsonNode.Parse(await H1.RpcHttp.GetStringAsync("/internal/v1/metadata/state"))!;
        var secrets = new List<string> { Cluster.Token!, extra.Token, Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Cluster.Token!))) };
        foreach (var token in state["apiTokens"]!.AsObject())
        {
            secrets.Add(token.Value!["hash"]!.GetValue<string>());
            secrets.Add(token.Value!["salt"]!.GetValue<string>());
        }

        Assert.Equal(2 + 2 + 3, secrets.Count);
        var diskId = (await H1.Api.TryGetClusterAsync())!.Disks[0].Id;
        var paths = ApiTests.PublicEndpoints.Where(e => e.Method == "GET").Select(e => e.Path
                .Replace("/vdisks/{name}", "/vdisks/alpha", StringComparison.Ordinal)
                .Replace("/policies/{name}", "/policies/default", StringComparison.Ordinal)
                .Replace("/hosts/{name}", "/hosts/h1", StringComparison.Ordinal)
                .Replace("{id}", diskId, StringComparison.Ordinal))
            .Concat(["/openapi/v1.json", "/metrics", "/", "/ui/app.js", "/api/v1/nothing"]);
        foreach (var path in paths)
        {
            foreach (var client in new[] { H1.Api, new ConvergeApiClient(H1.Http) })
            {
                using var response = await client.SendRawAsync(new HttpRequestMessage(HttpMethod.Get, path));
                var body = await response.Content.ReadAsStringAsync() + response.Headers + response.Content.Headers;
                Assert.True((int)response.StatusCode is (>= 200 and < 300) or 404 or 409, $"GET {path}: {(int)response.StatusCode}");
                foreach (var secret in secrets)
                {
                    Assert.False(body.Contains(secret, StringComparison.OrdinalIgnoreCase), $"GET {path} returned a token secret, hash or salt");
                }
            }
        }
    }

    private static HttpRequestMessage Request(HttpMethod method, string path, string? body, string? contentType, string? token, string? origin, bool clientHeader = false)
    {
        var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8);
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType!);
        }

        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        if (origin is not null)
        {
            request.Headers.Add("Origin", origin);
        }

        if (clientHeader)
        {
            request.Headers.Add(ConvergeApiClient.ClientHeader, "1");
        }

        return request;
    }

    private async Task<string> SnapshotAsync()
    {
        var status = (await H1.Api.TryGetClusterAsync())!;
        var tokens = await H1.Api.ListTokensAsync();
        return string.Join('\n',
            status.VirtualDisks.Select(v => $"vdisk {v.Name} {v.SizeBytes} {v.Policy} {v.Generation}")
                .Concat(status.Policies.OrderBy(p => p.Name).Select(p => $"policy {p.Name} {p.FailuresToTolerate} {p.StripeWidth} {p.IopsLimit}"))
                .Concat(status.Hosts.Select(h => $"host {h.Name} {h.State} {h.MaintenanceMode}"))
                .Concat(status.Disks.Select(d => $"disk {d.Path} {d.State}"))
                .Concat(tokens.Select(t => $"token {t.Id} {t.Name} {t.Role}")));
    }
}
