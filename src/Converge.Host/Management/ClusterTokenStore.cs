using Converge.Host.Cluster;
using Converge.Metadata;

namespace Converge.Host.Management;

/// <summary>Cluster mode: token records in the Raft metadata, changed by <see cref="CreateApiToken"/> and <see cref="RevokeApiToken"/>.</summary>
internal sealed class ClusterTokenStore(ClusterNode cluster) : ApiTokenStore
{
    public override bool Ready => cluster.Metadata.Current.Cluster is not null;

    public override IReadOnlyList<ApiTokenRecord> Tokens => cluster.Metadata.Current.AllApiTokens();

    public override async Task AddAsync(ApiTokenRecord token, string? replaces, CancellationToken cancellationToken) =>
        Check(await cluster.Metadata.ProposeAsync(new CreateApiToken(Guid.NewGuid(), token, replaces), cancellationToken).ConfigureAwait(false));

    public override async Task RevokeAsync(string id, CancellationToken cancellationToken) =>
        Check(await cluster.Metadata.ProposeAsync(new RevokeApiToken(Guid.NewGuid(), id), cancellationToken).ConfigureAwait(false));

    private static void Check(CommandResult result)
    {
        if (!result.Succeeded)
        {
            var error = result.Error ?? "the cluster metadata refused the change";
            throw new HostOperationException(
                error.StartsWith("there is no token", StringComparison.Ordinal) ? HostErrorKind.NotFound : HostErrorKind.Conflict, error);
        }
    }
}
