using System.Net.Http.Json;

namespace Converge.Management.Contracts;

/// <summary>Cluster identity calls: join tokens and certificate revocation.</summary>
public sealed partial class ConvergeApiClient
{
    /// <summary>Creates a single-use join token valid for <paramref name="ttl"/> (e.g. <c>1h</c>; null: 1 h).</summary>
    public Task<JoinTokenInfo> CreateJoinTokenAsync(string? ttl = null, CancellationToken cancellationToken = default) =>
        SendAsync(
            HttpMethod.Post,
            "/api/v1/cluster/join-tokens",
            JsonContent.Create(new CreateJoinTokenRequest { Ttl = ttl }, ContractsJsonContext.Default.CreateJoinTokenRequest),
            ContractsJsonContext.Default.JoinTokenInfo,
            cancellationToken);

    /// <summary>Revokes every certificate of a host: it can no longer reach the other hosts.</summary>
    public Task<RevokeHostInfo> RevokeHostAsync(string host, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, HostPath(host) + "/revoke", content: null, ContractsJsonContext.Default.RevokeHostInfo, cancellationToken);
}
