using Converge.Common;
using Converge.Coordinator.Tracking;

namespace Converge.Coordinator;

/// <summary>
/// A data component as its coordinator drives it: block I/O whose writes can ask the component's host to record them
/// in the component's <see cref="ChangeMap"/> first, and access to that map.
/// </summary>
public interface IReplicaComponent : IBlockVolume
{
    Guid ComponentId { get; }

    /// <summary>On the coordinator's own host (no network hop): preferred for reads.</summary>
    bool IsLocal { get; }

    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken);

    /// <summary>
    /// A write of whole blocks with the CRC-32C of each, which the coordinator computes once for all replicas: a local
    /// store keeps them, a peer gets their fold as the payload checksum it checks the arrived data against.
    /// </summary>
    ValueTask WriteAsync(
        long offset, ReadOnlyMemory<byte> data, ReadOnlyMemory<uint> blockCrcs, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken) =>
        WriteAsync(offset, data, flags, track, cancellationToken);

    ValueTask TrimAsync(long offset, long length, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken);

    ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, ChangeKinds track, CancellationToken cancellationToken);

    /// <summary>The ranges recorded in the component's change map for any of <paramref name="kinds"/>.</summary>
    ValueTask<List<ChangedRange>> ReadChangesAsync(ChangeKinds kinds, CancellationToken cancellationToken);

    ValueTask ClearChangesAsync(ChangeKinds kinds, long offset, long length, CancellationToken cancellationToken);
}
