using System.Buffers;
using System.Buffers.Binary;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Coordinator.Tracking;

namespace Converge.Coordinator;

/// <summary>The fencing tokens every request to a component carries (docs/io-path.md, "One writer, fenced").</summary>
public readonly record struct Fence(long Generation, long Epoch);

/// <summary>
/// A component on another host, reached over the peer protocol. With <paramref name="addressing"/>
/// <see cref="PeerFlags.Object"/> the target is a whole object served by its coordinator on that host (proxied I/O).
/// </summary>
public sealed class RemoteComponent(
    Guid componentId, string name, long size, PeerClient peer, Func<Fence> fence, PeerFlags addressing = PeerFlags.None) : IReplicaComponent
{
    /// <summary>Extents per BLOCK_STATUS reply: 12 bytes each (length u64, flags u32).</summary>
    public const int MaxExtents = 1024;
    public const int ExtentBytes = 12;

    public string Name { get; } = name;

    public long Size { get; } = size;

    public Guid ComponentId { get; } = componentId;

    public bool IsLocal => false;

    /// <summary>Change-map kinds as request flags (<see cref="PeerFlags.TrackIntent0"/> and on).</summary>
    public static PeerFlags TrackFlags(ChangeKinds kinds) => (PeerFlags)((int)kinds << 4);

    public static ChangeKinds TrackKinds(PeerFlags flags) => (ChangeKinds)(((int)flags >> 4) & (int)ChangeKinds.All);

    public VolumeCapabilities Capabilities =>
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes |
        VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            int length;
            try
            {
                length = await peer.SendAsync(Header(PeerOp.Read, PeerFlags.None, offset, buffer.Length), ReadOnlyMemory<byte>.Empty, buffer, cancellationToken);
            }
            catch (PeerTransitException e)
            {
                if (attempt < DamagedTransferAttempts)
                {
                    continue;   // the peer's copy was verified before it was sent: ask again
                }

                // Not the replica's fault: an I/O error (another replica serves the read), not a checksum error, which
                // would have the coordinator rewrite a good copy.
                throw new VolumeException(VolumeError.IO, $"{e.Message}, {attempt} times", e);
            }

            if (length != buffer.Length)
            {
                throw new VolumeException(VolumeError.IO, $"peer {peer.EndPoint} returned {length} of {buffer.Length} bytes");
            }

            return;
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        WriteAsync(offset, data, flags, ChangeKinds.None, cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken) =>
        WriteAsync(offset, data, ReadOnlyMemory<uint>.Empty, flags, track, cancellationToken);

    /// <summary>Attempts at a transfer damaged on the wire (a write the peer refused, a read reply that failed its check).</summary>
    private const int DamagedTransferAttempts = 3;

    public async ValueTask WriteAsync(
        long offset, ReadOnlyMemory<byte> data, ReadOnlyMemory<uint> blockCrcs, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        // Folded before the first await: the caller's checksum array is not touched after this call returns.
        var payloadCrc = blockCrcs.IsEmpty ? (uint?)null : Checksums.Crc32COfBlocks(blockCrcs.Span);
        var header = Header(
            PeerOp.Write,
            (flags.HasFlag(WriteFlags.Fua) ? PeerFlags.Fua : PeerFlags.None) | (flags.HasFlag(WriteFlags.Bulk) ? PeerFlags.Bulk : PeerFlags.None) | TrackFlags(track),
            offset,
            data.Length);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await peer.SendAsync(header, data, Memory<byte>.Empty, cancellationToken, payloadCrc);
                return;
            }
            catch (VolumeException e) when (e.Error == VolumeError.ChecksumMismatch && attempt < DamagedTransferAttempts)
            {
                // Damaged in transit and refused before anything was written: send it again.
            }
        }
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken) =>
        await peer.SendAsync(Header(PeerOp.Flush, PeerFlags.None, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) =>
        TrimAsync(offset, length, flags, ChangeKinds.None, cancellationToken);

    public async ValueTask TrimAsync(long offset, long length, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        // The peer protocol bounds a request's length (BlockGeometry.MaxRequestBytes); longer ranges go in pieces.
        for (var done = 0L; done < length || (length == 0 && done == 0); done += BlockGeometry.MaxRequestBytes)
        {
            var piece = (int)Math.Min(length - done, BlockGeometry.MaxRequestBytes);
            await peer.SendAsync(
                Header(PeerOp.Trim, (flags.HasFlag(WriteFlags.Fua) ? PeerFlags.Fua : PeerFlags.None) | TrackFlags(track), offset + done, piece),
                ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, cancellationToken);
            if (length == 0)
            {
                break;
            }
        }
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) =>
        WriteZeroesAsync(offset, length, flags, ChangeKinds.None, cancellationToken);

    public async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        var peerFlags = (flags.HasFlag(ZeroFlags.Fua) ? PeerFlags.Fua : PeerFlags.None) |
                        (flags.HasFlag(ZeroFlags.NoHole) ? PeerFlags.NoHole : PeerFlags.None) |
                        (flags.HasFlag(ZeroFlags.FastZero) ? PeerFlags.FastZero : PeerFlags.None) | TrackFlags(track);
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

    /// <summary>Ranges per READ_CHANGES reply: 16 bytes each (offset u64, length u64).</summary>
    public const int MaxChangedRanges = 4096;

    public async ValueTask<List<ChangedRange>> ReadChangesAsync(ChangeKinds kinds, CancellationToken cancellationToken)
    {
        var ranges = new List<ChangedRange>();
        var buffer = ArrayPool<byte>.Shared.Rent(MaxChangedRanges * 16);
        try
        {
            var from = 0L;
            while (true)
            {
                var bytes = await peer.SendAsync(
                    Header(PeerOp.ReadChanges, PeerFlags.None, from, (int)kinds), ReadOnlyMemory<byte>.Empty,
                    buffer.AsMemory(0, MaxChangedRanges * 16), cancellationToken);
                var page = DecodeRanges(buffer.AsSpan(0, bytes));
                ranges.AddRange(page);
                if (page.Count < MaxChangedRanges)
                {
                    return ranges;
                }

                from = page[^1].End;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public async ValueTask ClearChangesAsync(ChangeKinds kinds, long offset, long length, CancellationToken cancellationToken)
    {
        var payload = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(payload, (long)kinds);
        BinaryPrimitives.WriteInt64LittleEndian(payload.AsSpan(8), length);
        await peer.SendAsync(Header(PeerOp.ClearChanges, PeerFlags.None, offset, payload.Length), payload, Memory<byte>.Empty, cancellationToken);
    }

    public static int EncodeRanges(List<ChangedRange> ranges, long from, Span<byte> destination)
    {
        var written = 0;
        foreach (var range in ranges)
        {
            if (range.End <= from)
            {
                continue;
            }

            if (written + 16 > destination.Length)
            {
                break;
            }

            var start = Math.Max(range.Offset, from);
            BinaryPrimitives.WriteInt64LittleEndian(destination[written..], start);
            BinaryPrimitives.WriteInt64LittleEndian(destination[(written + 8)..], range.End - start);
            written += 16;
        }

        return written;
    }

    public static List<ChangedRange> DecodeRanges(ReadOnlySpan<byte> source)
    {
        var ranges = new List<ChangedRange>(source.Length / 16);
        for (var at = 0; at + 16 <= source.Length; at += 16)
        {
            ranges.Add(new ChangedRange(BinaryPrimitives.ReadInt64LittleEndian(source[at..]), BinaryPrimitives.ReadInt64LittleEndian(source[(at + 8)..])));
        }

        return ranges;
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
