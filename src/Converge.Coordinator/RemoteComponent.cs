using System.Buffers;
using System.Buffers.Binary;
using Converge.Common;
using Converge.Coordinator.Peer;

namespace Converge.Coordinator;

/// <summary>The fencing tokens every request to a component carries (docs/io-path.md, "One writer, fenced").</summary>
public readonly record struct Fence(long Generation, long Epoch);

/// <summary>
/// A component on another host, reached over the peer protocol. With <paramref name="addressing"/>
/// <see cref="PeerFlags.Object"/> the target is a whole object served by its coordinator on that host (proxied I/O).
/// </summary>
public sealed class RemoteComponent(
    Guid componentId, string name, long size, PeerClient peer, Func<Fence> fence, PeerFlags addressing = PeerFlags.None) : IBlockVolume
{
    /// <summary>Extents per BLOCK_STATUS reply: 12 bytes each (length u64, flags u32).</summary>
    public const int MaxExtents = 1024;
    public const int ExtentBytes = 12;

    public string Name { get; } = name;

    public long Size { get; } = size;

    public Guid ComponentId { get; } = componentId;

    public VolumeCapabilities Capabilities =>
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes |
        VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var length = await peer.SendAsync(Header(PeerOp.Read, PeerFlags.None, offset, buffer.Length), ReadOnlyMemory<byte>.Empty, buffer, cancellationToken);
        if (length != buffer.Length)
        {
            throw new VolumeException(VolumeError.IO, $"peer {peer.EndPoint} returned {length} of {buffer.Length} bytes");
        }
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        await peer.SendAsync(
            Header(PeerOp.Write, flags.HasFlag(WriteFlags.Fua) ? PeerFlags.Fua : PeerFlags.None, offset, data.Length),
            data, Memory<byte>.Empty, cancellationToken);

    public async ValueTask FlushAsync(CancellationToken cancellationToken) =>
        await peer.SendAsync(Header(PeerOp.Flush, PeerFlags.None, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, cancellationToken);

    public async ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken)
    {
        // The peer protocol bounds a request's length (BlockGeometry.MaxRequestBytes); longer ranges go in pieces.
        for (var done = 0L; done < length || (length == 0 && done == 0); done += BlockGeometry.MaxRequestBytes)
        {
            var piece = (int)Math.Min(length - done, BlockGeometry.MaxRequestBytes);
            await peer.SendAsync(
                Header(PeerOp.Trim, flags.HasFlag(WriteFlags.Fua) ? PeerFlags.Fua : PeerFlags.None, offset + done, piece),
                ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, cancellationToken);
            if (length == 0)
            {
                break;
            }
        }
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken)
    {
        var peerFlags = (flags.HasFlag(ZeroFlags.Fua) ? PeerFlags.Fua : PeerFlags.None) |
                        (flags.HasFlag(ZeroFlags.NoHole) ? PeerFlags.NoHole : PeerFlags.None) |
                        (flags.HasFlag(ZeroFlags.FastZero) ? PeerFlags.FastZero : PeerFlags.None);
        for (var done = 0L; done < length || (length == 0 && done == 0); done += BlockGeometry.MaxRequestBytes)
        {
            var piece = (int)Math.Min(length - done, BlockGeometry.MaxRequestBytes);
            await peer.SendAsync(Header(PeerOp.WriteZeroes, peerFlags, offset + done, piece), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, cancellationToken);
            if (length == 0)
            {
                break;
            }
        }
    }

    public async ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MaxExtents * ExtentBytes);
        try
        {
            var bytes = await peer.SendAsync(
                Header(PeerOp.BlockStatus, PeerFlags.None, offset, (int)Math.Min(length, BlockGeometry.MaxRequestBytes)),
                ReadOnlyMemory<byte>.Empty, buffer.AsMemory(0, MaxExtents * ExtentBytes), cancellationToken);
            return DecodeExtents(buffer.AsSpan(0, bytes));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public static int EncodeExtents(IReadOnlyList<AllocationExtent> extents, Span<byte> destination)
    {
        var count = Math.Min(extents.Count, destination.Length / ExtentBytes);
        for (var i = 0; i < count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(destination[(i * ExtentBytes)..], extents[i].Length);
            BinaryPrimitives.WriteInt32LittleEndian(destination[((i * ExtentBytes) + 8)..], (int)extents[i].Flags);
        }

        return count * ExtentBytes;
    }

    public static List<AllocationExtent> DecodeExtents(ReadOnlySpan<byte> source)
    {
        var extents = new List<AllocationExtent>(source.Length / ExtentBytes);
        for (var at = 0; at + ExtentBytes <= source.Length; at += ExtentBytes)
        {
            extents.Add(new AllocationExtent(
                BinaryPrimitives.ReadInt64LittleEndian(source[at..]),
                (AllocationFlags)BinaryPrimitives.ReadInt32LittleEndian(source[(at + 8)..])));
        }

        return extents;
    }

    private PeerRequestHeader Header(PeerOp op, PeerFlags flags, long offset, int length)
    {
        var (generation, epoch) = fence();
        return new PeerRequestHeader(op, flags | addressing, 0, ComponentId, generation, epoch, offset, length);
    }
}
