using System.Buffers.Binary;
using System.Text;
using Converge.Common;
using Converge.Coordinator.Tracking;

namespace Converge.Coordinator.Peer;

/// <summary>Capacity of one local disk as peers (placement) see it.</summary>
public readonly record struct PeerDiskStats(Guid DiskId, long CapacityBytes, long UsedBytes, long FreeBytes, bool Online)
{
    public const int Size = 16 + 8 + 8 + 8 + 4;
}

/// <summary>The components a host holds, as the peer protocol needs them (the host adapts its local store).</summary>
public interface ILocalComponents
{
    IBlockVolume? Find(Guid componentId);

    /// <summary>Creates the component on the given local disk, or grows it; idempotent.</summary>
    ValueTask EnsureAsync(Guid componentId, Guid diskId, string name, long sizeBytes, CancellationToken cancellationToken);

    /// <summary>Deletes the component if present; idempotent.</summary>
    ValueTask DeleteAsync(Guid componentId, CancellationToken cancellationToken);

    IReadOnlyList<PeerDiskStats> DiskStats();

    /// <summary>The change map kept beside a data component on its disk (created on first use).</summary>
    ValueTask<ChangeMap> GetChangeMapAsync(Guid componentId, CancellationToken cancellationToken);
}

public enum FenceVerdict
{
    /// <summary>The request carries the current generation and epoch.</summary>
    Current,

    /// <summary>The sender's configuration is older than ours: it must not touch the component.</summary>
    Stale,

    /// <summary>Our metadata has not caught up with the sender's yet (or does not know the component).</summary>
    Unknown,
}

/// <summary>Decides whether a request's fence is current, from this host's replicated metadata.</summary>
public interface IFenceAuthority
{
    FenceVerdict Check(Guid componentId, Fence fence);

    /// <summary>True while some virtual disk's layout names the component (so it holds data someone may still need).</summary>
    bool IsReferenced(Guid componentId);

    /// <summary>Waits (bounded) for local metadata to reach at least the sender's view.</summary>
    ValueTask CatchUpAsync(CancellationToken cancellationToken);
}

/// <summary>Serves component I/O and lifecycle requests from coordinators on other hosts.</summary>
public sealed class ComponentPeerHandler(ILocalComponents components, IFenceAuthority fences) : IPeerRequestHandler
{
    public int ReplyCapacity(in PeerRequestHeader header) => header.Op switch
    {
        PeerOp.Read => header.Length,
        PeerOp.BlockStatus => RemoteComponent.MaxExtents * RemoteComponent.ExtentBytes,
        PeerOp.DiskStats => 4 + (256 * PeerDiskStats.Size),
        PeerOp.ReadChanges => RemoteComponent.MaxChangedRanges * 16,
        _ => 0,
    };

    public async ValueTask<PeerResult> HandleAsync(
        PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken)
    {
        switch (header.Op)
        {
            case PeerOp.Ping:
                return PeerResult.Ok;
            case PeerOp.DiskStats:
                return new PeerResult(0, EncodeStats(components.DiskStats(), reply.Span));
            case PeerOp.EnsureComponent:
                var (diskId, size, name) = DecodeEnsure(payload.Span);
                await components.EnsureAsync(header.Target, diskId, name, size, cancellationToken);
                return PeerResult.Ok;
            case PeerOp.DeleteComponent:
                // Whoever asks: a component is garbage only once no layout names it. Deleters commit the layout change
                // first, so a reference seen here may be our metadata lagging theirs: catch up before refusing.
                if (fences.IsReferenced(header.Target))
                {
                    await fences.CatchUpAsync(cancellationToken);
                    if (fences.IsReferenced(header.Target))
                    {
                        return PeerResult.Error(VolumeError.ReadOnly);
                    }
                }

                await components.DeleteAsync(header.Target, cancellationToken);
                return PeerResult.Ok;
        }

        // Component I/O: only from a coordinator whose configuration is current.
        var fence = new Fence(header.Generation, header.Epoch);
        var verdict = fences.Check(header.Target, fence);
        if (verdict == FenceVerdict.Unknown)
        {
            await fences.CatchUpAsync(cancellationToken);
            verdict = fences.Check(header.Target, fence);
        }

        if (verdict != FenceVerdict.Current)
        {
            return PeerResult.Error(verdict == FenceVerdict.Stale ? VolumeError.ReadOnly : VolumeError.Unavailable);
        }

        var component = components.Find(header.Target);
        if (component is null)
        {
            return PeerResult.Error(VolumeError.Unavailable);
        }

        // A tracked write is recorded in the component's change map before it is issued (ChangeMap explains why).
        var track = RemoteComponent.TrackKinds(header.Flags);
        if (track != ChangeKinds.None && header.Op is PeerOp.Write or PeerOp.Trim or PeerOp.WriteZeroes)
        {
            var map = await components.GetChangeMapAsync(header.Target, cancellationToken);
            await map.MarkAsync(header.Offset, header.Op == PeerOp.Write ? payload.Length : header.Length, track, header.Flags.HasFlag(PeerFlags.Fua), cancellationToken);
        }

        switch (header.Op)
        {
            case PeerOp.Read:
                await component.ReadAsync(header.Offset, reply[..header.Length], cancellationToken);
                return new PeerResult(0, header.Length);
            case PeerOp.Write:
                var writeFlags = (header.Flags.HasFlag(PeerFlags.Fua) ? WriteFlags.Fua : WriteFlags.None) |
                                 (header.Flags.HasFlag(PeerFlags.Bulk) ? WriteFlags.Bulk : WriteFlags.None);
                if (!blockCrcs.IsEmpty && component is IChecksummedWrites checksummed)
                {
                    // The block CRCs that just matched the sender's checksum: the store keeps them, as they arrived.
                    await checksummed.WriteAsync(header.Offset, payload, blockCrcs, writeFlags, cancellationToken);
                }
                else
                {
                    await component.WriteAsync(header.Offset, payload, writeFlags, cancellationToken);
                }

                return PeerResult.Ok;
            case PeerOp.ReadChanges:
                var changes = await (await components.GetChangeMapAsync(header.Target, cancellationToken)).ReadAsync((ChangeKinds)header.Length, cancellationToken);
                return new PeerResult(0, RemoteComponent.EncodeRanges(changes, header.Offset, reply.Span));
            case PeerOp.ClearChanges:
                if (payload.Length < 16)
                {
                    return PeerResult.Error(VolumeError.OutOfRange);
                }

                var kinds = (ChangeKinds)BinaryPrimitives.ReadInt64LittleEndian(payload.Span);
                var clearLength = BinaryPrimitives.ReadInt64LittleEndian(payload.Span[8..]);
                await (await components.GetChangeMapAsync(header.Target, cancellationToken)).ClearAsync(header.Offset, clearLength, kinds, cancellationToken);
                return PeerResult.Ok;
            case PeerOp.Flush:
                await component.FlushAsync(cancellationToken);
                return PeerResult.Ok;
            case PeerOp.Trim:
                await component.TrimAsync(header.Offset, header.Length, header.Flags.HasFlag(PeerFlags.Fua) ? WriteFlags.Fua : WriteFlags.None, cancellationToken);
                return PeerResult.Ok;
            case PeerOp.WriteZeroes:
                var flags = (header.Flags.HasFlag(PeerFlags.Fua) ? ZeroFlags.Fua : ZeroFlags.None) |
                            (header.Flags.HasFlag(PeerFlags.NoHole) ? ZeroFlags.NoHole : ZeroFlags.None) |
                            (header.Flags.HasFlag(PeerFlags.FastZero) ? ZeroFlags.FastZero : ZeroFlags.None);
                await component.WriteZeroesAsync(header.Offset, header.Length, flags, cancellationToken);
                return PeerResult.Ok;
            case PeerOp.BlockStatus:
                var extents = await component.GetAllocationAsync(header.Offset, header.Length, cancellationToken);
                return new PeerResult(0, RemoteComponent.EncodeExtents(extents, reply.Span));
            default:
                return PeerResult.Error(VolumeError.NotSupported);
        }
    }

    /// <summary>ENSURE_COMPONENT payload: disk id (16), size (8), UTF-8 name.</summary>
    public static byte[] EncodeEnsure(Guid diskId, long sizeBytes, string name)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var payload = new byte[24 + nameBytes.Length];
        diskId.TryWriteBytes(payload);
        BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(16), sizeBytes);
        nameBytes.CopyTo(payload, 24);
        return payload;
    }

    private static (Guid DiskId, long Size, string Name) DecodeEnsure(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 24)
        {
            throw new VolumeException(VolumeError.OutOfRange, "malformed ENSURE_COMPONENT payload");
        }

        return (new Guid(payload[..16]), BinaryPrimitives.ReadInt64LittleEndian(payload[16..]), Encoding.UTF8.GetString(payload[24..]));
    }

    private static int EncodeStats(IReadOnlyList<PeerDiskStats> stats, Span<byte> destination)
    {
        var count = Math.Min(stats.Count, (destination.Length - 4) / PeerDiskStats.Size);
        BinaryPrimitives.WriteInt32LittleEndian(destination, count);
        for (var i = 0; i < count; i++)
        {
            var at = destination[(4 + (i * PeerDiskStats.Size))..];
            stats[i].DiskId.TryWriteBytes(at);
            BinaryPrimitives.WriteInt64LittleEndian(at[16..], stats[i].CapacityBytes);
            BinaryPrimitives.WriteInt64LittleEndian(at[24..], stats[i].UsedBytes);
            BinaryPrimitives.WriteInt64LittleEndian(at[32..], stats[i].FreeBytes);
            BinaryPrimitives.WriteInt32LittleEndian(at[40..], stats[i].Online ? 1 : 0);
        }

        return 4 + (count * PeerDiskStats.Size);
    }

    public static List<PeerDiskStats> DecodeStats(ReadOnlySpan<byte> source)
    {
        var count = source.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(source) : 0;
        var stats = new List<PeerDiskStats>(count);
        for (var i = 0; i < count && 4 + ((i + 1) * PeerDiskStats.Size) <= source.Length; i++)
        {
            var at = source[(4 + (i * PeerDiskStats.Size))..];
            stats.Add(new PeerDiskStats(
                new Guid(at[..16]),
                BinaryPrimitives.ReadInt64LittleEndian(at[16..]),
                BinaryPrimitives.ReadInt64LittleEndian(at[24..]),
                BinaryPrimitives.ReadInt64LittleEndian(at[32..]),
                BinaryPrimitives.ReadInt32LittleEndian(at[40..]) != 0));
        }

        return stats;
    }
}
