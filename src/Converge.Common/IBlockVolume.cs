namespace Converge.Common;

/// <summary>
/// The narrow interface every front end (NBD today) talks to. A local store component implements it
/// directly; later the replicated coordinator implements it over many components.
/// Offsets and lengths are in bytes. Implementations throw <see cref="VolumeException"/> for
/// request-level failures (the front end maps <see cref="VolumeError"/> to a protocol error and keeps
/// serving); any other exception is a bug.
/// </summary>
public interface IBlockVolume
{
    /// <summary>Stable name clients use to address the volume (the NBD export name).</summary>
    string Name { get; }

    /// <summary>Current size in bytes; a multiple of <see cref="BlockGeometry.BlockSize"/>.</summary>
    long Size { get; }

    VolumeCapabilities Capabilities { get; }

    /// <summary>Fills <paramref name="buffer"/> with the bytes at <paramref name="offset"/>. Unwritten ranges read as zeros.</summary>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>Writes <paramref name="data"/>; with <see cref="WriteFlags.Fua"/> it is durable on media before this completes.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken);

    /// <summary>Makes every write completed before this call durable on media (fdatasync semantics).</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken);

    /// <summary>Discards a range: afterwards it reads as zeros and (where aligned) uses no space.</summary>
    ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken);

    /// <summary>
    /// Makes a range read as zeros. Without <see cref="ZeroFlags.NoHole"/> the range may be deallocated.
    /// With <see cref="ZeroFlags.FastZero"/> the call fails with <see cref="VolumeError.NotSupported"/>
    /// (changing nothing) when zeroing would not be faster than writing zeros.
    /// </summary>
    ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken);

    /// <summary>
    /// Describes allocation from <paramref name="offset"/> onwards, covering at least the first byte and at most
    /// <paramref name="length"/> bytes; consecutive extents have different flags.
    /// </summary>
    ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken);
}

/// <summary>
/// A volume that can store a write of whole 4 KiB blocks under block checksums its caller has computed already (a
/// coordinator checksums a write once for every replica; a peer checksums what arrived to check it).
/// </summary>
public interface IChecksummedWrites
{
    /// <summary>Like <see cref="IBlockVolume.WriteAsync"/>; <paramref name="blockCrcs"/> holds the CRC-32C of each block of <paramref name="data"/>, which starts and ends on block boundaries.</summary>
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, ReadOnlyMemory<uint> blockCrcs, WriteFlags flags, CancellationToken cancellationToken);
}

[Flags]
public enum VolumeCapabilities
{
    None = 0,
    Flush = 1 << 0,
    Fua = 1 << 1,
    Trim = 1 << 2,
    WriteZeroes = 1 << 3,
    FastZero = 1 << 4,
    BlockStatus = 1 << 5,

    /// <summary>A flush through any connection covers writes completed through every connection.</summary>
    MultiConn = 1 << 6,
    ReadOnly = 1 << 7,
}

[Flags]
public enum WriteFlags
{
    None = 0,

    /// <summary>Forced unit access: durable before acknowledgement.</summary>
    Fua = 1,

    /// <summary>
    /// Bulk data not expected to be read back soon (resync and rebuild copies): a store may write it around its page
    /// cache. Same durability as any other write.
    /// </summary>
    Bulk = 2,
}

[Flags]
public enum ZeroFlags
{
    None = 0,
    Fua = 1,

    /// <summary>Keep the range allocated (write real zeros).</summary>
    NoHole = 2,

    /// <summary>Fail fast with NotSupported instead of doing slow zeroing.</summary>
    FastZero = 4,
}

[Flags]
public enum AllocationFlags
{
    /// <summary>Allocated data.</summary>
    Data = 0,

    /// <summary>Not allocated (NBD_STATE_HOLE).</summary>
    Hole = 1,

    /// <summary>Reads as zeros (NBD_STATE_ZERO).</summary>
    Zero = 2,
}

public readonly record struct AllocationExtent(long Length, AllocationFlags Flags);

public static class BlockGeometry
{
    /// <summary>The unit of checksums, atomicity and allocation everywhere in Converge.</summary>
    public const int BlockSize = 4096;

    public const int BlockShift = 12;

    /// <summary>Largest single read or write request accepted by any front end.</summary>
    public const int MaxRequestBytes = 32 * 1024 * 1024;
}
