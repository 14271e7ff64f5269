using System.Buffers;
using Converge.Common;
using Converge.Coordinator.Tracking;
using Converge.Placement;

namespace Converge.Coordinator;

/// <summary>
/// Some replicas failed a request (or refused it as fenced). The coordinator decides what that means — commit the
/// failed components absent and retry without them, or catch up with metadata and retry — before anything is
/// acknowledged. Escaping to a client it is an I/O error.
/// </summary>
public sealed class ReplicaFailureException(
    IReadOnlyDictionary<Guid, VolumeException> failures, long generation)
    : VolumeException(failures.Values.First().Error, $"replica failure in generation {generation}: {failures.Values.First().Message}")
{
    /// <summary>The components that failed, with why.</summary>
    public IReadOnlyDictionary<Guid, VolumeException> Failures { get; } = failures;

    /// <summary>The configuration generation the request ran under.</summary>
    public long Generation { get; } = generation;

    /// <summary>Only fence refusals: our metadata is behind, nothing is known to be wrong with the replicas.</summary>
    public bool OnlyFenced => Failures.Values.All(e => e.Error == VolumeError.ReadOnly);
}

/// <summary>What a replicated volume reports to its coordinator while serving.</summary>
public interface IReplicaObserver
{
    /// <summary>A read from this replica failed or timed out (served from another); the coordinator may mark it absent.</summary>
    void ReadFailed(Guid componentId, VolumeException error);

    /// <summary>A checksum error was found on this replica and the range rewritten from a good copy.</summary>
    void Repaired(Guid componentId, long bytes);
}

/// <summary>
/// Which write-intent slot new writes mark, and how many writes are in flight per slot; shared by the successive
/// volumes of one coordinator so that a slot can be cleared once every write that marked it has finished.
/// </summary>
public sealed class WriteIntents
{
    private readonly long[] inFlight = new long[2];
    private int slot;

    public int Slot => Volatile.Read(ref slot);

    public static ChangeKinds KindOf(int slot) => slot == 0 ? ChangeKinds.Intent0 : ChangeKinds.Intent1;

    public int Enter()
    {
        while (true)
        {
            var current = Volatile.Read(ref slot);
            Interlocked.Increment(ref inFlight[current]);
            if (Volatile.Read(ref slot) == current)
            {
                return current;
            }

            // Switched meanwhile: count under the new slot so the old one drains.
            Interlocked.Decrement(ref inFlight[current]);
        }
    }

    public void Exit(int entered) => Interlocked.Decrement(ref inFlight[entered]);

    /// <summary>New writes mark the other slot from now on; returns the slot that now drains.</summary>
    public int Switch()
    {
        var old = Volatile.Read(ref slot);
        Volatile.Write(ref slot, 1 - old);
        return old;
    }

    public long InFlight(int which) => Interlocked.Read(ref inFlight[which]);
}

/// <summary>
/// A mirrored, striped object served as one volume (docs/io-path.md, docs/failures.md). Writes go to every
/// component of the write set (active and resyncing) and succeed only when all of them have them (durably, for FUA
/// and FLUSH); every write first marks the current write-intent slot on its components, and writes to a range whose
/// sibling replica is not active also mark it dirty there, for delta resync. Reads go to active replicas only,
/// preferring one on this host, falling back to another on failure and rewriting a copy that failed its checksum.
/// </summary>
public sealed class ReplicatedVolume : IBlockVolume
{
    private readonly StripeMap _map;
    private readonly IReadOnlyDictionary<Guid, IReplicaComponent> _members;
    private readonly HashSet<Guid> _readable;
    private readonly HashSet<(int Stripe, long StripeOffset)> _degraded = [];
    private readonly IReplicaComponent[] _distinct;
    private readonly WriteIntents _intents;
    private readonly RangeLock _locks;
    private readonly CopyCursors? _copies;
    private readonly IReplicaObserver? _observer;
    private readonly TimeSpan _replicaTimeout;
    private int _nextReplica;

    /// <param name="members">The write set: components the configuration lists as active or resyncing, by id.</param>
    /// <param name="readable">The components that are active (complete and current): reads and copies come from these.</param>
    public ReplicatedVolume(
        string name, long size, long generation, StripeMap map, IReadOnlyDictionary<Guid, IReplicaComponent> members,
        IReadOnlySet<Guid> readable, WriteIntents intents, RangeLock locks, IReplicaObserver? observer = null, TimeSpan? replicaTimeout = null,
        CopyCursors? copies = null)
    {
        Name = name;
        Size = size;
        Generation = generation;
        _map = map;
        _members = members;
        _readable = [.. readable.Where(members.ContainsKey)];
        _intents = intents;
        _locks = locks;
        _copies = copies;
        _observer = observer;
        _replicaTimeout = replicaTimeout ?? TimeSpan.FromSeconds(3);
        _distinct = [.. members.Values.Distinct()];
        var layout = map.Layout;
        if (!layout.IsAccessible(c => c.Role == ComponentRole.Witness ? readable.Contains(c.ComponentId) : _readable.Contains(c.ComponentId)))
        {
            throw new VolumeException(VolumeError.Unavailable,
                $"virtual disk '{name}' is inaccessible: not more than half of its votes are active, or a stripe has no complete active copy");
        }

        // The new copy of a move gets a full copy, so it needs no dirty bits; only a primary that is missing does.
        foreach (var component in layout.PrimaryDataComponents)
        {
            if (!_readable.Contains(component.ComponentId))
            {
                _degraded.Add((component.Stripe, component.StripeOffset));
            }
        }
    }

    public string Name { get; }

    public long Size { get; }

    public long Generation { get; }

    public StripeMap Map => _map;

    public IReadOnlyDictionary<Guid, IReplicaComponent> Members => _members;

    public bool IsReadable(Guid componentId) => _readable.Contains(componentId);

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
            await ReadSegmentAsync(segments[0], buffer, cancellationToken).ConfigureAwait(false);
            return;
        }

        var reads = new Task[segments.Count];
        for (var i = 0; i < segments.Count; i++)
        {
            var segment = segments[i];
            reads[i] = ReadSegmentAsync(segment, buffer.Slice(segment.BufferOffset, segment.Length), cancellationToken).AsTask();
        }

        await Task.WhenAll(reads).ConfigureAwait(false);
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken)
    {
        CheckRange(offset, data.Length);
        if (data.IsEmpty || ((offset | (long)data.Length) & (BlockGeometry.BlockSize - 1)) != 0)
        {
            await ForEachReplicaAsync(offset, data.Length, (component, segment, at, track, ct) =>
                component.WriteAsync(at, data.Slice(segment.BufferOffset, segment.Length), flags, track, ct), cancellationToken).ConfigureAwait(false);
            return;
        }

        // Whole blocks: checksummed once here for every replica. The local store keeps these CRCs instead of computing
        // its own, and each peer checks the data it received against them, so a write damaged between hosts is
        // refused rather than stored under a checksum of the damaged bytes.
        var blocks = data.Length >> BlockGeometry.BlockShift;
        var crcs = ArrayPool<uint>.Shared.Rent(blocks);
        try
        {
            Checksums.Crc32CBlocks(data.Span, crcs);
            var all = crcs.AsMemory(0, blocks);
            await ForEachReplicaAsync(offset, data.Length, (component, segment, at, track, ct) =>
            {
                var piece = data.Slice(segment.BufferOffset, segment.Length);
                return ((segment.BufferOffset | segment.Length) & (BlockGeometry.BlockSize - 1)) == 0
                    ? component.WriteAsync(at, piece, all.Slice(segment.BufferOffset >> BlockGeometry.BlockShift, segment.Length >> BlockGeometry.BlockShift), flags, track, ct)
                    : component.WriteAsync(at, piece, flags, track, ct);
            }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            // Every local write has finished (they are awaited without a timeout) and remote ones fold the CRCs
            // before their first await, so nothing reads the array after this.
            ArrayPool<uint>.Shared.Return(crcs);
        }
    }

    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        var flushes = new Task[_distinct.Length];
        for (var i = 0; i < _distinct.Length; i++)
        {
            var deadline = StartDeadline(_distinct[i], 0, cancellationToken);
            flushes[i] = Bounded(_distinct[i], deadline, _distinct[i].FlushAsync(deadline?.Token ?? cancellationToken), cancellationToken);
        }

        await CollectAsync(flushes, i => _distinct[i].ComponentId).ConfigureAwait(false);
    }

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        return ForEachReplicaAsync(offset, length, (component, segment, at, track, ct) =>
            component.TrimAsync(at, segment.Length, flags, track, ct), cancellationToken);
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken)
    {
        CheckRange(offset, length);
        return ForEachReplicaAsync(offset, length, (component, segment, at, track, ct) =>
            component.WriteZeroesAsync(at, segment.Length, flags, track, ct), cancellationToken);
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
                var deadline = StartDeadline(component, 0, cancellationToken);
                var extents = await Bounded(component, deadline, component.GetAllocationAsync(first.StripeOffset - placement.StripeOffset, first.Length, deadline?.Token ?? cancellationToken), cancellationToken)
                    .ConfigureAwait(false);
                return Clip(extents, first.Length);
            }
            catch (VolumeException ex) when (ex.Error is VolumeError.Unavailable or VolumeError.IO or VolumeError.ReadOnly)
            {
                last = ex;
            }
        }

        throw last ?? new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}' has no reachable replica");
    }

    /// <summary>
    /// Copies a stripe range from an active replica to <paramref name="targets"/> while client writes to the range
    /// wait (resync, rebuild, reconcile). Holes stay holes. Returns the bytes written to each target. A copy registered
    /// in <see cref="CopyCursors"/> (one target) passes its <paramref name="cursor"/>: it moves past the range before the
    /// range's lock is released, so no client write can see the range as still ahead once this copy has read it.
    /// </summary>
    public async Task<long> CopyAsync(
        int stripe, long stripeOffset, int length, IReadOnlyList<Guid> targets, Memory<byte> buffer, CancellationToken cancellationToken,
        CopyCursors.Cursor? cursor = null)
    {
        var segment = new Segment(0, 0, length, stripe, stripeOffset);
        using var held = await _locks.AcquireAsync(
            RangeLock.Key(stripe, stripeOffset), RangeLock.Key(stripe, stripeOffset + length), exclusive: true, cancellationToken).ConfigureAwait(false);
        var data = buffer[..length];
        await ReadSegmentAsync(segment, data, cancellationToken, repair: false).ConfigureAwait(false);
        var slot = _intents.Enter();

        // Checksummed once for every target, as client writes are (WriteAsync).
        var blocks = (length & (BlockGeometry.BlockSize - 1)) == 0 ? length >> BlockGeometry.BlockShift : 0;
        var crcs = blocks == 0 ? null : ArrayPool<uint>.Shared.Rent(blocks);
        try
        {
            if (crcs is not null)
            {
                Checksums.Crc32CBlocks(data.Span, crcs);
            }

            var blockCrcs = crcs.AsMemory(0, blocks);
            var writes = new List<Task>(targets.Count);
            var ids = new List<Guid>(targets.Count);
            var copiedEnd = 0L;
            foreach (var target in targets)
            {
                var placement = FindPlacement(target, stripe, stripeOffset);
                copiedEnd = stripeOffset - placement.StripeOffset + length;
                var component = _members[target];
                var track = WriteIntents.KindOf(slot) | (_degraded.Contains((stripe, placement.StripeOffset)) ? ChangeKinds.Dirty : ChangeKinds.None);
                var deadline = StartDeadline(component, length, cancellationToken);
                writes.Add(Bounded(component, deadline, component.WriteAsync(stripeOffset - placement.StripeOffset, data, blockCrcs, WriteFlags.Bulk, track, deadline?.Token ?? cancellationToken), cancellationToken));
                ids.Add(target);
            }

            await CollectAsync([.. writes], i => ids[i]).ConfigureAwait(false);
            cursor?.Advance(copiedEnd);
        }
        finally
        {
            _intents.Exit(slot);
            if (crcs is not null)
            {
                ArrayPool<uint>.Shared.Return(crcs);
            }
        }

        return length;
    }

    /// <summary>The data components that hold the same stripe range as <paramref name="component"/> in other replicas.</summary>
    public IEnumerable<ComponentPlacement> Siblings(ComponentPlacement component) =>
        _map.Layout.DataComponents.Where(c => c.Stripe == component.Stripe && c.StripeOffset == component.StripeOffset && c.ComponentId != component.ComponentId);

    private ComponentPlacement FindPlacement(Guid componentId, int stripe, long stripeOffset)
    {
        foreach (var c in _map.Layout.DataComponents)
        {
            if (c.ComponentId == componentId && c.Stripe == stripe && stripeOffset >= c.StripeOffset && stripeOffset < c.StripeOffset + c.Length)
            {
                return c;
            }
        }

        throw new VolumeException(VolumeError.OutOfRange, $"component {componentId:N} does not hold stripe {stripe} offset {stripeOffset}");
    }

    private async ValueTask ReadSegmentAsync(Segment segment, Memory<byte> destination, CancellationToken cancellationToken, bool repair = true)
    {
        VolumeException? last = null;
        List<IReplicaComponent>? corrupt = null;
        foreach (var (component, placement) in Candidates(segment))
        {
            try
            {
                var deadline = StartDeadline(component, destination.Length, cancellationToken);
                await Bounded(component, deadline, component.ReadAsync(segment.StripeOffset - placement.StripeOffset, destination, deadline?.Token ?? cancellationToken), cancellationToken)
                    .ConfigureAwait(false);
                if (corrupt is not null && repair)
                {
                    await RepairAsync(segment, corrupt, cancellationToken).ConfigureAwait(false);
                }

                return;
            }
            catch (VolumeException ex) when (ex.Error is VolumeError.ChecksumMismatch)
            {
                (corrupt ??= []).Add(component);
                last = ex;
            }
            catch (VolumeException ex) when (ex.Error is VolumeError.Unavailable or VolumeError.IO or VolumeError.ReadOnly)
            {
                // Another replica holds the same bytes; the coordinator decides whether this one is absent.
                if (ex.Error != VolumeError.ReadOnly)
                {
                    _observer?.ReadFailed(component.ComponentId, ex);
                }

                last = ex;
            }
        }

        throw last ?? new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}' has no reachable replica for offset {segment.ObjectOffset}");
    }

    /// <summary>Rewrites the copies that failed their checksum from a good one, with client writes to the range held off.</summary>
    private async ValueTask RepairAsync(Segment segment, List<IReplicaComponent> corrupt, CancellationToken cancellationToken)
    {
        var buffer = new byte[segment.Length];
        try
        {
            await CopyAsync(segment.Stripe, segment.StripeOffset, segment.Length, [.. corrupt.Select(c => c.ComponentId)], buffer, cancellationToken).ConfigureAwait(false);
            foreach (var component in corrupt)
            {
                _observer?.Repaired(component.ComponentId, segment.Length);
            }
        }
        catch (VolumeException)
        {
            // The read itself succeeded from a good copy; a failed repair leaves the bad block for the scrubber.
        }
    }

    /// <summary>Readable replicas for a segment: one on this host first, then the others from a rotating start.</summary>
    private IEnumerable<(IReplicaComponent Component, ComponentPlacement Placement)> Candidates(Segment segment)
    {
        var replicas = _map.Layout.ReplicaCount;
        (IReplicaComponent, ComponentPlacement)? local = null;
        for (var r = 0; r < replicas; r++)
        {
            var placement = _map.Find(r, segment.Stripe, segment.StripeOffset);
            if (_readable.Contains(placement.ComponentId) && _members[placement.ComponentId].IsLocal)
            {
                local = (_members[placement.ComponentId], placement);
                yield return local.Value;
                break;
            }
        }

        var start = (int)((uint)Interlocked.Increment(ref _nextReplica) % (uint)replicas);
        for (var i = 0; i < replicas; i++)
        {
            var placement = _map.Find((start + i) % replicas, segment.Stripe, segment.StripeOffset);
            if (_readable.Contains(placement.ComponentId) && _members.TryGetValue(placement.ComponentId, out var component) &&
                (local is null || !ReferenceEquals(component, local.Value.Item1)))
            {
                yield return (component, placement);
            }
        }
    }

    private async ValueTask ForEachReplicaAsync(
        long offset, long length, Func<IReplicaComponent, Segment, long, ChangeKinds, CancellationToken, ValueTask> operation, CancellationToken cancellationToken)
    {
        var segments = new List<Segment>();
        _map.Split(offset, length, segments);
        var locks = new RangeLock.Releaser[segments.Count];
        var held = 0;
        var slot = _intents.Enter();
        try
        {
            for (; held < segments.Count; held++)
            {
                var s = segments[held];
                locks[held] = await _locks.AcquireAsync(
                    RangeLock.Key(s.Stripe, s.StripeOffset), RangeLock.Key(s.Stripe, s.StripeOffset + s.Length), exclusive: false, cancellationToken).ConfigureAwait(false);
            }

            var tasks = new List<Task>(segments.Count * (_map.Layout.ReplicaCount + 1));
            var ids = new List<Guid>(tasks.Capacity);

            // Remote members first: a local page-cache write completes synchronously inside its call, so issued first
            // it would hold back the sends, and the peers would start only after it (QD1 latency, docs/io-path.md).
            for (var pass = 0; pass < 2; pass++)
            {
                var local = pass == 1;
                foreach (var segment in segments)
                {
                    for (var replica = 0; replica < _map.Layout.ReplicaCount; replica++)
                    {
                        var placement = _map.Find(replica, segment.Stripe, segment.StripeOffset);
                        var track = WriteIntents.KindOf(slot) |
                                    (_degraded.Contains((segment.Stripe, placement.StripeOffset)) ? ChangeKinds.Dirty : ChangeKinds.None);
                        var at = segment.StripeOffset - placement.StripeOffset;
                        if (_members.TryGetValue(placement.ComponentId, out var component) && component.IsLocal == local &&
                            !CopyWillCarry(placement.ComponentId, at, segment.Length))
                        {
                            var deadline = StartDeadline(component, segment.Length, cancellationToken);
                            tasks.Add(Bounded(component, deadline, operation(component, segment, at, track, deadline?.Token ?? cancellationToken), cancellationToken));
                            ids.Add(placement.ComponentId);
                        }

                        // A move's new copy (same range) gets every write from the moment it joins, like a rebuild target.
                        if (_map.IncomingFor(placement.ComponentId) is { } incoming && _members.TryGetValue(incoming.ComponentId, out var target) &&
                            target.IsLocal == local && !CopyWillCarry(incoming.ComponentId, segment.StripeOffset - incoming.StripeOffset, segment.Length))
                        {
                            var deadline = StartDeadline(target, segment.Length, cancellationToken);
                            tasks.Add(Bounded(target, deadline, operation(target, segment, segment.StripeOffset - incoming.StripeOffset, track, deadline?.Token ?? cancellationToken), cancellationToken));
                            ids.Add(incoming.ComponentId);
                        }
                    }
                }
            }

            // Acknowledged only when every member has it; failures go back to the coordinator (ReplicaFailureException).
            await CollectAsync([.. tasks], i => ids[i]).ConfigureAwait(false);
        }
        finally
        {
            for (var i = 0; i < held; i++)
            {
                locks[i].Dispose();
            }

            _intents.Exit(slot);
        }
    }

    /// <summary>
    /// A component that is not readable yet and whose copy has not reached this range: the copy will read the range
    /// from an active replica after this write (see <see cref="CopyCursors"/>). Asked with the range lock held.
    /// </summary>
    private bool CopyWillCarry(Guid componentId, long offset, long length) =>
        _copies is { IsEmpty: false } copies && !_readable.Contains(componentId) && copies.TryCarry(componentId, offset, length);

    /// <summary>Awaits every task; replica failures are gathered into one <see cref="ReplicaFailureException"/>.</summary>
    private async Task CollectAsync(Task[] tasks, Func<int, Guid> componentOf)
    {
        try
        {
            await Task.WhenAll(tasks).ConfigureAwait(false);
            return;
        }
        catch
        {
        }

        Dictionary<Guid, VolumeException>? failures = null;
        for (var i = 0; i < tasks.Length; i++)
        {
            if (tasks[i].Exception?.InnerException is not { } error)
            {
                if (tasks[i].IsCanceled)
                {
                    throw new OperationCanceledException();
                }

                continue;
            }

            var failure = error switch
            {
                VolumeException { Error: VolumeError.OutOfRange or VolumeError.NotSupported } ve => throw ve,
                VolumeException ve => ve,
                TimeoutException te => new VolumeException(VolumeError.Unavailable, $"no answer within {_replicaTimeout.TotalSeconds:0.#} s", te),
                OperationCanceledException => throw error,
                _ => new VolumeException(VolumeError.IO, error.Message, error),
            };
            (failures ??= [])[componentOf(i)] = failure;
        }

        if (failures is not null)
        {
            throw new ReplicaFailureException(failures, Generation);
        }
    }

    /// <summary>Slowest transfer rate a healthy remote replica is allowed: a request's deadline grows with its size at this rate.</summary>
    private const double MinReplicaBytesPerSecond = 32 << 20;

    /// <summary>
    /// A deadline for one request to a remote replica (null for a local one, which is awaited without one): the replica
    /// timeout plus the request's size at <see cref="MinReplicaBytesPerSecond"/>.
    /// </summary>
    private CancellationTokenSource? StartDeadline(IReplicaComponent component, long bytes, CancellationToken cancellationToken)
    {
        if (component.IsLocal)
        {
            return null;
        }

        var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_replicaTimeout + TimeSpan.FromSeconds(bytes / MinReplicaBytesPerSecond));
        return deadline;
    }

    /// <summary>
    /// A remote replica that does not answer by its deadline counts as failed (a hung host): an Unavailable error, so a
    /// read goes on to another replica and a write has the replica committed absent. The deadline cancels the request
    /// itself rather than abandoning it: an abandoned read would still copy its late reply into a buffer the caller
    /// may have handed to another request by then, and an abandoned write would still send from one.
    /// </summary>
    private async Task Bounded(IReplicaComponent component, CancellationTokenSource? deadline, ValueTask operation, CancellationToken cancellationToken)
    {
        if (deadline is null)
        {
            await operation.ConfigureAwait(false);
            return;
        }

        try
        {
            await operation.ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw TimedOut(component, e);
        }
        finally
        {
            deadline.Dispose();
        }
    }

    private async Task<T> Bounded<T>(IReplicaComponent component, CancellationTokenSource? deadline, ValueTask<T> operation, CancellationToken cancellationToken)
    {
        if (deadline is null)
        {
            return await operation.ConfigureAwait(false);
        }

        try
        {
            return await operation.ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw TimedOut(component, e);
        }
        finally
        {
            deadline.Dispose();
        }
    }

    private VolumeException TimedOut(IReplicaComponent component, Exception e) =>
        new(VolumeError.Unavailable, $"component {component.ComponentId:N}: no answer within its deadline ({_replicaTimeout.TotalSeconds:0.#} s and its size)", e);

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
