using System.Collections.Concurrent;
using System.Net;
using Converge.Common;
using Converge.Coordinator;
using Converge.Coordinator.Peer;

namespace Converge.Host.Cluster;

/// <summary>One multiplexed <see cref="PeerClient"/> per peer endpoint, shared by coordinators, proxies and management.</summary>
internal sealed class PeerClients(Func<Converge.Security.HostIdentity?> identity) : IAsyncDisposable
{
    private readonly System.Net.Security.SslClientAuthenticationOptions tls = ClusterTls.PeerClientOptions(identity);

    public static readonly TimeSpan StatsTimeout = TimeSpan.FromSeconds(2);
    private readonly ConcurrentDictionary<string, PeerClient> clients = new(StringComparer.Ordinal);

    public PeerClient Get(string endpoint) =>
        clients.GetOrAdd(endpoint, static (e, tls) => new PeerClient(IPEndPoint.Parse(e), TimeSpan.FromSeconds(2), tls), tls);

    /// <summary>The disks of a peer with their usage; null when it does not answer within 2 s.</summary>
    public async Task<IReadOnlyList<PeerDiskStats>?> TryDiskStatsAsync(string endpoint, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(StatsTimeout);
        var buffer = new byte[4 + (256 * PeerDiskStats.Size)];
        try
        {
            var length = await Get(endpoint).SendAsync(
                new PeerRequestHeader(PeerOp.DiskStats, PeerFlags.None, 0, Guid.Empty, 0, 0, 0, 0),
                ReadOnlyMemory<byte>.Empty, buffer, timeout.Token).ConfigureAwait(false);
            return ComponentPeerHandler.DecodeStats(buffer.AsSpan(0, length));
        }
        catch (Exception e) when (e is VolumeException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    /// <summary>Whether the peer answers a PING within <paramref name="timeout"/>.</summary>
    public async Task<bool> PingAsync(string endpoint, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bounded.CancelAfter(timeout);
        try
        {
            await Get(endpoint).SendAsync(
                new PeerRequestHeader(PeerOp.Ping, PeerFlags.None, 0, Guid.Empty, 0, 0, 0, 0),
                ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, bounded.Token).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is VolumeException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    public async Task EnsureComponentAsync(string endpoint, Guid componentId, Guid diskId, long size, string name, CancellationToken cancellationToken)
    {
        var payload = ComponentPeerHandler.EncodeEnsure(diskId, size, name);
        await Get(endpoint).SendAsync(
            new PeerRequestHeader(PeerOp.EnsureComponent, PeerFlags.None, 0, componentId, 0, 0, 0, payload.Length),
            payload, Memory<byte>.Empty, cancellationToken).ConfigureAwait(false);
    }

    public async Task DeleteComponentAsync(string endpoint, Guid componentId, CancellationToken cancellationToken) =>
        await Get(endpoint).SendAsync(
            new PeerRequestHeader(PeerOp.DeleteComponent, PeerFlags.None, 0, componentId, 0, 0, 0, 0),
            ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, cancellationToken).ConfigureAwait(false);

    public async ValueTask DisposeAsync()
    {
        foreach (var client in clients.Values)
        {
            await client.DisposeAsync().ConfigureAwait(false);
        }

        clients.Clear();
    }
}

/// <summary>Fencing from this host's replicated metadata (docs/io-path.md, "One writer, fenced").</summary>
internal sealed class FenceAuthority(ClusterMetadata metadata) : IFenceAuthority
{
    private volatile Index? index;

    public FenceVerdict Check(Guid componentId, Fence fence)
    {
        var (state, current) = CurrentIndex();
        if (!current.VirtualDiskOf.TryGetValue(componentId, out var virtualDiskId) ||
            !state.VirtualDisks.TryGetValue(virtualDiskId, out var vdisk))
        {
            return FenceVerdict.Unknown;
        }

        if (fence.Generation < vdisk.Generation || fence.Epoch < vdisk.LeaseEpoch)
        {
            return FenceVerdict.Stale;
        }

        return fence.Generation > vdisk.Generation || fence.Epoch > vdisk.LeaseEpoch ? FenceVerdict.Unknown : FenceVerdict.Current;
    }

    public bool IsReferenced(Guid componentId)
    {
        var (state, current) = CurrentIndex();
        return current.VirtualDiskOf.TryGetValue(componentId, out var virtualDiskId) && state.VirtualDisks.ContainsKey(virtualDiskId);
    }

    private (Metadata.ClusterState State, Index Index) CurrentIndex()
    {
        var state = metadata.Current;
        var current = index;
        if (current is null || !ReferenceEquals(current.State, state))
        {
            current = new Index(state, BuildIndex(state));
            index = current;
        }

        return (state, current);
    }

    public async ValueTask CatchUpAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(2));
        var start = metadata.Current.AppliedIndex;
        try
        {
            if (metadata.Raft is { } raft)
            {
                // Asked again until the deadline: one barrier that failed on a connection to the leader (a timeout on a
                // loaded host) would refuse a request to a healthy replica, and its coordinator would then mark it absent,
                // costing a copy of redundancy and a resync for a hiccup.
                while (true)
                {
                    try
                    {
                        await raft.BarrierAsync(timeout.Token).ConfigureAwait(false);
                        break;
                    }
                    catch (Metadata.MetadataUnavailableException)
                    {
                        await Task.Delay(50, timeout.Token).ConfigureAwait(false);
                    }
                }
            }
            else
            {
                while (metadata.Current.AppliedIndex == start)
                {
                    await Task.Delay(20, timeout.Token).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or Metadata.MetadataUnavailableException && !cancellationToken.IsCancellationRequested)
        {
            // The verdict is checked again; still unknown means the request is refused as unavailable.
        }
    }

    private static Dictionary<Guid, string> BuildIndex(Metadata.ClusterState state)
    {
        var map = new Dictionary<Guid, string>();
        foreach (var vdisk in state.VirtualDisks.Values)
        {
            foreach (var component in vdisk.Layout.Components)
            {
                map[component.ComponentId] = vdisk.VirtualDiskId;
            }
        }

        return map;
    }

    private sealed record Index(Metadata.ClusterState State, Dictionary<Guid, string> VirtualDiskOf);
}

/// <summary>
/// The peer port's handler: component requests go to <see cref="ComponentPeerHandler"/>; object-level requests
/// (<see cref="PeerFlags.Object"/>, proxied from a host that is not the coordinator) go to this host's coordinator.
/// </summary>
internal sealed class ClusterPeerHandler(ComponentPeerHandler components, CoordinatorManager coordinators) : IPeerRequestHandler
{
    public int ReplyCapacity(in PeerRequestHeader header) => components.ReplyCapacity(header);

    public async ValueTask<PeerResult> HandleAsync(
        PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken)
    {
        if (!header.Flags.HasFlag(PeerFlags.Object))
        {
            return await components.HandleAsync(header, payload, blockCrcs, reply, cancellationToken).ConfigureAwait(false);
        }

        var volume = await coordinators.ResolveAsync(header.Target.ToString("N"), allowProxy: false, cancellationToken).ConfigureAwait(false);
        var fua = header.Flags.HasFlag(PeerFlags.Fua);
        switch (header.Op)
        {
            case PeerOp.Ping:
                return PeerResult.Ok;
            case PeerOp.Read:
                await volume.ReadAsync(header.Offset, reply[..header.Length], cancellationToken).ConfigureAwait(false);
                return new PeerResult(0, header.Length);
            case PeerOp.Write:
                await volume.WriteAsync(header.Offset, payload, fua ? WriteFlags.Fua : WriteFlags.None, cancellationToken).ConfigureAwait(false);
                return PeerResult.Ok;
            case PeerOp.Flush:
                await volume.FlushAsync(cancellationToken).ConfigureAwait(false);
                return PeerResult.Ok;
            case PeerOp.Trim:
                await volume.TrimAsync(header.Offset, header.Length, fua ? WriteFlags.Fua : WriteFlags.None, cancellationToken).ConfigureAwait(false);
                return PeerResult.Ok;
            case PeerOp.WriteZeroes:
                var flags = (fua ? ZeroFlags.Fua : ZeroFlags.None) |
                            (header.Flags.HasFlag(PeerFlags.NoHole) ? ZeroFlags.NoHole : ZeroFlags.None) |
                            (header.Flags.HasFlag(PeerFlags.FastZero) ? ZeroFlags.FastZero : ZeroFlags.None);
                await volume.WriteZeroesAsync(header.Offset, header.Length, flags, cancellationToken).ConfigureAwait(false);
                return PeerResult.Ok;
            case PeerOp.BlockStatus:
                var extents = await volume.GetAllocationAsync(header.Offset, header.Length, cancellationToken).ConfigureAwait(false);
                return new PeerResult(0, RemoteComponent.EncodeExtents(extents, reply.Span));
            default:
                return PeerResult.Error(VolumeError.NotSupported);
        }
    }
}
