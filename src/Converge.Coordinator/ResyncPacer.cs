namespace Converge.Coordinator;

/// <summary>
/// When a host last served a client request. Resync, rebuild and move copies pace themselves by it
/// (<see cref="ResyncPacer"/>): slower while clients are busy, faster on a quiet host.
/// </summary>
public sealed class ClientActivity(TimeProvider time)
{
    // Requests closer together than this do not rewrite the shared timestamp: one store per 10 ms, not per request.
    private static readonly TimeSpan Resolution = TimeSpan.FromMilliseconds(10);

    private long lastTimestamp;

    public TimeProvider Time => time;

    /// <summary>Called for each client request.</summary>
    public void Note()
    {
        var now = time.GetTimestamp();
        var last = Volatile.Read(ref lastTimestamp);
        if (last == 0 || time.GetElapsedTime(last, now) >= Resolution)
        {
            Volatile.Write(ref lastTimestamp, now);
        }
    }

    /// <summary>True when a client request came within <paramref name="period"/> before <paramref name="now"/>.</summary>
    public bool Within(TimeSpan period, long now)
    {
        var last = Volatile.Read(ref lastTimestamp);
        return last != 0 && time.GetElapsedTime(last, now) < period + Resolution;
    }
}

/// <summary>
/// Paces one copy (resync, rebuild or move) chunk by chunk. While the host serves clients (a request within
/// <see cref="QuietPeriod"/>) the copy runs at most at the contended rate, so client I/O keeps most of the CPU and
/// disks; on a quiet host it runs at the idle rate, so redundancy comes back sooner. A rate of 0 means unlimited.
/// </summary>
public sealed class ResyncPacer
{
    /// <summary>No client request for this long: the host counts as quiet.</summary>
    public static readonly TimeSpan QuietPeriod = TimeSpan.FromSeconds(1);

    // A copy that fell behind its pace (a slow chunk, a quiet spell) may catch up by this much and no more, so a
    // switch from quiet to busy throttles at once instead of after a burst.
    private static readonly TimeSpan CatchUp = TimeSpan.FromMilliseconds(100);

    private readonly ClientActivity activity;
    private readonly long contendedBytesPerSecond;
    private readonly long idleBytesPerSecond;
    private long dueTimestamp;

    public ResyncPacer(ClientActivity activity, long contendedBytesPerSecond, long idleBytesPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(contendedBytesPerSecond);
        ArgumentOutOfRangeException.ThrowIfNegative(idleBytesPerSecond);
        this.activity = activity;
        this.contendedBytesPerSecond = contendedBytesPerSecond;
        this.idleBytesPerSecond = idleBytesPerSecond;
    }

    /// <summary>Copies paced while clients were busy, since this pacer started.</summary>
    public long ContendedBytes { get; private set; }

    /// <summary>Waits until the rate in force allows <paramref name="bytes"/> more to be copied (called once per piece).</summary>
    public Task PaceAsync(long bytes, CancellationToken cancellationToken)
    {
        var time = activity.Time;
        var now = time.GetTimestamp();
        var busy = activity.Within(QuietPeriod, now);
        var rate = busy ? contendedBytesPerSecond : idleBytesPerSecond;
        if (busy)
        {
            ContendedBytes += bytes;
        }

        if (rate == 0)
        {
            dueTimestamp = now;
            return Task.CompletedTask;
        }

        var frequency = time.TimestampFrequency;
        var earliest = now - (long)(CatchUp.TotalSeconds * frequency);
        if (dueTimestamp < earliest)
        {
            dueTimestamp = earliest;
        }

        dueTimestamp += (long)((double)bytes / rate * frequency);
        return dueTimestamp > now
            ? Task.Delay(time.GetElapsedTime(now, dueTimestamp), time, cancellationToken)
            : Task.CompletedTask;
    }
}
