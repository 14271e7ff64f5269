using System.Text.Json;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Management.Contracts;
using Converge.Metadata;
using Converge.Metadata.Raft;
using Converge.Nbd;
using Converge.Placement;

namespace Converge.Host.Cluster;

/// <summary>
/// Cluster mode of one host: its part in the metadata service (Raft voter or client), its registration, the peer
/// port's handler, the coordinators of the virtual disks it serves and the cluster-wide management operations.
/// </summary>
internal sealed class ClusterNode : INbdExportCatalog, IPeerRequestHandler, IAsyncDisposable
{
    private const string MetadataDirectoryName = "metadata";
    private readonly HostOptions options;
    private readonly HostInventory inventory;
    private readonly ILoggerFactory loggerFactory;
    private readonly HttpClient http = new() { Timeout = TimeSpan.FromSeconds(30) };
    private readonly CancellationTokenSource stop = new();
    private ClusterMetadata? metadata;
    private CoordinatorManager? coordinators;
    private HostMonitor? monitor;
    private OrphanCollector? orphans;
    private ClusterPeerHandler? peerHandler;
    private Membership? membership;
    private Task registration = Task.CompletedTask;
    private volatile bool registered;
    private bool catchUpBeforeReady;
    private int catchUpAttempts;
    private int disposed;

    public ClusterNode(HostOptions options, HostInventory inventory, ILoggerFactory loggerFactory)
    {
        this.options = options;
        this.inventory = inventory;
        this.loggerFactory = loggerFactory;
        Logger = loggerFactory.CreateLogger(ConvergeHost.LogCategory);
        Local = new LocalComponents(inventory);
        Resyncs = new ResyncTracker(options.Time);
        Events = new Management.EventLog(options.Time);
        Manager = new ClusterManager(this);
        NbdEndpoint = HostInventory.FormatEndPoint(options.NbdEndPoint);
        ApiUrl = "http://" + HostInventory.FormatEndPoint(options.ApiEndPoint);
        PeerEndpoint = HostInventory.FormatEndPoint(options.PeerEndPoint!);
        RaftEndpoint = HostInventory.FormatEndPoint(options.RaftEndPoint!);
    }

    public ILogger Logger { get; }

    public LocalComponents Local { get; }

    public PeerClients Peers { get; } = new();

    /// <summary>The resyncs, rebuilds and repairs this host runs (as coordinator), with their progress.</summary>
    public ResyncTracker Resyncs { get; }

    public ClusterManager Manager { get; }

    /// <summary>Events derived from the metadata changes this host applies (<c>GET /api/v1/events</c>).</summary>
    public Management.EventLog Events { get; }

    public ClusterMetadata Metadata => metadata ?? throw new InvalidOperationException("the cluster metadata is not started");

    public CoordinatorManager Coordinators => coordinators ?? throw new InvalidOperationException("the cluster node is not started");

    /// <summary>Heartbeats to the other hosts (reachability), and the leader's reaction to silent hosts and failed disks.</summary>
    public HostMonitor Monitor => monitor ?? throw new InvalidOperationException("the cluster node is not started");

    public bool FaultInjectionEnabled => options.EnableFaultInjection;

    public string HostId => inventory.HostId.ToString("N");

    public string NbdEndpoint { get; }

    public string ApiUrl { get; }

    public string PeerEndpoint { get; }

    public string RaftEndpoint { get; }

    /// <summary>The cluster is initialized and this host and its disks are registered in it.</summary>
    public bool Registered => registered;

    public bool IsVoter => membership?.Role == Membership.Voter;

    private string MetadataDirectory => Path.Combine(Path.GetFullPath(options.DataDirectory), MetadataDirectoryName);

    /// <summary>Starts (or joins, the first time) this host's part of the metadata service. Before the listeners start.</summary>
    public async Task StartMetadataAsync(CancellationToken cancellationToken)
    {
        var dataDirectory = Path.GetFullPath(options.DataDirectory);
        membership = MembershipFile.Load(dataDirectory);
        catchUpBeforeReady = membership is not null;
        IMetadataService service;
        if (membership is null && options.JoinUrl is null)
        {
            if (Directory.Exists(MetadataDirectory) && Directory.EnumerateFileSystemEntries(MetadataDirectory).Any())
            {
                throw new HostStartException($"{MetadataDirectory} holds metadata but {MembershipFile.FileName} is missing; restore it or move the directory away");
            }

            membership = new Membership { Role = Membership.Voter, Founder = true };
            MembershipFile.Save(dataDirectory, membership);
            service = NewRaft(coldStart: true);
            await service.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        else if (membership is null)
        {
            // A joiner runs an empty member first: the leader adds it as a voter (catching it up) if voters are missing.
            var raft = NewRaft(coldStart: false);
            await raft.StartAsync(cancellationToken).ConfigureAwait(false);
            JoinResponse response;
            try
            {
                response = await JoinAsync(options.JoinUrl!, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                await raft.DisposeAsync().ConfigureAwait(false);
                throw;
            }

            if (response.Role == Membership.Voter)
            {
                service = raft;
            }
            else
            {
                await raft.DisposeAsync().ConfigureAwait(false);
                Directory.Delete(MetadataDirectory, recursive: true);
                service = new RemoteMetadataService(response.Members, Logger);
                await service.StartAsync(cancellationToken).ConfigureAwait(false);
            }

            membership = new Membership { Role = response.Role, ClusterId = response.ClusterId, Members = response.Members };
            MembershipFile.Save(dataDirectory, membership);
        }
        else if (membership.Role == Membership.Voter)
        {
            service = NewRaft(coldStart: false);
            await service.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            service = new RemoteMetadataService(membership.Members, Logger);
            await service.StartAsync(cancellationToken).ConfigureAwait(false);
        }

        metadata = new ClusterMetadata(service);
        Events.Attach(service);
        var fences = new FenceAuthority(metadata);
        coordinators = new CoordinatorManager(metadata, Local, Peers, fences, Resyncs, HostId, options.Failures, options.Time, Logger);
        peerHandler = new ClusterPeerHandler(new ComponentPeerHandler(Local, fences), coordinators);
        coordinators.Manager = Manager;
        monitor = new HostMonitor(this, options.HeartbeatTimeout, options.Time, Logger);
        orphans = new OrphanCollector(this, options.Failures.OrphanGrace, options.Time, Logger);
        Log.ClusterRole(Logger, membership.Role, membership.ClusterId ?? "(new)", PeerEndpoint, membership.Role == Membership.Voter ? RaftEndpoint : "none (metadata client)");
    }

    /// <summary>After the listeners started: initialize (founder), register this host and its disks, renew leases.</summary>
    public void StartBackground()
    {
        Coordinators.Start();
        Monitor.Start();
        orphans?.Start();
        registration = Task.Run(() => RegisterLoopAsync(stop.Token), CancellationToken.None);
    }

    public IReadOnlyList<NbdExportInfo> ListExports() => coordinators?.ListExports() ?? [];

    public ValueTask<IBlockVolume?> FindExportAsync(string name, CancellationToken cancellationToken) =>
        coordinators?.FindExportAsync(name, cancellationToken) ?? ValueTask.FromResult<IBlockVolume?>(null);

    public int ReplyCapacity(in PeerRequestHeader header) => peerHandler?.ReplyCapacity(header) ?? 0;

    public ValueTask<PeerResult> HandleAsync(
        PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken) =>
        peerHandler?.HandleAsync(header, payload, blockCrcs, reply, cancellationToken) ?? ValueTask.FromResult(PeerResult.Error(VolumeError.Unavailable));

    /// <summary>Handles a join on the leader (adds a voter while voters are missing, registers the host); elsewhere forwards it.</summary>
    public async Task<JoinResponse> HandleJoinAsync(JoinRequest request, bool forwarded, CancellationToken cancellationToken)
    {
        if (Metadata.Raft is not { IsLeader: true } raft)
        {
            if (forwarded)
            {
                throw new ClusterOperationException(HostErrorKind.Unavailable, "this host is not the metadata leader");
            }

            var deadline = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
            while (true)
            {
                var target = Metadata.Raft is null ? membership?.Members.FirstOrDefault() : Metadata.LeaderApi();
                try
                {
                    if (target is null)
                    {
                        throw new MetadataUnavailableException("no metadata leader is known yet");
                    }

                    return await PostJoinAsync(new Uri(target), request, forwarded: Metadata.Raft is not null, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException && DateTimeOffset.UtcNow < deadline)
                {
                    await Task.Delay(200, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        var state = Metadata.Current;
        var cluster = state.Cluster ?? throw new ClusterOperationException(HostErrorKind.Unavailable, "the cluster is not initialized yet");
        if (state.Hosts.TryGetValue(request.HostId, out var known))
        {
            return Response(known.Voter);
        }

        var voters = state.Hosts.Values.Count(h => h.Voter);
        var voter = voters < cluster.VoterTarget && !string.IsNullOrEmpty(request.Raft);
        if (voter)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(30));
            await raft.AddVoterAsync(request.Raft!, timeout.Token).ConfigureAwait(false);
        }

        var endpoints = new HostEndpoints(request.Api, request.Nbd, request.Peer, voter ? request.Raft : null);
        await Metadata.ProposeOkAsync(
            new RegisterHost(Guid.NewGuid(), request.HostId, request.Name, request.FaultDomain, endpoints, voter, DateTimeOffset.UtcNow),
            cancellationToken).ConfigureAwait(false);
        Log.ClusterVirtualDisk(Logger, request.Name, "joined", voter ? "as a voter" : "as a metadata client");
        return Response(voter);

        JoinResponse Response(bool isVoter) => new()
        {
            Role = isVoter ? Membership.Voter : Membership.Client,
            ClusterId = cluster.ClusterId,
            Members = [.. Metadata.Current.Hosts.Values.Where(h => h.Voter).Select(h => h.Endpoints.Api)],
        };
    }

    /// <summary>Asks the host at <paramref name="api"/> to stop coordinating a virtual disk and release its lease.</summary>
    public async Task PostReleaseAsync(string api, string virtualDiskId, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await http.PostAsync($"{api.TrimEnd('/')}/internal/v1/vdisks/{virtualDiskId}/release", null, cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException)
        {
            // A holder that does not answer is down: its lease expires by itself.
        }
    }

    public async ValueTask DisposeAsync()
    {
        // Called by the host's shutdown and again by the service container.
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        await stop.CancelAsync().ConfigureAwait(false);
        await registration.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (monitor is not null)
        {
            await monitor.DisposeAsync().ConfigureAwait(false);
        }

        if (orphans is not null)
        {
            await orphans.DisposeAsync().ConfigureAwait(false);
        }

        if (coordinators is not null)
        {
            await coordinators.DisposeAsync().ConfigureAwait(false);
        }

        await Peers.DisposeAsync().ConfigureAwait(false);
        if (metadata is not null)
        {
            await metadata.DisposeAsync().ConfigureAwait(false);
        }

        http.Dispose();
        stop.Dispose();
    }

    private RaftMetadataService NewRaft(bool coldStart) => new(new MetadataOptions
    {
        DataDirectory = MetadataDirectory,
        RaftEndPoint = options.RaftEndPoint!,
        ColdStart = coldStart,
        LoggerFactory = loggerFactory,
        Time = options.Time,
    });

    private async Task<JoinResponse> JoinAsync(Uri seed, CancellationToken cancellationToken)
    {
        Log.Joining(Logger, seed.ToString());
        var request = new JoinRequest
        {
            HostId = HostId,
            Name = inventory.HostName,
            FaultDomain = options.FaultDomain,
            Api = ApiUrl,
            Nbd = NbdEndpoint,
            Peer = PeerEndpoint,
            Raft = RaftEndpoint,
        };
        var deadline = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                return await PostJoinAsync(seed, request, forwarded: false, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or MetadataUnavailableException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                if (DateTimeOffset.UtcNow > deadline)
                {
                    throw new HostStartException($"cannot join the cluster through {seed}: {e.Message}", e);
                }

                Log.JoinRetry(Logger, seed.ToString(), e.Message);
                await Task.Delay(500, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task<JoinResponse> PostJoinAsync(Uri api, JoinRequest request, bool forwarded, CancellationToken cancellationToken)
    {
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(api, "/api/v1/cluster/join"))
        {
            Content = JsonContent.Create(request, ContractsJsonContext.Default.JoinRequest),
        };
        if (forwarded)
        {
            message.Headers.Add(ClusterMetadata.ForwardedHeader, "1");
        }

        using var response = await http.SendAsync(message, cancellationToken).ConfigureAwait(false);
        var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        if ((int)response.StatusCode >= 500)
        {
            throw new MetadataUnavailableException($"{api} answered HTTP {(int)response.StatusCode}: {Detail(body)}");
        }

        if (!response.IsSuccessStatusCode)
        {
            throw new HostStartException($"the cluster refused the join through {api}: {Detail(body)}");
        }

        return JsonSerializer.Deserialize(body, ContractsJsonContext.Default.JoinResponse)
            ?? throw new MetadataUnavailableException($"{api} returned an empty join response");
    }

    private static string Detail(string body)
    {
        try
        {
            return JsonSerializer.Deserialize(body, ContractsJsonContext.Default.ProblemInfo)?.Detail ?? body;
        }
        catch (JsonException)
        {
            return body;
        }
    }

    private async Task RegisterLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await RegisterOnceAsync(cancellationToken).ConfigureAwait(false);
                registered = true;
                return;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is MetadataUnavailableException or ClusterOperationException or HttpRequestException or NotLeaderException or OperationCanceledException)
            {
                Log.RegistrationRetry(Logger, e.Message);
                try
                {
                    await Task.Delay(500, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task RegisterOnceAsync(CancellationToken cancellationToken)
    {
        var m = Metadata;

        // A restarted host holds the metadata it had when it stopped; catching up to the leader's commit first means
        // it does not report ready (and so serve or answer) from that stale view. A host that has just joined starts
        // from nothing and catches up through the log (DotNext's barrier can stall on a member that was just added).
        // Three failed attempts fall through: every API read takes a barrier of its own anyway.
        if (catchUpBeforeReady && catchUpAttempts < 3)
        {
            catchUpAttempts++;
            using var barrier = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            barrier.CancelAfter(TimeSpan.FromSeconds(5));
            try
            {
                await m.Service.BarrierAsync(barrier.Token).ConfigureAwait(false);
                catchUpBeforeReady = false;
            }
            catch (Exception e) when (e is HttpRequestException or InvalidOperationException or MetadataUnavailableException ||
                                      (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                throw new MetadataUnavailableException($"catching up with the cluster metadata: {e.Message}", e);
            }
        }

        if (m.Current.Cluster is null)
        {
            if (membership?.Founder == true)
            {
                var result = await m.ProposeAsync(
                    new InitializeCluster(
                        Guid.NewGuid(), Guid.NewGuid().ToString("N"), "converge", DateTimeOffset.UtcNow, StoragePolicy.Default, options.VoterTarget,
                        Management.AdminToken.Hash(Management.AdminToken.LoadOrCreate(Path.GetFullPath(options.DataDirectory)))),
                    cancellationToken).ConfigureAwait(false);
                if (!result.Succeeded && m.Current.Cluster is null)
                {
                    throw new ClusterOperationException(HostErrorKind.Unavailable, result.Error ?? "initialization refused");
                }

                if (result.Succeeded)
                {
                    Management.ManagementLog.AdminTokenWritten(Logger, Path.Combine(Path.GetFullPath(options.DataDirectory), Management.AdminToken.FileName));
                }
            }
            else if (!await m.WaitForAsync(s => s.Cluster is not null, TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false))
            {
                throw new MetadataUnavailableException("waiting for the cluster metadata to catch up");
            }
        }

        var endpoints = new HostEndpoints(ApiUrl, NbdEndpoint, PeerEndpoint, IsVoter ? RaftEndpoint : null);
        if (!m.Current.Hosts.TryGetValue(HostId, out var me))
        {
            // A joined host was registered by the leader: wait for that record to arrive instead of registering twice.
            if (membership?.Founder != true && !await m.WaitForAsync(s => s.Hosts.ContainsKey(HostId), TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false))
            {
                throw new MetadataUnavailableException("waiting for this host's registration to arrive");
            }

            if (!m.Current.Hosts.ContainsKey(HostId))
            {
                await m.ProposeOkAsync(
                    new RegisterHost(Guid.NewGuid(), HostId, inventory.HostName, options.FaultDomain, endpoints, IsVoter, DateTimeOffset.UtcNow),
                    cancellationToken).ConfigureAwait(false);
            }
        }
        else if (me.Endpoints != endpoints && !(IsVoter && me.Endpoints.Raft != RaftEndpoint))
        {
            await m.ProposeOkAsync(new UpdateHost(Guid.NewGuid(), HostId, Endpoints: endpoints), cancellationToken).ConfigureAwait(false);
        }

        foreach (var store in inventory.OnlineStores)
        {
            var id = store.Id.ToString("N");
            if (!m.Current.Disks.ContainsKey(id))
            {
                await m.ProposeOkAsync(new RegisterDisk(Guid.NewGuid(), id, HostId, store.Path, store.CapacityBytes), cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
