using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Management.Contracts;
using Converge.Metadata;
using Converge.Metadata.Raft;
using Converge.Nbd;
using Converge.Placement;
using Converge.Security;

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
    private readonly IHostApplicationLifetime lifetime;
    private readonly HttpClient http;
    private readonly CancellationTokenSource stop = new();
    private ClusterMetadata? metadata;
    private CoordinatorManager? coordinators;
    private HostMonitor? monitor;
    private OrphanCollector? orphans;
    private ClusterPeerHandler? peerHandler;
    private Membership? membership;
    private HostIdentity? identity;
    private Task registration = Task.CompletedTask;
    private volatile bool registered;
    private bool catchUpBeforeReady;
    private int catchUpAttempts;
    private int disposed;

    public ClusterNode(HostOptions options, HostInventory inventory, ILoggerFactory loggerFactory, IHostApplicationLifetime lifetime)
    {
        this.lifetime = lifetime;
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
        RpcUrl = "https://" + HostInventory.FormatEndPoint(options.RpcEndPoint!);
        http = ClusterTls.NewClient(() => identity, TimeSpan.FromSeconds(30));
        Peers = new PeerClients(() => identity);
    }

    public ILogger Logger { get; }

    public LocalComponents Local { get; }

    public PeerClients Peers { get; }

    /// <summary>This host's identity, or null before the cluster identity is loaded (founded or joined).</summary>
    public HostIdentity? IdentityIfLoaded => identity;

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

    /// <summary>This host's RPC URL (<c>https://ADDR:PORT</c>): <c>/internal/v1</c> on mutual TLS.</summary>
    public string RpcUrl { get; }

    /// <summary>This host's cluster identity (certificate, CA, validation); set before the listeners start.</summary>
    public HostIdentity Identity => identity ?? throw new InvalidOperationException("the cluster identity is not loaded");

    /// <summary>Host-to-host HTTP client: presents this host's certificate, accepts only cluster certificates.</summary>
    public HttpClient RpcClient => http;

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

            // The founder makes the cluster CA and its own certificate before anything listens.
            identity = HostIdentity.Found(dataDirectory, "converge", inventory.HostName, ListenAddresses(), options.Time.GetUtcNow());
            membership = new Membership { Role = Membership.Voter, Founder = true };
            MembershipFile.Save(dataDirectory, membership);
            service = NewRaft(coldStart: true);
            await service.StartAsync(cancellationToken).ConfigureAwait(false);
            metadata = new ClusterMetadata(service, () => identity);
            await InitializeClusterAsync(metadata, cancellationToken).ConfigureAwait(false);
        }
        else if (membership is null)
        {
            // A joiner first trades its join token for a certificate (the CA pinned by the token's hash), then runs an
            // empty Raft member on mutual TLS: the leader adds it as a voter (catching it up) if voters are missing.
            identity = HostIdentity.Load(dataDirectory) ?? await ObtainCertificateAsync(options.JoinUrl!, cancellationToken).ConfigureAwait(false);
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

            if (response.CaKey is not null)
            {
                Identity.StoreAuthorityKey(dataDirectory, response.CaKey);
            }

            if (response.Role == Membership.Voter)
            {
                service = raft;
            }
            else
            {
                await raft.DisposeAsync().ConfigureAwait(false);
                Directory.Delete(MetadataDirectory, recursive: true);
                service = new RemoteMetadataService(response.Members, http, Logger);
                await service.StartAsync(cancellationToken).ConfigureAwait(false);
            }

            membership = new Membership { Role = response.Role, ClusterId = response.ClusterId, Members = response.Members };
            MembershipFile.Save(dataDirectory, membership);
        }
        else if (membership.Role == Membership.Voter)
        {
            identity = LoadIdentity(dataDirectory);
            service = NewRaft(coldStart: false);
            await service.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            identity = LoadIdentity(dataDirectory);
            service = new RemoteMetadataService(membership.Members, http, Logger);
            await service.StartAsync(cancellationToken).ConfigureAwait(false);
        }

        metadata ??= new ClusterMetadata(service, () => identity);
        var current = metadata;
        Identity.UseRevocationList(serial => current.Current.IsRevoked(serial));
        Log.ClusterIdentity(Logger, Identity.CaFingerprint, Identity.Serial, RpcUrl);
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
                var target = Metadata.Raft is null ? membership?.Members.FirstOrDefault() : Metadata.LeaderRpc();
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

        var endpoints = new HostEndpoints(request.Api, request.Nbd, request.Peer, voter ? request.Raft : null, request.Rpc);
        await Metadata.ProposeOkAsync(
            new RegisterHost(Guid.NewGuid(), request.HostId, request.Name, request.FaultDomain, endpoints, voter, DateTimeOffset.UtcNow),
            cancellationToken).ConfigureAwait(false);
        Log.ClusterVirtualDisk(Logger, request.Name, "joined", voter ? "as a voter" : "as a metadata client");
        return Response(voter);

        JoinResponse Response(bool isVoter) => new()
        {
            Role = isVoter ? Membership.Voter : Membership.Client,
            ClusterId = cluster.ClusterId,
            Members = [.. Metadata.Current.Hosts.Values.Where(h => h.Voter && h.Endpoints.Rpc is not null).Select(h => h.Endpoints.Rpc!)],

            // Voters sign the certificates of joining hosts, so each one holds the CA key (docs/security/identity.md).
            CaKey = isVoter ? Identity.Authority?.KeyPem() : null,
        };
    }

    /// <summary>
    /// A joining host's join token and key (CSR) for a certificate: checked and signed on the leader (a voter, so it
    /// holds the CA key), the token consumed by a committed command first; elsewhere forwarded to the leader.
    /// </summary>
    /// <exception cref="JoinRefusedException">The token is wrong, used, expired or for another cluster; nothing changed.</exception>
    public async Task<JoinCertificateResponse> HandleCertificateAsync(JoinCertificateRequest request, bool forwarded, CancellationToken cancellationToken)
    {
        if (!JoinToken.TryParse(request.Token, out var token, out var error))
        {
            throw new JoinRefusedException(error);
        }

        if (!string.Equals(token.CaFingerprint, Identity.CaFingerprint, StringComparison.Ordinal))
        {
            throw new JoinRefusedException("the join token is for another cluster (its CA hash is not this cluster's)");
        }

        if (!NameRules.IsValid(request.Name, out var nameError) || !Guid.TryParseExact(request.HostId, "N", out _))
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, $"host {(nameError.Length > 0 ? nameError : "id is not a GUID")}");
        }

        if (Metadata.Raft is not { IsLeader: true } || Identity.Authority is null)
        {
            if (forwarded)
            {
                throw new ClusterOperationException(HostErrorKind.Unavailable, "this host is not the metadata leader");
            }

            var target = Metadata.Raft is null ? membership?.Members.FirstOrDefault() : Metadata.LeaderRpc();
            if (target is null)
            {
                throw new MetadataUnavailableException("no metadata leader is known yet");
            }

            using var message = new HttpRequestMessage(HttpMethod.Post, target.TrimEnd('/') + "/internal/v1/cluster/certificate")
            {
                Content = JsonContent.Create(request, ContractsJsonContext.Default.JoinCertificateRequest),
            };
            message.Headers.Add(ClusterMetadata.ForwardedHeader, "1");
            using var response = await http.SendAsync(message, cancellationToken).ConfigureAwait(false);
            var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.Forbidden)
            {
                throw new JoinRefusedException(Detail(body));
            }

            if (!response.IsSuccessStatusCode)
            {
                throw new MetadataUnavailableException($"the metadata leader did not sign the certificate (HTTP {(int)response.StatusCode}): {Detail(body)}");
            }

            return JsonSerializer.Deserialize(body, ContractsJsonContext.Default.JoinCertificateResponse)
                ?? throw new MetadataUnavailableException("the metadata leader returned an empty certificate response");
        }

        var now = options.Time.GetUtcNow();
        var state = Metadata.Current;
        if (!state.JoinTokens.TryGetValue(token.Id, out var record) || !token.Matches(record.Salt, record.Hash))
        {
            Log.JoinRefused(Logger, request.Name, "unknown token or wrong secret");
            throw new JoinRefusedException("the join token is not valid for this cluster (unknown id or wrong secret)");
        }

        if (record.UsedBy is not null || now >= record.ExpiresAt)
        {
            var reason = record.UsedBy is not null ? "the join token was already used" : $"the join token expired at {record.ExpiresAt:u}";
            Log.JoinRefused(Logger, request.Name, reason);
            throw new JoinRefusedException(reason + "; create another with 'converge cluster join-token create'");
        }

        var addresses = request.Addresses.Select(a => IPAddress.TryParse(a, out var ip) ? ip : null).OfType<IPAddress>()
            .Where(ip => !ip.Equals(IPAddress.Any) && !ip.Equals(IPAddress.IPv6Any)).Take(16);
        X509Certificate2 certificate;
        try
        {
            certificate = Identity.Authority.SignHostCertificate(request.Csr, request.Name, addresses, now);
        }
        catch (ArgumentException e)
        {
            throw new ClusterOperationException(HostErrorKind.Invalid, e.Message);
        }

        using (certificate)
        {
            // The token is spent by a committed command before the certificate leaves: a second use is refused there.
            var result = await Metadata.ProposeAsync(
                new ConsumeJoinToken(Guid.NewGuid(), token.Id, request.HostId, request.Name, certificate.SerialNumber, now), cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                Log.JoinRefused(Logger, request.Name, result.Error ?? "refused");
                throw new JoinRefusedException(result.Error ?? "the join token was refused");
            }

            Log.CertificateIssued(Logger, certificate.SerialNumber, request.Name, token.Id);
            return new JoinCertificateResponse { Certificate = certificate.ExportCertificatePem(), CaCertificate = Identity.CaCertificate.ExportCertificatePem() };
        }
    }

    /// <summary>Creates a join token (any host): only its salted hash is committed.</summary>
    public async Task<JoinTokenInfo> CreateJoinTokenAsync(TimeSpan ttl, CancellationToken cancellationToken)
    {
        var fingerprint = Metadata.Current.Cluster?.CaFingerprint
            ?? throw new ClusterOperationException(HostErrorKind.Unavailable, "the cluster has no CA yet (not initialized, or founded before cluster identities)");
        var token = JoinToken.Create(fingerprint);
        var salt = JoinToken.NewSalt();
        var now = options.Time.GetUtcNow();
        await Metadata.ProposeOkAsync(new CreateJoinToken(Guid.NewGuid(), token.Id, salt, JoinToken.Hash(salt, token.Secret), now, now + ttl), cancellationToken).ConfigureAwait(false);
        return new JoinTokenInfo { Token = token.ToString(), Id = token.Id, ExpiresAt = now + ttl, CaFingerprint = fingerprint };
    }

    /// <summary>Revokes every certificate of the host named <paramref name="name"/>.</summary>
    public async Task<RevokeHostInfo> RevokeHostAsync(string name, CancellationToken cancellationToken)
    {
        var host = Metadata.Current.FindHostByName(name) ?? throw new ClusterOperationException(HostErrorKind.NotFound, $"host '{name}' is not in the cluster");
        var serials = Metadata.Current.Certificates.Values.Where(c => c.HostId == host.HostId && c.RevokedAt is null).Select(c => c.Serial).ToList();
        if (Metadata.Current.Certificates.Values.Any(c => c.HostId == host.HostId))
        {
            await Metadata.ProposeOkAsync(new RevokeHostCertificates(Guid.NewGuid(), host.HostId, options.Time.GetUtcNow(), "revoked by the operator"), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            throw new ClusterOperationException(HostErrorKind.Conflict, $"host '{name}' has no certificate issued by this cluster's CA");
        }

        return new RevokeHostInfo { Host = host.Name, RevokedSerials = serials };
    }

    /// <summary>Asks the host at <paramref name="rpc"/> to stop coordinating a virtual disk and release its lease.</summary>
    public async Task PostReleaseAsync(string? rpc, string virtualDiskId, CancellationToken cancellationToken)
    {
        if (rpc is null)
        {
            return;
        }

        try
        {
            using var response = await http.PostAsync($"{rpc.TrimEnd('/')}/internal/v1/vdisks/{virtualDiskId}/release", null, cancellationToken).ConfigureAwait(false);
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
        identity?.Dispose();
    }

    private RaftMetadataService NewRaft(bool coldStart) => new(new MetadataOptions
    {
        DataDirectory = MetadataDirectory,
        RaftEndPoint = options.RaftEndPoint!,
        ColdStart = coldStart,
        LoggerFactory = loggerFactory,
        Time = options.Time,
        Tls = new RaftTls(Identity.Certificate, (_, certificate, _, _) => Identity.Validator.Validate(certificate, out _)),
    });

    private static HostIdentity LoadIdentity(string dataDirectory) =>
        HostIdentity.Load(dataDirectory)
        ?? throw new HostStartException(
            $"{HostIdentity.DirectoryOf(dataDirectory)}/{HostIdentity.HostCertificateFile} is missing: this host has no cluster certificate " +
            "(restore DATA/tls, or remove the host and join it again with a join token)");

    /// <summary>The addresses this host listens on, for its certificate (wildcards left out; 127.0.0.1 is always in).</summary>
    private IEnumerable<IPAddress> ListenAddresses() =>
        new[] { options.ApiEndPoint, options.NbdEndPoint, options.PeerEndPoint, options.RaftEndPoint, options.RpcEndPoint }
            .OfType<IPEndPoint>().Select(e => e.Address)
            .Where(a => !a.Equals(IPAddress.Any) && !a.Equals(IPAddress.IPv6Any)).Distinct();

    /// <summary>
    /// Founds the cluster record with this host's CA and checks that the committed record is ours: if another
    /// initialization won a race, this host refuses to continue.
    /// </summary>
    private async Task InitializeClusterAsync(ClusterMetadata m, CancellationToken cancellationToken)
    {
        if (m.Current.Cluster is null)
        {
            var dataDirectory = Path.GetFullPath(options.DataDirectory);
            var result = await m.ProposeAsync(
                new InitializeCluster(
                    Guid.NewGuid(), Guid.NewGuid().ToString("N"), "converge", DateTimeOffset.UtcNow, StoragePolicy.Default, options.VoterTarget,
                    Management.AdminToken.Hash(Management.AdminToken.LoadOrCreate(dataDirectory)),
                    Identity.CaCertificate.ExportCertificatePem(), Identity.CaFingerprint),
                cancellationToken, TimeSpan.FromSeconds(30)).ConfigureAwait(false);
            if (!result.Succeeded && m.Current.Cluster is null)
            {
                throw new ClusterOperationException(HostErrorKind.Unavailable, result.Error ?? "initialization refused");
            }

            if (result.Succeeded)
            {
                Management.ManagementLog.AdminTokenWritten(Logger, Path.Combine(dataDirectory, Management.AdminToken.FileName));
            }
        }

        var committed = m.Current.Cluster!;
        if (!string.Equals(committed.CaFingerprint, Identity.CaFingerprint, StringComparison.Ordinal))
        {
            var reason = $"the committed cluster {committed.ClusterId} has CA {committed.CaFingerprint ?? "(none)"}, not this founder's {Identity.CaFingerprint}: " +
                         "another initialization won; this host stops (remove its data directory and join the cluster with a join token)";
            Log.ClusterIdentityMismatch(Logger, reason);
            throw new HostStartException(reason);
        }

        if (!m.Current.Certificates.ContainsKey(Identity.Serial))
        {
            await m.ProposeAsync(new RecordCertificate(Guid.NewGuid(), HostId, inventory.HostName, Identity.Serial, DateTimeOffset.UtcNow), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Trades the join token for a certificate: fetches the CA over TLS from the member at <paramref name="seed"/>,
    /// checks it against the token's CA hash and that the member's certificate chains to it, and only then sends the
    /// token and a CSR for a new key.
    /// </summary>
    private async Task<HostIdentity> ObtainCertificateAsync(Uri seed, CancellationToken cancellationToken)
    {
        if (!JoinToken.TryParse(options.JoinToken, out var token, out var error))
        {
            throw new HostStartException($"--join-token: {error}");
        }

        var dataDirectory = Path.GetFullPath(options.DataDirectory);
        Log.Joining(Logger, seed.ToString());
        var deadline = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                var ca = await FetchPinnedCaAsync(seed, token.CaFingerprint, cancellationToken).ConfigureAwait(false);
                var request = new JoinCertificateRequest
                {
                    Token = token.ToString(),
                    HostId = HostId,
                    Name = inventory.HostName,
                    Csr = HostIdentity.CreateKeyAndSigningRequest(dataDirectory, inventory.HostName),
                    Addresses = [.. ListenAddresses().Select(a => a.ToString())],
                };
                var validator = new ClusterCertificateValidator(ca, _ => false);
                using var client = new HttpClient(new SocketsHttpHandler
                {
                    SslOptions = new System.Net.Security.SslClientAuthenticationOptions
                    {
                        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                        RemoteCertificateValidationCallback = (_, certificate, _, _) => validator.Validate(certificate, out _),
                    },
                })
                {
                    Timeout = TimeSpan.FromSeconds(30),
                };
                using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(seed, "/internal/v1/cluster/certificate"))
                {
                    Content = JsonContent.Create(request, ContractsJsonContext.Default.JoinCertificateRequest),
                };
                message.Headers.Host = ClusterTls.JoinServerName;
                using var response = await client.SendAsync(message, cancellationToken).ConfigureAwait(false);
                var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
                if ((int)response.StatusCode is >= 400 and < 500)
                {
                    throw new HostStartException($"the cluster refused the join through {seed}: {Detail(body)}");
                }

                if (!response.IsSuccessStatusCode)
                {
                    throw new MetadataUnavailableException($"{seed} answered HTTP {(int)response.StatusCode}: {Detail(body)}");
                }

                var issued = JsonSerializer.Deserialize(body, ContractsJsonContext.Default.JoinCertificateResponse)
                    ?? throw new MetadataUnavailableException($"{seed} returned an empty certificate response");
                using var sent = X509Certificate2.CreateFromPem(issued.CaCertificate);
                if (!string.Equals(CertificateFingerprint.Of(sent), token.CaFingerprint, StringComparison.Ordinal))
                {
                    throw new HostStartException($"{seed} sent a CA certificate that is not the one the join token names");
                }

                return HostIdentity.Complete(dataDirectory, issued.Certificate, issued.CaCertificate, caKeyPem: null);
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
            catch (CryptographicException e)
            {
                throw new HostStartException($"the certificate from {seed} is not usable: {e.Message}", e);
            }
        }
    }

    /// <summary>The member's CA certificate, if its SHA-256 is <paramref name="fingerprint"/> and the member's own TLS certificate chains to it.</summary>
    private static async Task<X509Certificate2> FetchPinnedCaAsync(Uri seed, string fingerprint, CancellationToken cancellationToken)
    {
        byte[]? presented = null;
        using var client = new HttpClient(new SocketsHttpHandler
        {
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,

                // Nothing secret is sent on this connection: the certificate is checked against the pinned CA below.
                RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                {
                    presented = certificate?.GetRawCertData();
                    return presented is not null;
                },
            },
        })
        {
            Timeout = TimeSpan.FromSeconds(10),
        };
        using var message = new HttpRequestMessage(HttpMethod.Get, new Uri(seed, "/internal/v1/cluster/ca"));
        message.Headers.Host = ClusterTls.JoinServerName;
        using var response = await client.SendAsync(message, cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new MetadataUnavailableException($"{seed} did not send its CA certificate (HTTP {(int)response.StatusCode})");
        }

        var ca = X509Certificate2.CreateFromPem(await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false));
        if (!string.Equals(CertificateFingerprint.Of(ca), fingerprint, StringComparison.Ordinal))
        {
            throw new HostStartException($"{seed} belongs to another cluster: its CA's SHA-256 {CertificateFingerprint.Of(ca)} is not the join token's {fingerprint}");
        }

        using var server = presented is null ? null : X509CertificateLoader.LoadCertificate(presented);
        if (!new ClusterCertificateValidator(ca, _ => false).Validate(server, out var reason))
        {
            throw new HostStartException($"{seed}'s TLS certificate is not from the cluster the join token names: {reason}");
        }

        return ca;
    }

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
            Rpc = RpcUrl,
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
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(api, "/internal/v1/cluster/join"))
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
            catch (HostStartException e)
            {
                // The committed cluster identity is not this founder's: stop rather than serve someone else's cluster.
                Log.StartFailed(Logger, e.Message);
                lifetime.StopApplication();
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
                await InitializeClusterAsync(m, cancellationToken).ConfigureAwait(false);
            }
            else if (!await m.WaitForAsync(s => s.Cluster is not null, TimeSpan.FromSeconds(5), cancellationToken).ConfigureAwait(false))
            {
                throw new MetadataUnavailableException("waiting for the cluster metadata to catch up");
            }
        }

        var endpoints = new HostEndpoints(ApiUrl, NbdEndpoint, PeerEndpoint, IsVoter ? RaftEndpoint : null, RpcUrl);
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
