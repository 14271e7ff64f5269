using System.Collections.Concurrent;
using Converge.Common;
using Converge.Coordinator;
using Converge.Coordinator.Peer;
using Converge.Coordinator.Tracking;
using Converge.Metadata;
using Converge.Nbd;

namespace Converge.Host.Cluster;

/// <summary>
/// Decides, per virtual disk, who drives its I/O: this host when it holds (or can take) the coordinator lease —
/// then a <see cref="ReplicatedVolume"/> over local store components and <see cref="RemoteComponent"/>s fenced with
/// the current generation and lease epoch — otherwise a proxy to the lease holder over the peer protocol
/// (<see cref="PeerFlags.Object"/>). Leases last 10 s, are renewed every 3 s, and a coordinator stops serving 2 s
/// before its lease could expire.
/// </summary>
internal sealed class CoordinatorManager : INbdExportCatalog, IAsyncDisposable
{
    public static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan RenewInterval = TimeSpan.FromSeconds(3);
    public static readonly TimeSpan SafetyMargin = TimeSpan.FromSeconds(2);

    private readonly ClusterMetadata metadata;
    private readonly LocalComponents local;
    private readonly PeerClients peers;
    private readonly TimeProvider time;
    private readonly ILogger logger;
    private readonly FailureOptions failureOptions;
    private long repairedBytes;
    private long scrubbedBytes;
    private long scrubErrors;
    private long scrubPasses;
    private long repairs;
    private readonly ConcurrentDictionary<string, CoordinatedDisk> coordinated = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim acquire = new(1, 1);
    private readonly CancellationTokenSource stop = new();
    private Task renewer = Task.CompletedTask;

    public CoordinatorManager(
        ClusterMetadata metadata, LocalComponents local, PeerClients peers, IFenceAuthority fences, ResyncTracker resyncs, string hostId,
        FailureOptions failureOptions, TimeProvider time, ILogger logger)
    {
        this.metadata = metadata;
        this.local = local;
        this.peers = peers;
        this.time = time;
        this.logger = logger;
        Fences = fences;
        Resyncs = resyncs;
        HostId = hostId;
        ReplicaTimeout = failureOptions.ReplicaTimeout;
        IntentRotation = failureOptions.IntentRotation;
        ClientActivity = new ClientActivity(time);
        this.failureOptions = failureOptions;
    }

    public string HostId { get; }

    public ClusterMetadata Metadata => metadata;

    public LocalComponents Local => local;

    public PeerClients Peers => peers;

    public IFenceAuthority Fences { get; }

    public ResyncTracker Resyncs { get; }

    public TimeProvider Time => time;

    public ILogger Logger => logger;

    /// <summary>A remote replica that does not answer within this is treated as failed.</summary>
    public TimeSpan ReplicaTimeout { get; }

    /// <summary>How often the write-intent slots are switched (and the older one cleared).</summary>
    public TimeSpan IntentRotation { get; }

    /// <summary>When this host's coordinators last served a client request: copies pace themselves by it.</summary>
    public ClientActivity ClientActivity { get; }

    /// <summary>A pacer for one copy: the resync bandwidth while clients are busy, the idle one otherwise.</summary>
    public ResyncPacer CreateResyncPacer() =>
        new(ClientActivity, failureOptions.ResyncBandwidthBytesPerSecond, failureOptions.IdleResyncBandwidthBytesPerSecond);

    /// <summary>How long an absent component may stay away before it is rebuilt elsewhere.</summary>
    public TimeSpan RepairDelay => failureOptions.RepairDelay;

    /// <summary>Set by the node: placement topology and component creation, for rebuilds.</summary>
    public ClusterManager? Manager { get; set; }

    /// <summary>Checksum errors found by reads and rewritten from another replica, since start.</summary>
    public long Repairs => Interlocked.Read(ref repairs);

    public long RepairedBytes => Interlocked.Read(ref repairedBytes);

    /// <summary>Scrubber rate per virtual disk, bytes per second (0: off).</summary>
    public long ScrubBytesPerSecond => failureOptions.ScrubBytesPerSecond;

    public long ScrubbedBytes => Interlocked.Read(ref scrubbedBytes);

    public long ScrubErrors => Interlocked.Read(ref scrubErrors);

    public long ScrubPasses => Interlocked.Read(ref scrubPasses);

    public void CountScrubbed(long bytes, int errors)
    {
        Interlocked.Add(ref scrubbedBytes, bytes);
        Interlocked.Add(ref scrubErrors, errors);
    }

    public void CountScrubPass() => Interlocked.Increment(ref scrubPasses);

    public void CountRepair(long bytes)
    {
        Interlocked.Increment(ref repairs);
        Interlocked.Add(ref repairedBytes, bytes);
    }

    /// <summary>Whether a component's host answers and holds the component (for resync).</summary>
    public async Task<bool> ComponentReachableAsync(Placement.ComponentPlacement component, CancellationToken cancellationToken)
    {
        if (component.HostId == HostId)
        {
            return local.FindComponent(component.ComponentId) is not null;
        }

        if (!metadata.Current.Hosts.TryGetValue(component.HostId, out var host))
        {
            return false;
        }

        return await peers.PingAsync(host.Endpoints.PeerData, TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
    }

    public void Start() => renewer = Task.Run(() => RenewLoopAsync(stop.Token), CancellationToken.None);

    public IReadOnlyList<NbdExportInfo> ListExports() =>
    [
        .. metadata.Current.VirtualDisks.Values
            .OrderBy(v => v.Name, StringComparer.Ordinal)
            .Select(v => new NbdExportInfo(v.Name, $"Converge virtual disk {v.Name}, {ByteSize.Format(v.SizeBytes)}, policy {v.PolicyName}")),
    ];

    public async ValueTask<IBlockVolume?> FindExportAsync(string name, CancellationToken cancellationToken)
    {
        var state = metadata.Current;
        VirtualDiskRecord? vdisk;
        if (name.Length == 0)
        {
            vdisk = state.VirtualDisks.Count == 1 ? state.VirtualDisks.Values.First() : null;
        }
        else
        {
            vdisk = state.FindVirtualDiskByName(name);
            if (vdisk is null)
            {
                // Just created on another host? Catch up (linearizable read, 2 s at most) before answering "no such export".
                try
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    timeout.CancelAfter(TimeSpan.FromSeconds(2));
                    await metadata.Service.BarrierAsync(timeout.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException or InvalidOperationException ||
                                          (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
                {
                }

                vdisk = metadata.Current.FindVirtualDiskByName(name);
            }
        }

        return vdisk is null ? null : new ExportVolume(this, vdisk.VirtualDiskId, vdisk.Name, vdisk.SizeBytes);
    }

    /// <summary>
    /// The volume to send a request for <paramref name="virtualDiskId"/> to: this host's coordinator (taking or renewing
    /// the lease if needed) or, with <paramref name="allowProxy"/>, a proxy to the host that holds the lease.
    /// </summary>
    public async ValueTask<IBlockVolume> ResolveAsync(string virtualDiskId, bool allowProxy, CancellationToken cancellationToken)
    {
        for (var attempt = 0; attempt < 5; attempt++)
        {
            var state = metadata.Current;
            if (!state.VirtualDisks.TryGetValue(virtualDiskId, out var vdisk))
            {
                throw new VolumeException(VolumeError.Unavailable, $"virtual disk {virtualDiskId} does not exist (deleted?)");
            }

            var now = time.GetUtcNow();
            if (coordinated.TryGetValue(virtualDiskId, out var mine) && mine.IsValid(now))
            {
                return mine.Front;
            }

            if (vdisk.Lease is { } lease && lease.HostId != HostId && !lease.IsExpiredAt(now))
            {
                if (!allowProxy)
                {
                    throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{vdisk.Name}' is coordinated by host {lease.HostId}, not this one");
                }

                if (!state.Hosts.TryGetValue(lease.HostId, out var holder))
                {
                    throw new VolumeException(VolumeError.Unavailable, $"the coordinator of '{vdisk.Name}' ({lease.HostId}) is not a known host");
                }

                return new RemoteComponent(
                    Guid.ParseExact(vdisk.VirtualDiskId, "N"), vdisk.Name, vdisk.SizeBytes, peers.Get(holder.Endpoints.PeerData),
                    static () => default, PeerFlags.Object);
            }

            if (await TryAcquireAsync(virtualDiskId, cancellationToken).ConfigureAwait(false) is { } volume)
            {
                return volume;
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }

        throw new VolumeException(VolumeError.Unavailable, $"virtual disk {virtualDiskId}: could not take or find its coordinator lease");
    }

    /// <summary>Stops coordinating a virtual disk and releases its lease (before a delete on another host).</summary>
    public async Task ReleaseAsync(string virtualDiskId, CancellationToken cancellationToken)
    {
        if (coordinated.TryRemove(virtualDiskId, out var mine))
        {
            mine.Stop();
            await metadata.ProposeAsync(new ReleaseLease(Guid.NewGuid(), virtualDiskId, HostId, mine.Epoch), cancellationToken).ConfigureAwait(false);
            Log.CoordinatorStopped(logger, mine.Name, "lease released");
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stop.CancelAsync().ConfigureAwait(false);
        await renewer.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);

        // Hand the leases back so that another host can coordinate at once instead of after expiry.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        foreach (var id in coordinated.Keys.ToList())
        {
            try
            {
                await ReleaseAsync(id, timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is MetadataUnavailableException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
            {
                break;
            }
        }

        stop.Dispose();
        acquire.Dispose();
    }

    private async Task<IBlockVolume?> TryAcquireAsync(string virtualDiskId, CancellationToken cancellationToken)
    {
        await acquire.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var state = metadata.Current;
            if (!state.VirtualDisks.TryGetValue(virtualDiskId, out var vdisk))
            {
                return null;
            }

            var now = time.GetUtcNow();
            if (coordinated.TryGetValue(virtualDiskId, out var mine) && mine.IsValid(now))
            {
                return mine.Front;
            }

            var lease = vdisk.Lease;
            if (lease is not null && lease.HostId != HostId && !lease.IsExpiredAt(now))
            {
                return null;
            }

            // Our own lease (a restart or a lapsed renewal) is renewed at its epoch: nobody took it over meanwhile.
            var epoch = lease is not null && lease.HostId == HostId && lease.Epoch == vdisk.LeaseEpoch ? lease.Epoch : vdisk.LeaseEpoch + 1;
            var result = await metadata.ProposeAsync(
                new AcquireLease(Guid.NewGuid(), virtualDiskId, HostId, epoch, now, LeaseDuration), cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded || result.Lease is not { } granted)
            {
                return null;
            }

            if (mine is null || mine.Epoch != granted.Epoch)
            {
                mine?.Stop();
                var fresh = new CoordinatedDisk(this, virtualDiskId, vdisk.Name, granted.Epoch);
                fresh.Extend(granted.ExpiresAt);

                // A new coordinator (or this one after a restart) makes replicas agree before serving anything.
                try
                {
                    await fresh.ReconcileAsync(cancellationToken).ConfigureAwait(false);
                }
                catch
                {
                    fresh.Stop();
                    throw;
                }

                mine = fresh;
                mine.Start();
            }

            mine.Extend(granted.ExpiresAt);
            coordinated[virtualDiskId] = mine;
            var current = metadata.Current.VirtualDisks.GetValueOrDefault(virtualDiskId) ?? vdisk;
            Log.Coordinating(logger, vdisk.Name, granted.Epoch, current.Generation);
            return mine.Front;
        }
        finally
        {
            acquire.Release();
        }
    }

    private async Task RenewLoopAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500), time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                foreach (var disk in coordinated.Values)
                {
                    var now = time.GetUtcNow();
                    if (disk.ExpiresAt - now > LeaseDuration - RenewInterval)
                    {
                        continue;
                    }

                    await RenewAsync(disk, now, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task RenewAsync(CoordinatedDisk disk, DateTimeOffset now, CancellationToken cancellationToken)
    {
        try
        {
            var result = await metadata.ProposeAsync(
                new AcquireLease(Guid.NewGuid(), disk.VirtualDiskId, HostId, disk.Epoch, now, LeaseDuration),
                cancellationToken, timeout: TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            if (result.Succeeded && result.Lease is { } granted && granted.Epoch == disk.Epoch)
            {
                disk.Extend(granted.ExpiresAt);
                return;
            }

            // Refused: the virtual disk is gone or another host took the lease over (a higher epoch).
            if (coordinated.TryRemove(KeyValuePair.Create(disk.VirtualDiskId, disk)))
            {
                disk.Stop();
                Log.CoordinatorStopped(logger, disk.Name, result.Error ?? "lease lost");
            }
        }
        catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            // I/O stops by itself when the lease gets within the safety margin of expiry.
            Log.LeaseRenewalFailed(logger, disk.Name, e.Message);
        }
    }

}

/// <summary>
/// What NBD serves for a cluster virtual disk: each request is routed at the time it runs (coordinator here or proxy
/// to the lease holder), and retried while the coordinator moves (a proxy target that stopped, a lease being taken).
/// </summary>
internal sealed class ExportVolume(CoordinatorManager manager, string virtualDiskId, string name, long size) : IBlockVolume
{
    private static readonly TimeSpan RetryFor = TimeSpan.FromSeconds(45);

    /// <summary>
    /// A proxied request is abandoned and re-routed once the coordinator's lease has lapsed (it hangs, or sits behind a
    /// partition), and in any case after this long.
    /// </summary>
    private static readonly TimeSpan ProxyTimeout = TimeSpan.FromSeconds(60);

    private static readonly TimeSpan LeaseCheckInterval = TimeSpan.FromMilliseconds(500);

    public string Name { get; } = name;

    public long Size { get; } = size;

    public VolumeCapabilities Capabilities =>
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes |
        VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        RunAsync((v, ct) => v.ReadAsync(offset, buffer, ct), cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        RunAsync((v, ct) => v.WriteAsync(offset, data, flags, ct), cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken) =>
        RunAsync((v, ct) => v.FlushAsync(ct), cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) =>
        RunAsync((v, ct) => v.TrimAsync(offset, length, flags, ct), cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) =>
        RunAsync((v, ct) => v.WriteZeroesAsync(offset, length, flags, ct), cancellationToken);

    public async ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        IReadOnlyList<AllocationExtent> result = [];
        await RunAsync(
            async (v, ct) => result = await v.GetAllocationAsync(offset, length, ct).ConfigureAwait(false),
            cancellationToken).ConfigureAwait(false);
        return result;
    }

    private async ValueTask RunAsync(Func<IBlockVolume, CancellationToken, ValueTask> operation, CancellationToken cancellationToken)
    {
        var deadline = DateTimeOffset.UtcNow + RetryFor;
        while (true)
        {
            IBlockVolume volume;
            try
            {
                volume = await manager.ResolveAsync(virtualDiskId, allowProxy: true, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is MetadataUnavailableException && DateTimeOffset.UtcNow < deadline)
            {
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
                continue;
            }
            catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException)
            {
                throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}': {e.Message}", e);
            }
            catch (VolumeException e) when (e.Error == VolumeError.Unavailable && DateTimeOffset.UtcNow < deadline)
            {
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
                continue;
            }

            if (volume is not RemoteComponent)
            {
                try
                {
                    await operation(volume, cancellationToken).ConfigureAwait(false);
                    return;
                }
                catch (VolumeException e) when (e.Error == VolumeError.Unavailable && e is not ReplicaFailureException && DateTimeOffset.UtcNow < deadline)
                {
                    // This host's lease lapsed under the request: find the current coordinator.
                    await Task.Delay(200, cancellationToken).ConfigureAwait(false);
                    continue;
                }
            }

            // Wait for the coordinator as long as its lease stands (it may be retrying around a failed replica, or
            // waiting for a metadata election); once the lease has moved or expired it is hung or cut off: re-route.
            var routedBy = manager.Metadata.Current.VirtualDisks.GetValueOrDefault(virtualDiskId)?.Lease;
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            bounded.CancelAfter(ProxyTimeout);
            try
            {
                var pending = operation(volume, bounded.Token).AsTask();
                while (true)
                {
                    try
                    {
                        await pending.WaitAsync(LeaseCheckInterval, cancellationToken).ConfigureAwait(false);
                        return;
                    }
                    catch (TimeoutException)
                    {
                        var lease = manager.Metadata.Current.VirtualDisks.GetValueOrDefault(virtualDiskId)?.Lease;
                        if (lease is null || routedBy is null || lease.Epoch != routedBy.Epoch || lease.HostId != routedBy.HostId ||
                            lease.IsExpiredAt(manager.Time.GetUtcNow()))
                        {
                            // Do not wait for the abandoned request: its send may be stuck behind the cut-off link.
                            await bounded.CancelAsync().ConfigureAwait(false);
                            _ = pending.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
                            throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}': its coordinator {routedBy?.HostId} stopped answering and its lease lapsed");
                        }
                    }
                }
            }
            catch (Exception e) when ((e is VolumeException { Error: VolumeError.Unavailable } ||
                                       (e is OperationCanceledException && !cancellationToken.IsCancellationRequested)) &&
                                      DateTimeOffset.UtcNow < deadline)
            {
                // The coordinator we proxied to stopped, hangs, is cut off, or gave up its lease: find the current one.
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}

/// <summary>An active component that this host should hold but does not find: every request fails, so no write is acknowledged without it.</summary>
internal sealed class MissingComponent(Guid componentId, long size) : IReplicaComponent
{
    public Guid ComponentId { get; } = componentId;

    public bool IsLocal => true;

    public string Name { get; } = componentId.ToString("N");

    public long Size { get; } = size;

    public VolumeCapabilities Capabilities => VolumeCapabilities.None;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => Fail();

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) => Fail();

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken) => Fail();

    public ValueTask FlushAsync(CancellationToken cancellationToken) => Fail();

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) => Fail();

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken) => Fail();

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) => Fail();

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, ChangeKinds track, CancellationToken cancellationToken) => Fail();

    public ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromException<IReadOnlyList<AllocationExtent>>(Error());

    public ValueTask<List<ChangedRange>> ReadChangesAsync(ChangeKinds kinds, CancellationToken cancellationToken) =>
        ValueTask.FromException<List<ChangedRange>>(Error());

    public ValueTask ClearChangesAsync(ChangeKinds kinds, long offset, long length, CancellationToken cancellationToken) => Fail();

    private ValueTask Fail() => ValueTask.FromException(Error());

    private VolumeException Error() => new(VolumeError.Unavailable, $"component {Name} is not on this host's online disks");
}

/// <summary>Failure handling knobs of a host's coordinators (docs/failures.md).</summary>
public sealed record FailureOptions
{
    public TimeSpan ReplicaTimeout { get; init; } = TimeSpan.FromSeconds(3);

    public TimeSpan IntentRotation { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Resync, rebuild and move copy rate per virtual disk while its coordinator serves clients (a request within the
    /// last second); 0: unlimited. At 200 MiB/s a rebuild left a busy client 70-111 % of its IOPS (bench/RESULTS.md).
    /// </summary>
    public long ResyncBandwidthBytesPerSecond { get; init; } = 200L << 20;

    /// <summary>The copy rate while the coordinator serves no client (0: unlimited): redundancy comes back sooner.</summary>
    public long IdleResyncBandwidthBytesPerSecond { get; init; } = 512L << 20;

    /// <summary>An absent component is rebuilt elsewhere after this long (a degraded one at once).</summary>
    public TimeSpan RepairDelay { get; init; } = TimeSpan.FromMinutes(60);

    /// <summary>The scrubber reads this much of every replica per second, per virtual disk (0: off).</summary>
    public long ScrubBytesPerSecond { get; init; } = 1L << 20;

    /// <summary>A local component no virtual disk has referenced for this long is deleted (zero: never).</summary>
    public TimeSpan OrphanGrace { get; init; } = TimeSpan.FromMinutes(10);
}
