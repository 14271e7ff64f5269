using Converge.Common;
using Converge.Placement;

namespace Converge.Coordinator;

/// <summary>
/// A mirrored, striped object served as one volume: writes go to every active replica and complete only when all
/// of them completed (durably, for FUA and FLUSH); reads are spread across replicas and fall back to another
/// replica when one fails. See docs/io-path.md.
/// </summary>
public sealed class ReplicatedVolume : IBlockVolume
{
    private readonly StripeMap _map;
    private readonly IReadOnlyDictionary<Guid, IBlockVolume> _active;
    private readonly IBlockVolume[] _distinct;
    private int _nextReplica;

    /// <param name="active">The components the current configuration lists as active, by component id.</param>
    public ReplicatedVolume(string name, long size, StripeMap map, IReadOnlyDictionary<Guid, IBlockVolume> active)
    {
        Name = name;
        Size = size;
        _map = map;
        _active = active;
        _distinct = [.. active.Values.Distinct()];
        for (var stripe = 0; stripe < map.Layout.StripeWidth; stripe++)
        {
            var s = stripe;
            if (!Enumerable.Range(0, map.Layout.ReplicaCount).Any(r => map.Layout.DataComponents
                    .Where(c => c.Replica == r && c.Stripe == s).All(c => active.ContainsKey(c.ComponentId))))
            {
                throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{name}' has no complete active copy of stripe {s}");
            }
        }
    }

    public string Name { get; }

    public long Size { get; }

    public VolumeCapabilities Capabilities =>
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes |
        VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        CheckRange(offset, buffer.Length);
        var segments = new List<Segment>();
        _map.Split(offset, buffer.Length, segments);
        if (segments.Count == 1)
        {
            await ReadSegmentAsync(segments[0], buffer, cancellationToken);
            return;
        }

        var reads = new Task[segments.Count];
        for (var i = 0; i < segments.Count; i++)
        {
            var segment = segments[i];
            reads[i] = ReadSegmentAsync(segment, buffer.Slice(segment.BufferOffset, segment.Length), cancellationToken).AsTask();
        }

        await Task.WhenAll(reads);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken)
    {
        CheckRange(offset, data.Length);
        return ForEachReplicaAsync(offset, data.Length, (component, segment, at, ct) =>
            component.WriteAsync(at, data.Slice(segment.BufferOffset, segment.Length), flags, ct), cancellationToken);
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        var flushes = new Task[_distinct.Length];
        for (var i = 0; i < _distinct.Length; i++)
        {
            flushes[i] = _distinct[i].FlushAsync(cancellationToken).AsTask();
        }

        await Task.WhenAll(flushes);
    }

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        return ForEachReplicaAsync(offset, length, (component, segment, at, ct) =>
            component.TrimAsync(at, segment.Length, flags, ct), cancellationToken);
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        return ForEachReplicaAsync(offset, length, (component, segment, at, ct) =>
            component.WriteZeroesAsync(at, segment.Length, flags, ct), cancellationToken);
    }

    public async ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        CheckRange(offset, Math.Min(length, Size - offset));
        var segments = new List<Segment>();
        _map.Split(offset, Math.Min(length, Size - offset), segments);
        var first = segments[0];
        VolumeException? last = null;
        foreach (var (component, placement) in Candidates(first))
        {
            try
            {
                var extents = await component.GetAllocationAsync(first.StripeOffset - placement.StripeOffset, first.Length, cancellationToken);
                return Clip(extents, first.Length);
            }
            catch (VolumeException ex) when (ex.Error is VolumeError.Unavailable or VolumeError.IO)
            {
                last = ex;
            }
        }

        throw last ?? new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}' has no reachable replica");
    }

    private async ValueTask ReadSegmentAsync(Segment segment, Memory<byte> destination, CancellationToken cancellationToken)
    {
        VolumeException? last = null;
        foreach (var (component, placement) in Candidates(segment))
        {
            try
            {
                await component.ReadAsync(segment.StripeOffset - placement.StripeOffset, destination, cancellationToken);
                return;
            }
            catch (VolumeException ex) when (ex.Error is VolumeError.Unavailable or VolumeError.IO or VolumeError.ChecksumMismatch)
            {
                // Another replica holds the same bytes; repairing the failed copy is the resync layer's job.
                last = ex;
            }
        }

        throw last ?? new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}' has no reachable replica for offset {segment.ObjectOffset}");
    }

    /// <summary>Active replicas for a segment, starting from a rotating replica to spread reads.</summary>
    private IEnumerable<(IBlockVolume Component, ComponentPlacement Placement)> Candidates(Segment segment)
    {
        var replicas = _map.Layout.ReplicaCount;
        var start = (int)((uint)Interlocked.Increment(ref _nextReplica) % (uint)replicas);
        for (var i = 0; i < replicas; i++)
        {
            var placement = _map.Find((start + i) % replicas, segment.Stripe, segment.StripeOffset);
            if (_active.TryGetValue(placement.ComponentId, out var component))
            {
                yield return (component, placement);
            }
        }
    }

    private async ValueTask ForEachReplicaAsync(
        long offset, long length, Func<IBlockVolume, Segment, long, CancellationToken, ValueTask> operation, CancellationToken cancellationToken)
    {
        var segments = new List<Segment>();
        _map.Split(offset, length, segments);
        var tasks = new List<Task>(segments.Count * _map.Layout.ReplicaCount);
        foreach (var segment in segments)
        {
            for (var replica = 0; replica < _map.Layout.ReplicaCount; replica++)
            {
                var placement = _map.Find(replica, segment.Stripe, segment.StripeOffset);
                if (_active.TryGetValue(placement.ComponentId, out var component))
                {
                    tasks.Add(operation(component, segment, segment.StripeOffset - placement.StripeOffset, cancellationToken).AsTask());
                }
            }
        }

        // Acknowledged only when every active replica has it: a failed replica fails the request.
        await Task.WhenAll(tasks);
    }

    private static List<AllocationExtent> Clip(IReadOnlyList<AllocationExtent> extents, long length)
    {
        var clipped = new List<AllocationExtent>(extents.Count);
        var covered = 0L;
        foreach (var extent in extents)
        {
            if (covered >= length)
            {
                break;
            }

            var take = Math.Min(extent.Length, length - covered);
            clipped.Add(extent with { Length = take });
            covered += take;
        }

        return clipped;
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Size - length)
        {
            throw new VolumeException(VolumeError.OutOfRange, $"range {offset}+{length} is outside virtual disk '{Name}' of {Size} bytes");
        }
    }
}
