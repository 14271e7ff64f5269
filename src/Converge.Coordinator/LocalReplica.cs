using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Coordinator.Tracking;

namespace Converge.Coordinator;

/// <summary>
/// A data component on the coordinator's own host. Every request passes the same fence check that a peer applies
/// to remote requests, so a coordinator that was paused past its lease cannot write its local copy either.
/// </summary>
public sealed class LocalReplica(Guid componentId, IBlockVolume component, ILocalComponents components, IFenceAuthority fences, Fence fence)
    : IReplicaComponent
{
    public Guid ComponentId { get; } = componentId;

    public bool IsLocal => true;

    public string Name => component.Name;

    public long Size => component.Size;

    public VolumeCapabilities Capabilities => component.Capabilities;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        await CheckFenceAsync(cancellationToken).ConfigureAwait(false);
        await component.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        WriteAsync(offset, data, flags, ChangeKinds.None, cancellationToken);

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        await MarkAsync(offset, data.Length, track, flags.HasFlag(WriteFlags.Fua), cancellationToken).ConfigureAwait(false);
        await component.WriteAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask WriteAsync(
        long offset, ReadOnlyMemory<byte> data, ReadOnlyMemory<uint> blockCrcs, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        await MarkAsync(offset, data.Length, track, flags.HasFlag(WriteFlags.Fua), cancellationToken).ConfigureAwait(false);
        if (!blockCrcs.IsEmpty && component is IChecksummedWrites checksummed)
        {
            await checksummed.WriteAsync(offset, data, blockCrcs, flags, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await component.WriteAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        await CheckFenceAsync(cancellationToken).ConfigureAwait(false);
        await component.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) =>
        TrimAsync(offset, length, flags, ChangeKinds.None, cancellationToken);

    public async ValueTask TrimAsync(long offset, long length, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        await MarkAsync(offset, length, track, flags.HasFlag(WriteFlags.Fua), cancellationToken).ConfigureAwait(false);
        await component.TrimAsync(offset, length, flags, cancellationToken).ConfigureAwait(false);
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) =>
        WriteZeroesAsync(offset, length, flags, ChangeKinds.None, cancellationToken);

    public async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        await MarkAsync(offset, length, track, flags.HasFlag(ZeroFlags.Fua), cancellationToken).ConfigureAwait(false);
        await component.WriteZeroesAsync(offset, length, flags, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        await CheckFenceAsync(cancellationToken).ConfigureAwait(false);
        return await component.GetAllocationAsync(offset, length, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<List<ChangedRange>> ReadChangesAsync(ChangeKinds kinds, CancellationToken cancellationToken)
    {
        await CheckFenceAsync(cancellationToken).ConfigureAwait(false);
        var map = await components.GetChangeMapAsync(ComponentId, cancellationToken).ConfigureAwait(false);
        return await map.ReadAsync(kinds, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask ClearChangesAsync(ChangeKinds kinds, long offset, long length, CancellationToken cancellationToken)
    {
        await CheckFenceAsync(cancellationToken).ConfigureAwait(false);
        var map = await components.GetChangeMapAsync(ComponentId, cancellationToken).ConfigureAwait(false);
        await map.ClearAsync(offset, length, kinds, cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask MarkAsync(long offset, long length, ChangeKinds track, bool durable, CancellationToken cancellationToken)
    {
        await CheckFenceAsync(cancellationToken).ConfigureAwait(false);
        if (track != ChangeKinds.None)
        {
            var map = await components.GetChangeMapAsync(ComponentId, cancellationToken).ConfigureAwait(false);
            await map.MarkAsync(offset, length, track, durable, cancellationToken).ConfigureAwait(false);
        }
    }

    private ValueTask CheckFenceAsync(CancellationToken cancellationToken)
    {
        var verdict = fences.Check(ComponentId, fence);
        return verdict == FenceVerdict.Current ? ValueTask.CompletedTask : SlowCheckAsync(verdict, cancellationToken);
    }

    private async ValueTask SlowCheckAsync(FenceVerdict verdict, CancellationToken cancellationToken)
    {
        if (verdict == FenceVerdict.Unknown)
        {
            await fences.CatchUpAsync(cancellationToken).ConfigureAwait(false);
            verdict = fences.Check(ComponentId, fence);
        }

        if (verdict != FenceVerdict.Current)
        {
            throw new VolumeException(
                verdict == FenceVerdict.Stale ? VolumeError.ReadOnly : VolumeError.Unavailable,
                $"component {ComponentId:N}: the coordinator's configuration (generation {fence.Generation}, epoch {fence.Epoch}) is not current");
        }
    }
}
