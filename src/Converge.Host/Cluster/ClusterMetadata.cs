using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Converge.Metadata;
using Converge.Metadata.Raft;

namespace Converge.Host.Cluster;

/// <summary>
/// The host's view of the cluster metadata: a local Raft member (voters) or a <see cref="RemoteMetadataService"/>
/// (clients), plus proposal forwarding: a member that is not the leader sends the command to the leader's host RPC
/// (<c>POST /internal/v1/metadata/propose</c>, mutual TLS), retrying with backoff while an election runs.
/// </summary>
internal sealed class ClusterMetadata : IAsyncDisposable
{
    public const string ForwardedHeader = "X-Converge-Forwarded";
    public static readonly TimeSpan DefaultProposeTimeout = TimeSpan.FromSeconds(5);
    private static readonly MediaTypeHeaderValue JsonType = new("application/json");

    private readonly HttpClient http;

    /// <param name="identity">This host's identity (the forwarding client presents its certificate).</param>
    public ClusterMetadata(IMetadataService service, Func<Converge.Security.HostIdentity?> identity)
    {
        Service = service;
        http = ClusterTls.NewClient(identity, TimeSpan.FromSeconds(10));
    }

    public IMetadataService Service { get; }

    public RaftMetadataService? Raft => Service as RaftMetadataService;

    public ClusterState Current => Service.Current;

    /// <summary>API URL of the current leader, from its Raft endpoint and the host records; null while unknown.</summary>
    public string? LeaderApi()
    {
        var leader = Service.LeaderRaftEndpoint;
        return leader is null
            ? null
            : Current.Hosts.Values.FirstOrDefault(h => string.Equals(h.Endpoints.Raft, leader, StringComparison.Ordinal))?.Endpoints.Api;
    }

    /// <summary>RPC URL (host-to-host, mutual TLS) of the current leader; null while unknown.</summary>
    public string? LeaderRpc()
    {
        var leader = Service.LeaderRaftEndpoint;
        return leader is null
            ? null
            : Current.Hosts.Values.FirstOrDefault(h => string.Equals(h.Endpoints.Raft, leader, StringComparison.Ordinal))?.Endpoints.Rpc;
    }

    public string? LeaderHostId()
    {
        var leader = Service.LeaderRaftEndpoint;
        return leader is null
            ? null
            : Current.Hosts.Values.FirstOrDefault(h => string.Equals(h.Endpoints.Raft, leader, StringComparison.Ordinal))?.HostId;
    }

    /// <summary>Proposes from any host: on the leader directly, else forwarded. Returns once applied locally too.</summary>
    /// <exception cref="MetadataUnavailableException">No leader could take the command within the timeout.</exception>
    public async Task<CommandResult> ProposeAsync(MetadataCommand command, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        var deadline = DateTimeOffset.UtcNow + (timeout ?? DefaultProposeTimeout);
        var delay = TimeSpan.FromMilliseconds(50);
        while (true)
        {
            try
            {
                CommandResult result;
                if (Raft is { } raft)
                {
                    if (raft.IsLeader)
                    {
                        return await raft.ProposeAsync(command, cancellationToken).ConfigureAwait(false);
                    }

                    var leaderRpc = LeaderRpc() ?? throw new NotLeaderException(raft.LeaderRaftEndpoint);
                    result = await PostProposeAsync(leaderRpc, command, forwarded: true, cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    result = await Service.ProposeAsync(command, cancellationToken).ConfigureAwait(false);
                }

                await WaitAppliedAsync(result.Index, TimeSpan.FromSeconds(2), cancellationToken).ConfigureAwait(false);
                return result;
            }
            catch (Exception e) when (IsRetryable(e, cancellationToken))
            {
                if (DateTimeOffset.UtcNow + delay > deadline)
                {
                    throw new MetadataUnavailableException($"the cluster metadata did not accept the change in time: {e.Message}", e);
                }

                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 400));
            }
        }
    }

    /// <summary>Proposes and throws <see cref="ClusterOperationException"/> (conflict) when the state machine refused.</summary>
    public async Task<CommandResult> ProposeOkAsync(MetadataCommand command, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        var result = await ProposeAsync(command, cancellationToken, timeout).ConfigureAwait(false);
        return result.Succeeded
            ? result
            : throw new ClusterOperationException(HostErrorKind.Conflict, result.Error ?? "the cluster metadata refused the change");
    }

    public async Task<CommandResult> PostProposeAsync(string api, MetadataCommand command, bool forwarded, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, api.TrimEnd('/') + "/internal/v1/metadata/propose");
        var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(command, MetadataJsonContext.Default.MetadataCommand));
        content.Headers.ContentType = JsonType;
        request.Content = content;
        if (forwarded)
        {
            request.Headers.Add(ForwardedHeader, "1");
        }

        using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new MetadataUnavailableException($"{api} did not take the proposal (HTTP {(int)response.StatusCode}): {System.Text.Encoding.UTF8.GetString(body)}");
        }

        return JsonSerializer.Deserialize(body, MetadataJsonContext.Default.CommandResult)
            ?? throw new MetadataUnavailableException($"{api} returned an empty proposal result");
    }

    public async Task WaitAppliedAsync(long index, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTimeOffset.UtcNow + timeout;
        while (Current.AppliedIndex < index && DateTimeOffset.UtcNow < deadline)
        {
            await Task.Delay(10, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Waits until the local state satisfies <paramref name="condition"/> (or the timeout passes).</summary>
    public async Task<bool> WaitForAsync(Func<ClusterState, bool> condition, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTimeOffset.UtcNow + timeout;
        while (!condition(Current))
        {
            if (DateTimeOffset.UtcNow >= deadline)
            {
                return false;
            }

            await Task.Delay(20, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    public async ValueTask DisposeAsync()
    {
        await Service.DisposeAsync().ConfigureAwait(false);
        http.Dispose();
    }

    private static bool IsRetryable(Exception e, CancellationToken cancellationToken) =>
        e is NotLeaderException or MetadataUnavailableException or HttpRequestException ||
        (e is OperationCanceledException && !cancellationToken.IsCancellationRequested);
}

/// <summary>A refused cluster operation; nothing was changed. The message is meant for the operator.</summary>
internal sealed class ClusterOperationException(HostErrorKind kind, string message, Exception? inner = null) : Exception(message, inner)
{
    public HostErrorKind Kind { get; } = kind;
}

/// <summary>A join certificate refused (HTTP 403): the token is wrong, used, expired or for another cluster. Nothing changed.</summary>
internal sealed class JoinRefusedException(string message) : Exception(message);
