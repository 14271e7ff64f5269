using Converge.Common;
using Converge.Coordinator;
using Converge.Coordinator.Tracking;
using Converge.Metadata;
using Converge.Placement;

namespace Converge.Host.Cluster;

/// <summary>
/// A virtual disk this host coordinates under one lease epoch (docs/failures.md): it serves I/O through a
/// <see cref="ReplicatedVolume"/> rebuilt for every configuration generation, turns replica failures into committed
/// component states before anything is acknowledged without the replica, reconciles write intents when it takes
/// over, rotates the intent slots, and resyncs components that come back.
/// </summary>
internal sealed class CoordinatedDisk : IReplicaObserver
{
    private const int CopyChunk = 1 << 20;

    /// <summary>
    /// A resync, rebuild or move copies in pieces of this size, <see cref="ResyncDepth"/> of them in flight. A target
    /// host writes each piece inline on its peer connection, so a client write queued behind it waits for one piece:
    /// smaller pieces keep that wait short, several in flight keep the copy's rate (bench/RESULTS.md).
    /// </summary>
    private const int ResyncChunk = 256 << 10;

    private const int ResyncDepth = 4;

    /// <summary>How long a replica failure may wait for the metadata to commit it (a Raft election under load takes seconds).</summary>
    private static readonly TimeSpan CommitTimeout = TimeSpan.FromSeconds(20);
    private readonly CoordinatorManager owner;
    private readonly Lock gate = new();
    private readonly CancellationTokenSource stop = new();
    private readonly SemaphoreSlim failureHandling = new(1, 1);
    private (long Generation, ReplicatedVolume Volume)? built;
    private long expiresAtTicks;
    private long lastRotation;
    private volatile bool stopped;
    private Task maintenance = Task.CompletedTask;

    // Components that were already not active when this coordinator took over: writes may have reached them and not
    // their siblings under the previous coordinator, so their own write intents join their resync. Components that
    // leave later need no such thing: every write that failed on them was retried and marked dirty on the siblings.
    private HashSet<Guid> inheritedAbsences = [];

    // When this coordinator first saw each component not active: the repair delay counts from here (conservative
    // after a coordinator change, which restarts the clock).
    private readonly Dictionary<Guid, long> notActiveSince = [];
    private long scrubCursor;
    private byte[]? scrubBuffer;

    public CoordinatedDisk(CoordinatorManager owner, string virtualDiskId, string name, long epoch)
    {
        this.owner = owner;
        VirtualDiskId = virtualDiskId;
        Name = name;
        Epoch = epoch;
        Front = new CoordinatorVolume(this);
        lastRotation = owner.Time.GetTimestamp();
    }

    public string VirtualDiskId { get; }

    public string Name { get; }

    public long Epoch { get; }

    /// <summary>What requests are served through: resolves the current configuration per request, retries after failures.</summary>
    public IBlockVolume Front { get; }

    public WriteIntents Intents { get; } = new();

    public RangeLock Locks { get; } = new();

    /// <summary>The copies in progress into this disk's components, so client writes ahead of them skip their targets.</summary>
    public CopyCursors Copies { get; } = new();

    public DateTimeOffset ExpiresAt => new(Interlocked.Read(ref expiresAtTicks), TimeSpan.Zero);

    public void Extend(DateTimeOffset expiresAt)
    {
        var ticks = expiresAt.UtcTicks;
        long seen;
        do
        {
            seen = Interlocked.Read(ref expiresAtTicks);
            if (seen >= ticks)
            {
                return;
            }
        }
        while (Interlocked.CompareExchange(ref expiresAtTicks, ticks, seen) != seen);
    }

    public void Start() => maintenance = Task.Run(() => MaintainAsync(stop.Token), CancellationToken.None);

    public void Stop()
    {
        stopped = true;
        stop.Cancel();
    }

    /// <summary>Serving stops <see cref="CoordinatorManager.SafetyMargin"/> before the lease could expire anywhere.</summary>
    public bool IsValid(DateTimeOffset now) => !stopped && now < ExpiresAt - CoordinatorManager.SafetyMargin;

    /// <summary>The volume for the current configuration; Unavailable when the lease lapsed or the disk is gone.</summary>
    public ReplicatedVolume Current()
    {
        if (!IsValid(owner.Time.GetUtcNow()))
        {
            throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}': this host's coordinator lease lapsed");
        }

        if (!owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out var vdisk))
        {
            throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}' does not exist (deleted?)");
        }

        lock (gate)
        {
            if (built is { } b && b.Generation == vdisk.Generation)
            {
                return b.Volume;
            }

            var volume = Build(vdisk);
            built = (vdisk.Generation, volume);
            return volume;
        }
    }

    private ReplicatedVolume Build(VirtualDiskRecord vdisk)
    {
        var state = owner.Metadata.Current;
        var fence = new Fence(vdisk.Generation, Epoch);
        var members = new Dictionary<Guid, IReplicaComponent>();
        var active = new HashSet<Guid>();
        foreach (var component in vdisk.Layout.Components)
        {
            var componentState = vdisk.StateOf(component.ComponentId);
            if (componentState == ComponentState.Active)
            {
                active.Add(component.ComponentId);
            }

            if (component.Role != ComponentRole.Data || componentState is not (ComponentState.Active or ComponentState.Resyncing or ComponentState.Stale))
            {
                continue;
            }

            IReplicaComponent replica;
            if (component.HostId == owner.HostId)
            {
                replica = owner.Local.FindComponent(component.ComponentId) is { } local
                    ? new LocalReplica(component.ComponentId, local, owner.Local, owner.Fences, fence)
                    : new MissingComponent(component.ComponentId, component.Length);
            }
            else if (state.Hosts.TryGetValue(component.HostId, out var host))
            {
                replica = new RemoteComponent(
                    component.ComponentId, LocalComponents.ComponentName(vdisk.Name, component.ComponentId), component.Length,
                    owner.Peers.Get(host.Endpoints.PeerData), () => fence);
            }
            else
            {
                replica = new MissingComponent(component.ComponentId, component.Length);
            }

            members[component.ComponentId] = replica;
        }

        return new ReplicatedVolume(
            vdisk.Name, vdisk.SizeBytes, vdisk.Generation, new StripeMap(vdisk.Layout), members, active, Intents, Locks, this, owner.ReplicaTimeout, Copies);
    }

    /// <summary>
    /// Acts on a failed request before it is retried: fence refusals mean our metadata is behind (catch up);
    /// other failures commit the failed components absent — the write is then retried without them, and only then
    /// acknowledged (DESIGN.md, "Acknowledging writes"). Refuses, with an I/O error, to commit a state that would
    /// leave the object inaccessible, and fails when the metadata quorum cannot be reached (a partitioned minority).
    /// </summary>
    public async Task HandleFailureAsync(ReplicaFailureException failure, CancellationToken cancellationToken)
    {
        if (failure.OnlyFenced)
        {
            await owner.Fences.CatchUpAsync(cancellationToken).ConfigureAwait(false);
            return;
        }

        await failureHandling.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var failed = failure.Failures.Where(f => f.Value.Error != VolumeError.ReadOnly).ToDictionary();
            await MarkFailedAsync(failed, failure.Generation, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            failureHandling.Release();
        }
    }

    private async Task MarkFailedAsync(Dictionary<Guid, VolumeException> failed, long generation, CancellationToken cancellationToken)
    {
        if (!owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out var vdisk))
        {
            throw new VolumeException(VolumeError.Unavailable, $"virtual disk '{Name}' does not exist (deleted?)");
        }

        if (vdisk.Generation != generation)
        {
            return; // The configuration moved on (maybe these very components were marked already): retry under it.
        }

        // A move's new copy that fails is dropped: the component it was to replace still serves, so nothing is lost and
        // the object keeps every copy it had. The move is tried again later (elsewhere, if the target stays down).
        var expected = generation;
        foreach (var incoming in vdisk.Layout.Components.Where(c => c.IsIncoming && failed.ContainsKey(c.ComponentId)).ToList())
        {
            var cancelled = await ProposeOrFailAsync(new CancelMove(Guid.NewGuid(), VirtualDiskId, incoming.ComponentId, expected), cancellationToken).ConfigureAwait(false);
            if (!cancelled.Succeeded || cancelled.Generation is not { } after)
            {
                return;
            }

            expected = after;
            Log.MoveEnded(owner.Logger, Name, incoming.Replaces!.Value.ToString("N"), incoming.ComponentId.ToString("N"), $"cancelled: the new copy failed ({failed[incoming.ComponentId].Message})", after);
        }

        var marks = failed
            .Where(f => vdisk.StateOf(f.Key) is ComponentState.Active or ComponentState.Resyncing && !vdisk.Layout.Components.Any(c => c.ComponentId == f.Key && c.IsIncoming))
            .Select(f => (Id: f.Key, State: f.Value.Error == VolumeError.NoSpace ? ComponentState.Degraded : ComponentState.Absent, Reason: f.Value.Message))
            .ToList();
        var marked = marks.Select(m => m.Id).ToHashSet();
        if (!vdisk.Layout.IsAccessible(c => vdisk.StateOf(c.ComponentId) == ComponentState.Active && !marked.Contains(c.ComponentId)))
        {
            throw new VolumeException(
                failed.Values.First().Error == VolumeError.NoSpace ? VolumeError.NoSpace : VolumeError.IO,
                $"virtual disk '{Name}': {failed.Count} replica(s) failed and the rest would not keep it accessible: {failed.Values.First().Message}");
        }

        foreach (var (id, componentState, reason) in marks)
        {
            var result = await ProposeOrFailAsync(new SetComponentState(Guid.NewGuid(), VirtualDiskId, id, componentState, expected), cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded || result.Generation is not { } next)
            {
                return;
            }

            expected = next;
            Log.ComponentStateChanged(owner.Logger, Name, id.ToString("N"), componentState.ToString().ToLowerInvariant(), next, reason);
        }
    }

    private async Task<CommandResult> ProposeOrFailAsync(MetadataCommand command, CancellationToken cancellationToken)
    {
        try
        {
            return await owner.Metadata.ProposeAsync(command, cancellationToken, timeout: CommitTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            // Without a committed state change nothing may be acknowledged without the replica: fail the write.
            throw new VolumeException(VolumeError.IO, $"virtual disk '{Name}': a replica failed and the change could not be committed (no metadata quorum): {e.Message}", e);
        }
    }

    public void ReadFailed(Guid componentId, VolumeException error)
    {
        if (stopped || failureHandling.CurrentCount == 0)
        {
            return;
        }

        var generation = built?.Generation ?? -1;
        _ = Task.Run(async () =>
        {
            try
            {
                await failureHandling.WaitAsync(stop.Token).ConfigureAwait(false);
                try
                {
                    await MarkFailedAsync(new Dictionary<Guid, VolumeException> { [componentId] = error }, generation, stop.Token).ConfigureAwait(false);
                }
                finally
                {
                    failureHandling.Release();
                }
            }
            catch (Exception e) when (e is VolumeException or OperationCanceledException or ObjectDisposedException)
            {
            }
        });
    }

    public void Repaired(Guid componentId, long bytes)
    {
        using var progress = owner.Resyncs.Begin(VirtualDiskId, Name, componentId, owner.HostId, ResyncKind.Repair, bytes);
        progress.Advance(bytes);
        progress.Complete();
        owner.CountRepair(bytes);
        Log.Repaired(owner.Logger, Name, componentId.ToString("N"), bytes);
    }

    /// <summary>
    /// Before serving as a new coordinator: replicas may differ where writes were in flight when the previous
    /// coordinator stopped. Every region an active replica recorded as intended is copied from one replica to the
    /// others, so that any replica returns the same bytes afterwards (DESIGN.md, "Coordinator failover").
    /// </summary>
    public async Task ReconcileAsync(CancellationToken cancellationToken)
    {
        if (owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out var atTakeover))
        {
            inheritedAbsences = [.. atTakeover.Layout.DataComponents.Where(c => atTakeover.StateOf(c.ComponentId) != ComponentState.Active).Select(c => c.ComponentId)];
        }

        for (var attempt = 0; ; attempt++)
        {
            var volume = Current();
            try
            {
                await ReconcileOnceAsync(volume, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (ReplicaFailureException e) when (attempt < 4)
            {
                await HandleFailureAsync(e, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private async Task ReconcileOnceAsync(ReplicatedVolume volume, CancellationToken cancellationToken)
    {
        var buffer = new byte[CopyChunk];
        foreach (var group in volume.Map.Layout.DataComponents.GroupBy(c => (c.Stripe, c.StripeOffset)))
        {
            var members = group.Where(c => volume.Members.ContainsKey(c.ComponentId)).ToList();
            var readable = members.Where(c => volume.IsReadable(c.ComponentId)).ToList();
            if (readable.Count == 0 || members.Count < 2)
            {
                continue;
            }

            var ranges = new List<ChangedRange>();
            foreach (var member in readable)
            {
                ranges.AddRange(await ReadChangesAsync(volume, member.ComponentId, ChangeKinds.Intents, cancellationToken).ConfigureAwait(false));
            }

            // Only what some readable replica holds: a range that is a hole on all of them reads as zeros on all of
            // them, and copying it would fill the holes (a map page lost in a crash marks up to 32 GiB at once).
            ranges = ChangeMap.Merge(ranges);
            ranges = await AllocatedWithinAsync(volume, readable.Select(r => r.ComponentId), ranges, cancellationToken).ConfigureAwait(false);
            var total = ranges.Sum(r => r.Length);
            if (total > 0)
            {
                var started = owner.Time.GetTimestamp();
                using var progress = owner.Resyncs.Begin(VirtualDiskId, Name, members[0].ComponentId, owner.HostId, ResyncKind.Reconcile, total);
                var targets = members.Select(m => m.ComponentId).ToList();
                foreach (var range in ranges)
                {
                    for (var at = range.Offset; at < range.End; at += CopyChunk)
                    {
                        var length = (int)Math.Min(CopyChunk, range.End - at);
                        await volume.CopyAsync(group.Key.Stripe, group.Key.StripeOffset + at, length, targets, buffer, cancellationToken).ConfigureAwait(false);
                        progress.Advance(length);
                    }
                }

                progress.Complete();
                Log.CopyFinished(owner.Logger, Name, "reconcile", members[0].ComponentId.ToString("N"), total, owner.Time.GetElapsedTime(started).TotalSeconds, 0, 0);
            }

            foreach (var member in readable)
            {
                try
                {
                    await Bounded(ct => volume.Members[member.ComponentId].ClearChangesAsync(ChangeKinds.Intents, 0, member.Length, ct), cancellationToken).ConfigureAwait(false);
                }
                catch (VolumeException e) when (e is not ReplicaFailureException)
                {
                    throw new ReplicaFailureException(new Dictionary<Guid, VolumeException> { [member.ComponentId] = e }, volume.Generation);
                }
            }
        }
    }

    private static async Task<List<ChangedRange>> ReadChangesAsync(ReplicatedVolume volume, Guid componentId, ChangeKinds kinds, CancellationToken cancellationToken)
    {
        try
        {
            return await Bounded(ct => volume.Members[componentId].ReadChangesAsync(kinds, ct), cancellationToken).ConfigureAwait(false);
        }
        catch (VolumeException e) when (e is not ReplicaFailureException)
        {
            throw new ReplicaFailureException(new Dictionary<Guid, VolumeException> { [componentId] = e }, volume.Generation);
        }
    }

    private async Task MaintainAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1), owner.Time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    if (!IsValid(owner.Time.GetUtcNow()))
                    {
                        continue;
                    }

                    if (owner.Time.GetElapsedTime(lastRotation) >= owner.IntentRotation)
                    {
                        await RotateIntentsAsync(cancellationToken).ConfigureAwait(false);
                    }

                    await CompleteMovesAsync(cancellationToken).ConfigureAwait(false);
                    await RebuildDueAsync(cancellationToken).ConfigureAwait(false);
                    await ResyncReturningAsync(cancellationToken).ConfigureAwait(false);
                    await ScrubStepAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is VolumeException or MetadataUnavailableException or HttpRequestException || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
                {
                    Log.CopyFailed(owner.Logger, Name, "maintenance", "-", e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// New writes mark the other intent slot; once every write that marked the old one has finished and the replicas
    /// are flushed, the old slot is cleared, so a takeover reconciles only recent regions.
    /// </summary>
    private async Task RotateIntentsAsync(CancellationToken cancellationToken)
    {
        lastRotation = owner.Time.GetTimestamp();
        var old = Intents.Switch();
        if (!await DrainAsync(old, cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        var volume = Current();
        try
        {
            await volume.FlushAsync(cancellationToken).ConfigureAwait(false);
            foreach (var member in volume.Members.Values)
            {
                await Bounded(ct => member.ClearChangesAsync(WriteIntents.KindOf(old), 0, member.Size, ct), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (VolumeException)
        {
            // Bits left set cost a larger reconcile after a takeover, nothing else; a failed replica is found by I/O.
        }
    }

    /// <summary>Waits until every write that marked intent slot <paramref name="slot"/> has finished (false after 10 s).</summary>
    private async Task<bool> DrainAsync(int slot, CancellationToken cancellationToken)
    {
        var started = owner.Time.GetTimestamp();
        while (Intents.InFlight(slot) > 0)
        {
            if (owner.Time.GetElapsedTime(started) > TimeSpan.FromSeconds(10))
            {
                return false;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(5), owner.Time, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>Resyncs data components that are absent, stale or resyncing, when their host answers again.</summary>
    private async Task ResyncReturningAsync(CancellationToken cancellationToken)
    {
        if (!owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out var vdisk))
        {
            return;
        }

        foreach (var component in vdisk.Layout.DataComponents)
        {
            var componentState = vdisk.StateOf(component.ComponentId);
            if (componentState is not (ComponentState.Absent or ComponentState.Stale or ComponentState.Resyncing))
            {
                continue;
            }

            if (!await owner.ComponentReachableAsync(component, cancellationToken).ConfigureAwait(false))
            {
                continue;
            }

            await ResyncAsync(component, cancellationToken).ConfigureAwait(false);
            if (!owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out vdisk))
            {
                return;
            }
        }
    }

    private async Task ResyncAsync(ComponentPlacement component, CancellationToken cancellationToken)
    {
        var vdisk = owner.Metadata.Current.VirtualDisks[VirtualDiskId];
        var full = vdisk.StateOf(component.ComponentId) == ComponentState.Stale;
        if (!full && vdisk.StateOf(component.ComponentId) != ComponentState.Resyncing)
        {
            var result = await owner.Metadata.ProposeAsync(
                new SetComponentState(Guid.NewGuid(), VirtualDiskId, component.ComponentId, ComponentState.Resyncing, vdisk.Generation), cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                return;
            }

            Log.ComponentStateChanged(owner.Logger, Name, component.ComponentId.ToString("N"), "resyncing", result.Generation ?? 0, "its host answers again");
        }

        var volume = Current();
        if (!volume.Members.TryGetValue(component.ComponentId, out var target))
        {
            return;
        }

        // Writes issued before the component joined the write set must have marked their dirty bits before we read them.
        await DrainAsync(Intents.Switch(), cancellationToken).ConfigureAwait(false);
        var started = owner.Time.GetTimestamp();

        // What it missed: blocks its active siblings recorded dirty, plus regions it may have written itself without
        // the others (its own write intents from before it left).
        var ranges = new List<ChangedRange>();
        try
        {
            if (full)
            {
                // A rebuild target starts empty: everything a good replica holds (holes stay holes).
                ranges.AddRange(await AllocatedAsync(volume, component, cancellationToken).ConfigureAwait(false));
            }

            foreach (var sibling in volume.Siblings(component).Where(s => !full && volume.IsReadable(s.ComponentId)))
            {
                ranges.AddRange(await Bounded(ct => volume.Members[sibling.ComponentId].ReadChangesAsync(ChangeKinds.Dirty, ct), cancellationToken).ConfigureAwait(false));
            }

            if (inheritedAbsences.Contains(component.ComponentId))
            {
                ranges.AddRange(await Bounded(ct => target.ReadChangesAsync(ChangeKinds.Intents, ct), cancellationToken).ConfigureAwait(false));
            }
        }
        catch (VolumeException e)
        {
            Log.CopyFailed(owner.Logger, Name, "resync", component.ComponentId.ToString("N"), e.Message);
            return;
        }

        ranges = ChangeMap.Merge(ranges);
        var total = ranges.Sum(r => r.Length);
        var kind = component.IsIncoming ? ResyncKind.Move : full ? ResyncKind.Rebuild : ResyncKind.Resync;
        using var progress = owner.Resyncs.Begin(VirtualDiskId, Name, component.ComponentId, component.HostId, kind, total);
        var copied = 0L;
        var pacer = owner.CreateResyncPacer();
        using var cursor = Copies.Begin(component.ComponentId, ranges);
        var inFlight = new Queue<(Task Copy, byte[] Buffer, int Length)>(ResyncDepth);

        // Pieces complete in any order; progress counts them in the order they were issued.
        async Task<byte[]> CompleteOldestAsync()
        {
            var (copy, buffer, length) = inFlight.Peek();
            await copy.ConfigureAwait(false);
            inFlight.Dequeue();
            progress.Advance(length);
            copied += length;
            return buffer;
        }

        try
        {
            foreach (var range in ranges)
            {
                for (var at = range.Offset; at < range.End; at += ResyncChunk)
                {
                    var length = (int)Math.Min(ResyncChunk, range.End - at);
                    await pacer.PaceAsync(length, cancellationToken).ConfigureAwait(false);
                    var buffer = inFlight.Count < ResyncDepth ? new byte[ResyncChunk] : await CompleteOldestAsync().ConfigureAwait(false);
                    inFlight.Enqueue((volume.CopyAsync(component.Stripe, component.StripeOffset + at, length, [component.ComponentId], buffer, cancellationToken, cursor), buffer, length));
                }
            }

            while (inFlight.Count > 0)
            {
                await CompleteOldestAsync().ConfigureAwait(false);
            }

            await Bounded(target.FlushAsync, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is VolumeException or OperationCanceledException)
        {
            // The pieces still in flight use our buffers and the range lock: let them finish (or fail) first.
            while (inFlight.Count > 0)
            {
                try
                {
                    await inFlight.Dequeue().Copy.ConfigureAwait(false);
                }
                catch (Exception ignored) when (ignored is VolumeException or OperationCanceledException)
                {
                }
            }

            if (e is not VolumeException failed)
            {
                throw;
            }

            // A failure during the copy: the dirty bits are untouched, so the next attempt starts over safely.
            Log.CopyFailed(owner.Logger, Name, "resync", component.ComponentId.ToString("N"), failed.Message);
            if (e is ReplicaFailureException failure)
            {
                await HandleFailureAsync(failure, cancellationToken).ConfigureAwait(false);
            }

            return;
        }

        var activated = await owner.Metadata.ProposeAsync(
            new SetComponentState(Guid.NewGuid(), VirtualDiskId, component.ComponentId, ComponentState.Active, volume.Generation), cancellationToken).ConfigureAwait(false);
        if (!activated.Succeeded)
        {
            return;
        }

        progress.Complete();
        inheritedAbsences.Remove(component.ComponentId);
        Log.CopyFinished(owner.Logger, Name, kind.ToString().ToLowerInvariant(), component.ComponentId.ToString("N"), copied, owner.Time.GetElapsedTime(started).TotalSeconds, pacer.ContendedBytes, cursor?.Carried ?? 0);
        Log.ComponentStateChanged(owner.Logger, Name, component.ComponentId.ToString("N"), "active", activated.Generation ?? 0, $"{kind.ToString().ToLowerInvariant()} copy complete");

        // Dirty bits are needed until every replica is back; then they are history.
        var now = owner.Metadata.Current.VirtualDisks[VirtualDiskId];
        if (now.Layout.DataComponents.All(c => now.StateOf(c.ComponentId) == ComponentState.Active))
        {
            var healthy = Current();
            foreach (var member in healthy.Members.Values)
            {
                try
                {
                    await Bounded(ct => member.ClearChangesAsync(ChangeKinds.Dirty, 0, member.Size, ct), cancellationToken).ConfigureAwait(false);
                }
                catch (VolumeException)
                {
                    // Left-over bits only make a later resync copy more than it must.
                }
            }
        }
    }

    /// <summary>The allocated ranges of a readable sibling of <paramref name="component"/>, in component offsets.</summary>
    private static async Task<List<ChangedRange>> AllocatedAsync(ReplicatedVolume volume, ComponentPlacement component, CancellationToken cancellationToken)
    {
        var source = volume.Siblings(component).FirstOrDefault(s => volume.IsReadable(s.ComponentId))
            ?? throw new VolumeException(VolumeError.Unavailable, $"no active replica to rebuild component {component.ComponentId:N} from");
        var ranges = new List<ChangedRange>();
        await AddAllocatedAsync(volume.Members[source.ComponentId], 0, component.Length, ranges, cancellationToken).ConfigureAwait(false);
        return ChangeMap.Merge(ranges);
    }

    /// <summary>The parts of <paramref name="ranges"/> that any of <paramref name="replicas"/> has allocated, merged.</summary>
    private static async Task<List<ChangedRange>> AllocatedWithinAsync(
        ReplicatedVolume volume, IEnumerable<Guid> replicas, List<ChangedRange> ranges, CancellationToken cancellationToken)
    {
        var allocated = new List<ChangedRange>();
        foreach (var id in replicas)
        {
            try
            {
                foreach (var range in ranges)
                {
                    await AddAllocatedAsync(volume.Members[id], range.Offset, range.Length, allocated, cancellationToken).ConfigureAwait(false);
                }
            }
            catch (VolumeException e) when (e is not ReplicaFailureException)
            {
                throw new ReplicaFailureException(new Dictionary<Guid, VolumeException> { [id] = e }, volume.Generation);
            }
        }

        return ChangeMap.Merge(allocated);
    }

    /// <summary>Adds the allocated (not hole) parts of [offset, offset + length) of one replica to <paramref name="ranges"/>.</summary>
    private static async Task AddAllocatedAsync(IReplicaComponent replica, long offset, long length, List<ChangedRange> ranges, CancellationToken cancellationToken)
    {
        var end = offset + length;
        for (var at = offset; at < end;)
        {
            var window = Math.Min(BlockGeometry.MaxRequestBytes, end - at);
            var start = at;
            var extents = await Bounded(ct => replica.GetAllocationAsync(start, window, ct), cancellationToken).ConfigureAwait(false);
            var covered = 0L;
            foreach (var extent in extents)
            {
                var extentLength = Math.Min(extent.Length, window - covered);
                if (extentLength <= 0)
                {
                    break;
                }

                if (!extent.Flags.HasFlag(AllocationFlags.Hole))
                {
                    ranges.Add(new ChangedRange(at + covered, extentLength));
                }

                covered += extentLength;
            }

            at += Math.Max(covered, BlockGeometry.BlockSize);
        }
    }

    /// <summary>
    /// Components that will not come back in time are replaced elsewhere: a degraded one (its disk failed) at once,
    /// an absent one after the repair delay. The replacement joins as stale and is filled by a full copy. Components
    /// that must leave a host or disk that is being emptied (decommission, maintenance with full data migration) and
    /// are still active are moved make-before-break instead: the old copy serves until the new one is complete.
    /// </summary>
    private async Task RebuildDueAsync(CancellationToken cancellationToken)
    {
        if (!owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out var vdisk) || owner.Manager is not { } manager)
        {
            return;
        }

        var moving = vdisk.Layout.Components.Any(c => c.IsIncoming);
        foreach (var component in vdisk.Layout.Components)
        {
            if (component.IsIncoming || vdisk.Layout.IncomingFor(component.ComponentId) is not null)
            {
                continue; // Being moved: the move replaces it (even if it fails meanwhile), or is cancelled first.
            }

            var componentState = vdisk.StateOf(component.ComponentId);
            var current = owner.Metadata.Current;
            var host = current.Hosts.GetValueOrDefault(component.HostId);
            var inMaintenance = host?.State == Metadata.HostState.Maintenance;
            var evacuate = current.MustEvacuate(component) && componentState is ComponentState.Active or ComponentState.Absent or ComponentState.Degraded;
            if (componentState is ComponentState.Active && !evacuate)
            {
                notActiveSince.Remove(component.ComponentId);
                continue;
            }

            if (!notActiveSince.TryGetValue(component.ComponentId, out var since))
            {
                notActiveSince[component.ComponentId] = since = owner.Time.GetTimestamp();
            }

            // A host in maintenance (other modes) is expected back: its absence does not start a rebuild.
            var due = evacuate || componentState == ComponentState.Degraded ||
                      (componentState == ComponentState.Absent && !inMaintenance && owner.Time.GetElapsedTime(since) >= owner.RepairDelay);
            if (!due)
            {
                continue;
            }

            if (evacuate && componentState == ComponentState.Active &&
                (moving || vdisk.Layout.Components.Any(c => c.ComponentId != component.ComponentId && vdisk.StateOf(c.ComponentId) != ComponentState.Active)))
            {
                continue; // One move at a time per virtual disk, and never while it is already short of a copy.
            }

            // Only its disk is being emptied (the host stays): another disk of the same host is a fine target.
            var hostLeaves = host?.State is Metadata.HostState.Decommissioning or Metadata.HostState.Maintenance;
            var state = owner.Metadata.Current;
            var topology = await manager.TopologyAsync(state, cancellationToken).ConfigureAwait(false);
            var placed = Replacement.Place(vdisk.Layout, component.ComponentId, Guid.NewGuid(), topology,
                hostLost: evacuate ? hostLeaves : componentState != ComponentState.Degraded);
            if (placed.Layout is null)
            {
                Log.CopyFailed(owner.Logger, Name, evacuate ? "evacuation" : "rebuild", component.ComponentId.ToString("N"), placed.Error ?? "no placement");
                continue;
            }

            var replacement = placed.Layout.Components.Single(c => !vdisk.Layout.Components.Any(o => o.ComponentId == c.ComponentId));
            var reason = evacuate ? EvacuationReason(state, component)
                : componentState == ComponentState.Degraded ? "its disk failed" : $"absent for over {owner.RepairDelay.TotalMinutes:0.#} min";
            if (evacuate && componentState == ComponentState.Active)
            {
                await manager.BeginMoveAsync(vdisk, component, replacement, reason, cancellationToken).ConfigureAwait(false);
                return; // The copy starts on the next round (the new copy is stale, so the resync pass fills it).
            }

            await manager.EnsureComponentAsync(state, vdisk.Name, replacement, replacement.Role == ComponentRole.Witness ? BlockGeometry.BlockSize : replacement.Length, cancellationToken)
                .ConfigureAwait(false);
            var result = await owner.Metadata.ProposeAsync(
                new ReplaceComponent(Guid.NewGuid(), VirtualDiskId, component.ComponentId, replacement, vdisk.Generation), cancellationToken).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                return;
            }

            notActiveSince.Remove(component.ComponentId);
            Log.ComponentStateChanged(owner.Logger, Name, replacement.ComponentId.ToString("N"), "stale", result.Generation ?? 0,
                $"replaces {component.ComponentId:N} on host {replacement.HostId} ({reason})");
            DeleteOldCopy(state, component);
            return; // One layout change per round; the copy starts on the next round.
        }
    }

    private static string EvacuationReason(ClusterState state, ComponentPlacement component) =>
        state.Hosts.GetValueOrDefault(component.HostId)?.State switch
        {
            Metadata.HostState.Decommissioning => "its host is being decommissioned",
            Metadata.HostState.Maintenance => "its host is evacuated (maintenance, full data migration)",
            _ => "its disk is being decommissioned",
        };

    /// <summary>
    /// A move whose new copy is complete (active) is finished: the old component leaves the layout and the new one takes
    /// its votes, in one committed step; then the old copy's data is deleted (best effort, like after a rebuild).
    /// </summary>
    private async Task CompleteMovesAsync(CancellationToken cancellationToken)
    {
        if (!owner.Metadata.Current.VirtualDisks.TryGetValue(VirtualDiskId, out var vdisk))
        {
            return;
        }

        var incoming = vdisk.Layout.Components.FirstOrDefault(c => c.IsIncoming && vdisk.StateOf(c.ComponentId) == ComponentState.Active);
        if (incoming is null)
        {
            return;
        }

        var state = owner.Metadata.Current;
        var old = vdisk.Layout.Components.First(c => c.ComponentId == incoming.Replaces);
        var result = await owner.Metadata.ProposeAsync(
            new CompleteMove(Guid.NewGuid(), VirtualDiskId, incoming.ComponentId, vdisk.Generation), cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            return;
        }

        notActiveSince.Remove(old.ComponentId);
        Log.MoveEnded(owner.Logger, Name, old.ComponentId.ToString("N"), incoming.ComponentId.ToString("N"), $"completed: now on host {incoming.HostId}", result.Generation ?? 0);
        DeleteOldCopy(state, old);
    }

    /// <summary>A replaced or moved-away component is garbage; its host may be gone, so this is best effort.</summary>
    private void DeleteOldCopy(ClusterState state, ComponentPlacement component)
    {
        if (component.HostId == owner.HostId)
        {
            _ = owner.Local.DeleteAsync(component.ComponentId, CancellationToken.None).AsTask().ContinueWith(static _ => { }, TaskScheduler.Default);
        }
        else if (state.Hosts.TryGetValue(component.HostId, out var oldHost))
        {
            _ = owner.Peers.DeleteComponentAsync(oldHost.Endpoints.PeerData, component.ComponentId, CancellationToken.None)
                .ContinueWith(static _ => { }, TaskScheduler.Default);
        }
    }

    /// <summary>
    /// The scrubber: each second it reads the next piece of every active replica (the scrub rate per second) and
    /// rewrites a piece that fails its checksum from a replica that reads clean, so latent errors are found before a
    /// second failure makes them fatal. A full pass restarts from the beginning.
    /// </summary>
    private async Task ScrubStepAsync(CancellationToken cancellationToken)
    {
        var rate = owner.ScrubBytesPerSecond;
        var volume = Current();
        if (rate <= 0 || volume.Members.Count < 2)
        {
            return;
        }

        var layout = volume.Map.Layout;
        var pieces = layout.PrimaryDataComponents.Where(c => c.Replica == 0).OrderBy(c => c.Stripe).ThenBy(c => c.StripeOffset).ToList();
        var total = pieces.Sum(c => c.Length);
        if (scrubCursor >= total)
        {
            scrubCursor = 0;
            owner.CountScrubPass();
        }

        var chunk = (int)Math.Min(Math.Min(rate, CopyChunk), total - scrubCursor);
        var position = scrubCursor;
        var piece = pieces[0];
        foreach (var candidate in pieces)
        {
            piece = candidate;
            if (position < candidate.Length)
            {
                break;
            }

            position -= candidate.Length;
        }

        chunk = (int)Math.Min(chunk, piece.Length - position);
        scrubBuffer ??= new byte[CopyChunk];
        var bad = new List<Guid>();
        foreach (var replica in layout.DataComponents.Where(c => c.Stripe == piece.Stripe && c.StripeOffset == piece.StripeOffset && volume.IsReadable(c.ComponentId)))
        {
            try
            {
                await Bounded(ct => volume.Members[replica.ComponentId].ReadAsync(position, scrubBuffer.AsMemory(0, chunk), ct), cancellationToken).ConfigureAwait(false);
            }
            catch (VolumeException e) when (e.Error == VolumeError.ChecksumMismatch)
            {
                bad.Add(replica.ComponentId);
            }
            catch (VolumeException)
            {
                // Unreachable or failing: the I/O path and the heartbeats deal with that, not the scrubber.
            }
        }

        owner.CountScrubbed(chunk, bad.Count);
        if (bad.Count > 0 && bad.Count < volume.Members.Count(m => volume.IsReadable(m.Key) && layout.DataComponents.Any(c => c.ComponentId == m.Key && c.Stripe == piece.Stripe && c.StripeOffset == piece.StripeOffset)))
        {
            // Block by block, so that only the bad blocks are rewritten (a good block of a bad replica stays as it is).
            for (var at = 0; at < chunk; at += BlockGeometry.BlockSize)
            {
                foreach (var id in bad)
                {
                    try
                    {
                        await Bounded(ct => volume.Members[id].ReadAsync(position + at, scrubBuffer.AsMemory(0, BlockGeometry.BlockSize), ct), cancellationToken).ConfigureAwait(false);
                    }
                    catch (VolumeException e) when (e.Error == VolumeError.ChecksumMismatch)
                    {
                        await volume.CopyAsync(piece.Stripe, piece.StripeOffset + position + at, BlockGeometry.BlockSize, [id], scrubBuffer, cancellationToken).ConfigureAwait(false);
                        Repaired(id, BlockGeometry.BlockSize);
                    }
                }
            }
        }

        scrubCursor += chunk;
    }

    /// <summary>A request to one replica outside the I/O path, bounded like the I/O path's (a hung or cut-off host).</summary>
    private static async Task<T> Bounded<T>(Func<CancellationToken, ValueTask<T>> request, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bounded.CancelAfter(timeout ?? TimeSpan.FromSeconds(5));
        try
        {
            return await request(bounded.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new VolumeException(VolumeError.Unavailable, "a replica did not answer in time", e);
        }
    }

    private static Task Bounded(Func<CancellationToken, ValueTask> request, CancellationToken cancellationToken) =>
        Bounded(async ct =>
        {
            await request(ct).ConfigureAwait(false);
            return true;
        }, cancellationToken);

    /// <summary>A client request reached this virtual disk: copies on this host slow to the contended rate.</summary>
    internal void NoteClientRequest() => owner.ClientActivity.Note();
}

/// <summary>
/// The coordinator's face to clients: each request runs on the volume of the current configuration; after a replica
/// failure the coordinator commits the change and the request is retried under the new configuration (writes are
/// idempotent), so a client sees an error only when the object cannot stay accessible.
/// </summary>
internal sealed class CoordinatorVolume(CoordinatedDisk disk) : IBlockVolume
{
    private const int Attempts = 6;

    public string Name => disk.Name;

    public long Size => disk.Current().Size;

    public VolumeCapabilities Capabilities =>
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes |
        VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
        RunAsync(v => v.ReadAsync(offset, buffer, cancellationToken), cancellationToken);

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        RunAsync(v => v.WriteAsync(offset, data, flags, cancellationToken), cancellationToken);

    public ValueTask FlushAsync(CancellationToken cancellationToken) =>
        RunAsync(v => v.FlushAsync(cancellationToken), cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) =>
        RunAsync(v => v.TrimAsync(offset, length, flags, cancellationToken), cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) =>
        RunAsync(v => v.WriteZeroesAsync(offset, length, flags, cancellationToken), cancellationToken);

    public async ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        IReadOnlyList<AllocationExtent> result = [];
        await RunAsync(async v => result = await v.GetAllocationAsync(offset, length, cancellationToken).ConfigureAwait(false), cancellationToken).ConfigureAwait(false);
        return result;
    }

    private async ValueTask RunAsync(Func<ReplicatedVolume, ValueTask> operation, CancellationToken cancellationToken)
    {
        disk.NoteClientRequest();
        for (var attempt = 1; ; attempt++)
        {
            var volume = disk.Current();
            try
            {
                await operation(volume).ConfigureAwait(false);
                return;
            }
            catch (ReplicaFailureException e) when (attempt < Attempts)
            {
                await disk.HandleFailureAsync(e, cancellationToken).ConfigureAwait(false);
            }
            catch (VolumeException e) when (e.Error == VolumeError.ReadOnly && e is not ReplicaFailureException && attempt < Attempts)
            {
                // A read refused as fenced: our metadata is behind the component's.
                await disk.HandleFailureAsync(
                    new ReplicaFailureException(new Dictionary<Guid, VolumeException> { [Guid.Empty] = e }, volume.Generation), cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
