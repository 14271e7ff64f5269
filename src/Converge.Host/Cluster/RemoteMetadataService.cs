using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Converge.Metadata;

namespace Converge.Host.Cluster;

/// <summary>
/// <see cref="IMetadataService"/> for a host that is not a Raft member: follows the state by long-polling a member's
/// <c>GET /internal/v1/metadata/state?after=INDEX</c> and proposes through a member's
/// <c>POST /internal/v1/metadata/propose</c> (which forwards to the leader). It never counts toward a majority.
/// </summary>
internal sealed class RemoteMetadataService : IMetadataService
{
    /// <summary>Response header of the state endpoint naming the leader's Raft endpoint, as the answering member knows it.</summary>
    public const string LeaderHeader = "X-Converge-Leader";

    private static readonly MediaTypeHeaderValue JsonType = new("application/json");
    private readonly HttpClient http;
    private readonly CancellationTokenSource stop = new();
    private readonly ILogger logger;
    private readonly Lock gate = new();
    private List<string> members;
    private int next;
    private volatile ClusterState current = ClusterState.Empty;
    private Task poller = Task.CompletedTask;

    /// <param name="members">RPC URLs of metadata members.</param>
    /// <param name="http">The host's mutual-TLS client (<see cref="ClusterTls.NewClient"/>); owned by the caller, its timeout above the 10 s long poll.</param>
    public RemoteMetadataService(IEnumerable<string> members, HttpClient http, ILogger logger)
    {
        this.http = http;
        this.members = [.. members.Distinct(StringComparer.Ordinal)];
        this.logger = logger;
        if (this.members.Count == 0)
        {
            throw new HostStartException("this host is a metadata client but knows no metadata member to follow");
        }
    }

    public event EventHandler<ClusterState>? Changed;

    public ClusterState Current => current;

    public bool IsLeader => false;

    /// <summary>The leader as the member this client follows last reported it.</summary>
    public string? LeaderRaftEndpoint { get; private set; }

    public Task StartAsync(CancellationToken ct)
    {
        poller = Task.Run(() => PollAsync(stop.Token), CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task<CommandResult> ProposeAsync(MetadataCommand command, CancellationToken ct)
    {
        var api = NextMember();
        using var request = new HttpRequestMessage(HttpMethod.Post, api + "/internal/v1/metadata/propose");
        var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(command, MetadataJsonContext.Default.MetadataCommand));
        content.Headers.ContentType = JsonType;
        request.Content = content;
        try
        {
            using var response = await http.SendAsync(request, ct).ConfigureAwait(false);
            var body = await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                Rotate(api);
                throw new MetadataUnavailableException($"member {api} did not take the proposal (HTTP {(int)response.StatusCode})");
            }

            return JsonSerializer.Deserialize(body, MetadataJsonContext.Default.CommandResult)
                ?? throw new MetadataUnavailableException($"member {api} returned an empty result");
        }
        catch (HttpRequestException)
        {
            Rotate(api);
            throw;
        }
    }

    public async Task BarrierAsync(CancellationToken ct)
    {
        var api = NextMember();
        var state = await FetchAsync(api, -1, ct, barrier: true).ConfigureAwait(false);
        if (state is not null)
        {
            Publish(state);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stop.CancelAsync().ConfigureAwait(false);
        await poller.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stop.Dispose();
    }

    private async Task PollAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            var api = NextMember();
            try
            {
                var state = await FetchAsync(api, current.AppliedIndex, cancellationToken).ConfigureAwait(false);
                if (state is not null)
                {
                    Publish(state);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is HttpRequestException or JsonException or OperationCanceledException or MetadataUnavailableException)
            {
                Log.MetadataFollowFailed(logger, api, e.Message);
                Rotate(api);
                try
                {
                    await Task.Delay(250, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task<ClusterState?> FetchAsync(string api, long after, CancellationToken cancellationToken, bool barrier = false)
    {
        using var response = await http.GetAsync(
            $"{api}/internal/v1/metadata/state?after={after}{(barrier ? "&barrier=true" : string.Empty)}", cancellationToken).ConfigureAwait(false);
        LeaderRaftEndpoint = response.Headers.TryGetValues(LeaderHeader, out var leader) ? leader.FirstOrDefault() : null;
        if (response.StatusCode == HttpStatusCode.NoContent)
        {
            return null;
        }

        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new MetadataUnavailableException($"member {api} answered HTTP {(int)response.StatusCode}");
        }

        var body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        return ClusterState.FromJson(body);
    }

    private void Publish(ClusterState state)
    {
        lock (gate)
        {
            if (state.AppliedIndex <= current.AppliedIndex && current.Cluster is not null)
            {
                return;
            }

            current = state;

            // Follow the member list as it changes: every voter's host RPC.
            var voters = state.Hosts.Values.Where(h => h.Voter && h.Endpoints.Rpc is not null).Select(h => h.Endpoints.Rpc!).ToList();
            if (voters.Count > 0)
            {
                members = [.. voters.Union(members, StringComparer.Ordinal)];
            }
        }

        Changed?.Invoke(this, state);
    }

    private string NextMember()
    {
        lock (gate)
        {
            return members[next % members.Count].TrimEnd('/');
        }
    }

    private void Rotate(string failed)
    {
        lock (gate)
        {
            if (members[next % members.Count].TrimEnd('/') == failed)
            {
                next++;
            }
        }
    }
}
