namespace Converge.Host.Cluster;

/// <summary>What kind of copy a <see cref="ResyncProgress"/> is.</summary>
public enum ResyncKind
{
    /// <summary>A returning component gets the regions it missed (delta, from the dirty-region map).</summary>
    Resync,

    /// <summary>A replacement component on another host or disk is filled from a surviving replica.</summary>
    Rebuild,

    /// <summary>A new coordinator makes replicas agree on the regions that had writes in flight.</summary>
    Reconcile,

    /// <summary>A bad block found by a read or the scrubber is rewritten from a good replica.</summary>
    Repair,

    /// <summary>The new copy of a make-before-break move (decommission, rebalance, evacuation) is filled while the old one serves.</summary>
    Move,
}

/// <summary>One copy as operators see it: bytes left, rate, estimated time to finish.</summary>
public sealed record ResyncSnapshot(
    string VirtualDiskId,
    string VirtualDiskName,
    Guid ComponentId,
    string TargetHostId,
    ResyncKind Kind,
    long TotalBytes,
    long DoneBytes,
    double BytesPerSecond,
    TimeSpan? EstimatedTimeLeft,
    DateTimeOffset StartedAt)
{
    public long RemainingBytes => Math.Max(0, TotalBytes - DoneBytes);
}

/// <summary>
/// The copies (resync, rebuild, reconcile, repair) this host is running, and what they moved in total. The
/// coordinator of a virtual disk runs its copies, so each host reports its own; the cluster view merges them.
/// </summary>
public sealed class ResyncTracker(TimeProvider time)
{
    private readonly Lock gate = new();
    private readonly List<ResyncProgress> running = [];
    private long completedBytes;
    private long completedCopies;

    /// <summary>Bytes copied by every copy this host ran since it started (finished or not).</summary>
    public long BytesCopied
    {
        get
        {
            lock (gate)
            {
                return completedBytes + running.Sum(p => p.DoneBytes);
            }
        }
    }

    /// <summary>Copies that finished since this host started.</summary>
    public long CopiesCompleted => Interlocked.Read(ref completedCopies);

    public ResyncProgress Begin(string virtualDiskId, string virtualDiskName, Guid componentId, string targetHostId, ResyncKind kind, long totalBytes)
    {
        var progress = new ResyncProgress(this, virtualDiskId, virtualDiskName, componentId, targetHostId, kind, totalBytes, time);
        lock (gate)
        {
            running.Add(progress);
        }

        return progress;
    }

    public IReadOnlyList<ResyncSnapshot> Snapshot()
    {
        lock (gate)
        {
            return [.. running.Select(p => p.Snapshot())];
        }
    }

    internal void End(ResyncProgress progress, bool completed)
    {
        lock (gate)
        {
            if (running.Remove(progress))
            {
                completedBytes += progress.DoneBytes;
                if (completed)
                {
                    completedCopies++;
                }
            }
        }
    }
}

/// <summary>A running copy. Dispose ends it (as failed unless <see cref="Complete"/> was called).</summary>
public sealed class ResyncProgress : IDisposable
{
    private readonly ResyncTracker owner;
    private readonly TimeProvider time;
    private readonly long startedTimestamp;
    private long doneBytes;
    private long totalBytes;
    private int ended;

    internal ResyncProgress(
        ResyncTracker owner, string virtualDiskId, string virtualDiskName, Guid componentId, string targetHostId, ResyncKind kind, long totalBytes, TimeProvider time)
    {
        this.owner = owner;
        this.time = time;
        VirtualDiskId = virtualDiskId;
        VirtualDiskName = virtualDiskName;
        ComponentId = componentId;
        TargetHostId = targetHostId;
        Kind = kind;
        this.totalBytes = totalBytes;
        StartedAt = time.GetUtcNow();
        startedTimestamp = time.GetTimestamp();
    }

    public string VirtualDiskId { get; }

    public string VirtualDiskName { get; }

    public Guid ComponentId { get; }

    public string TargetHostId { get; }

    public ResyncKind Kind { get; }

    public DateTimeOffset StartedAt { get; }

    public long DoneBytes => Interlocked.Read(ref doneBytes);

    public long TotalBytes => Interlocked.Read(ref totalBytes);

    public void Advance(long bytes) => Interlocked.Add(ref doneBytes, bytes);

    /// <summary>More work appeared (e.g. regions dirtied while the copy ran).</summary>
    public void AddWork(long bytes) => Interlocked.Add(ref totalBytes, bytes);

    public void Complete() => End(completed: true);

    public void Dispose() => End(completed: false);

    public ResyncSnapshot Snapshot()
    {
        var done = DoneBytes;
        var total = TotalBytes;
        var seconds = time.GetElapsedTime(startedTimestamp).TotalSeconds;
        var rate = seconds > 0 ? done / seconds : 0;
        TimeSpan? eta = rate > 0 ? TimeSpan.FromSeconds(Math.Max(0, total - done) / rate) : null;
        return new ResyncSnapshot(VirtualDiskId, VirtualDiskName, ComponentId, TargetHostId, Kind, total, done, rate, eta, StartedAt);
    }

    private void End(bool completed)
    {
        if (Interlocked.Exchange(ref ended, 1) == 0)
        {
            owner.End(this, completed);
        }
    }
}
