using Converge.Common;

namespace Converge.Storage;

/// <summary>
/// A thin-provisioned, checksummed block volume stored on one <see cref="StoreDisk"/>. Thread-safe: any number of
/// concurrent requests; overlapping in-flight writes are not ordered (the later map update wins).
/// </summary>
public sealed class StoreComponent : IBlockVolume, IChecksummedWrites
{
    private long _size;
    private long _usedBlocks;
    private long _checksumErrors;

    internal StoreComponent(StoreDisk disk, Guid id, string name, long size)
    {
        Disk = disk;
        Id = id;
        Name = name;
        _size = size;
        Map = new BlockMap(size >> BlockGeometry.BlockShift);
    }

    public Guid Id { get; }

    public string Name { get; }

    public long Size => Volatile.Read(ref _size);

    /// <summary>Mapped (written, not trimmed) bytes.</summary>
    public long UsedBytes => Volatile.Read(ref _usedBlocks) << BlockGeometry.BlockShift;

    public long ChecksumErrors => Volatile.Read(ref _checksumErrors);

    public StoreDisk Disk { get; }

    public VolumeCapabilities Capabilities =>
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes
        | VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    internal BlockMap Map { get; }

    internal bool Deleted { get; set; }

    internal long UsedBlocks
    {
        get => _usedBlocks;
        set => Volatile.Write(ref _usedBlocks, value);
    }

    internal void SetSize(long size)
    {
        Map.Grow(size >> BlockGeometry.BlockShift);
        Volatile.Write(ref _size, size);
    }

    internal void CountChecksumError() => Interlocked.Increment(ref _checksumErrors);

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        Disk.ReadAsync(this, offset, buffer, cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        Disk.WriteAsync(this, offset, data, flags, cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, ReadOnlyMemory<uint> blockCrcs, WriteFlags flags, CancellationToken cancellationToken) =>
        Disk.WriteAsync(this, offset, data, flags, cancellationToken, blockCrcs);

    public ValueTask FlushAsync(CancellationToken cancellationToken) => Disk.FlushVolumeAsync(this, cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) =>
        Disk.TrimAsync(this, offset, length, (flags & WriteFlags.Fua) != 0, cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) =>
        Disk.WriteZeroesAsync(this, offset, length, flags, cancellationToken);

    public ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken) =>
        Disk.GetAllocationAsync(this, offset, length, cancellationToken);

    public override string ToString() => $"{Name} ({Id})";
}
