using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Converge.Common;
using Converge.Management.Contracts;
using Converge.Nbd;
using Prometheus;

namespace Converge.Host.Management;

/// <summary>
/// Counts what this host's NBD front end serves, per virtual disk: requests, bytes and latency, as Prometheus
/// series and as per-second samples of the last <see cref="IoMeters.WindowSeconds"/> seconds for the UI's charts.
/// A decorator over the export catalog: neither the coordinator nor the NBD server knows about it.
/// </summary>
internal sealed class MeteredExportCatalog(INbdExportCatalog inner, IoMeters meters) : INbdExportCatalog
{
    public IReadOnlyList<NbdExportInfo> ListExports() => inner.ListExports();

    public async ValueTask<IBlockVolume?> FindExportAsync(string name, CancellationToken cancellationToken)
    {
        var volume = await inner.FindExportAsync(name, cancellationToken).ConfigureAwait(false);
        return volume is null ? null : new MeteredVolume(volume, meters.For(volume.Name));
    }
}

/// <summary>The meters of every virtual disk this host served since it started.</summary>
internal sealed class IoMeters
{
    public const int WindowSeconds = 300;

    private static readonly string[] Labels = ["vdisk", "op"];
    private readonly ConcurrentDictionary<string, VdiskMeter> meters = new(StringComparer.Ordinal);
    private readonly Counter ops;
    private readonly Counter bytes;
    private readonly Counter errors;
    private readonly Histogram latency;

    public IoMeters(CollectorRegistry registry, TimeProvider time)
    {
        Time = time;
        var factory = Metrics.WithCustomRegistry(registry);
        ops = factory.CreateCounter("converge_vdisk_io_ops_total", "NBD requests served by this host, per virtual disk and operation", Labels);
        bytes = factory.CreateCounter("converge_vdisk_io_bytes_total", "Bytes read or written through this host's NBD server, per virtual disk", Labels);
        errors = factory.CreateCounter("converge_vdisk_io_errors_total", "NBD requests that failed, per virtual disk and operation", Labels);
        latency = factory.CreateHistogram(
            "converge_vdisk_io_latency_seconds",
            "Latency of NBD requests served by this host, per virtual disk and operation",
            new HistogramConfiguration
            {
                LabelNames = Labels,
                Buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
            });
    }

    public TimeProvider Time { get; }

    public VdiskMeter For(string vdisk) => meters.GetOrAdd(vdisk, name => new VdiskMeter(name, this));

    public IReadOnlyCollection<VdiskMeter> All => [.. meters.Values];

    internal (Counter.Child Ops, Counter.Child Bytes, Counter.Child Errors, Histogram.Child Latency) Children(string vdisk, string op) =>
        (ops.WithLabels(vdisk, op), bytes.WithLabels(vdisk, op), errors.WithLabels(vdisk, op), latency.WithLabels(vdisk, op));
}

internal enum IoOp
{
    Read,
    Write,
    Flush,
    Trim,
    Zero,
    BlockStatus,
}

/// <summary>One virtual disk's counters on this host: Prometheus children plus a ring of one-second buckets.</summary>
internal sealed class VdiskMeter
{
    private static readonly string[] OpNames = ["read", "write", "flush", "trim", "write_zeroes", "block_status"];
    private readonly (Counter.Child Ops, Counter.Child Bytes, Counter.Child Errors, Histogram.Child Latency)[] children;
    private readonly Bucket[] buckets = new Bucket[IoMeters.WindowSeconds];
    private readonly TimeProvider time;
    private readonly Lock roll = new();

    public VdiskMeter(string name, IoMeters owner)
    {
        Name = name;
        time = owner.Time;
        children = [.. OpNames.Select(op => owner.Children(name, op))];
        for (var i = 0; i < buckets.Length; i++)
        {
            buckets[i] = new Bucket();
        }
    }

    public string Name { get; }

    public void Record(IoOp op, long byteCount, long startTimestamp, bool failed)
    {
        var elapsed = Stopwatch.GetElapsedTime(startTimestamp);
        var c = children[(int)op];
        c.Ops.Inc();
        c.Latency.Observe(elapsed.TotalSeconds);
        if (byteCount > 0)
        {
            c.Bytes.Inc(byteCount);
        }

        if (failed)
        {
            c.Errors.Inc();
        }

        var second = time.GetUtcNow().ToUnixTimeSeconds();
        var bucket = buckets[second % buckets.Length];
        if (Volatile.Read(ref bucket.Second) != second)
        {
            lock (roll)
            {
                if (bucket.Second != second)
                {
                    bucket.Reset(second);
                }
            }
        }

        switch (op)
        {
            case IoOp.Read:
                Interlocked.Increment(ref bucket.ReadOps);
                Interlocked.Add(ref bucket.ReadBytes, byteCount);
                break;
            case IoOp.Write:
                Interlocked.Increment(ref bucket.WriteOps);
                Interlocked.Add(ref bucket.WriteBytes, byteCount);
                break;
            default:
                Interlocked.Increment(ref bucket.OtherOps);
                break;
        }

        Interlocked.Add(ref bucket.LatencyTicks, elapsed.Ticks);
    }

    /// <summary>Complete seconds of the last <paramref name="seconds"/> (the current one is still filling), oldest first; idle seconds are zeros.</summary>
    public IReadOnlyList<PerfSample> Samples(int seconds)
    {
        var now = time.GetUtcNow().ToUnixTimeSeconds();
        seconds = Math.Clamp(seconds, 1, buckets.Length - 1);
        var result = new List<PerfSample>(seconds);
        for (var t = now - seconds; t < now; t++)
        {
            var b = buckets[t % buckets.Length];
            if (Volatile.Read(ref b.Second) != t)
            {
                result.Add(new PerfSample { Time = t });
                continue;
            }

            var ops = b.ReadOps + b.WriteOps + b.OtherOps;
            result.Add(new PerfSample
            {
                Time = t,
                ReadIops = b.ReadOps,
                WriteIops = b.WriteOps,
                OtherIops = b.OtherOps,
                ReadBytesPerSecond = b.ReadBytes,
                WriteBytesPerSecond = b.WriteBytes,
                LatencyMs = ops == 0 ? 0 : TimeSpan.FromTicks(b.LatencyTicks).TotalMilliseconds / ops,
            });
        }

        return result;
    }

    private sealed class Bucket
    {
        public long Second = -1;
        public long ReadOps;
        public long WriteOps;
        public long OtherOps;
        public long ReadBytes;
        public long WriteBytes;
        public long LatencyTicks;

        public void Reset(long second)
        {
            ReadOps = WriteOps = OtherOps = ReadBytes = WriteBytes = LatencyTicks = 0;
            Volatile.Write(ref Second, second);
        }
    }
}

/// <summary>Times and counts every request to the volume it wraps.</summary>
internal sealed class MeteredVolume(IBlockVolume inner, VdiskMeter meter) : IBlockVolume
{
    public string Name => inner.Name;

    public long Size => inner.Size;

    public VolumeCapabilities Capabilities => inner.Capabilities;

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var failed = true;
        try
        {
            await inner.ReadAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
            failed = false;
        }
        finally
        {
            meter.Record(IoOp.Read, buffer.Length, start, failed);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var failed = true;
        try
        {
            await inner.WriteAsync(offset, data, flags, cancellationToken).ConfigureAwait(false);
            failed = false;
        }
        finally
        {
            meter.Record(IoOp.Write, data.Length, start, failed);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var failed = true;
        try
        {
            await inner.FlushAsync(cancellationToken).ConfigureAwait(false);
            failed = false;
        }
        finally
        {
            meter.Record(IoOp.Flush, 0, start, failed);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var failed = true;
        try
        {
            await inner.TrimAsync(offset, length, flags, cancellationToken).ConfigureAwait(false);
            failed = false;
        }
        finally
        {
            meter.Record(IoOp.Trim, 0, start, failed);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var failed = true;
        try
        {
            await inner.WriteZeroesAsync(offset, length, flags, cancellationToken).ConfigureAwait(false);
            failed = false;
        }
        finally
        {
            meter.Record(IoOp.Zero, 0, start, failed);
        }
    }

    public async ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        var start = Stopwatch.GetTimestamp();
        var failed = true;
        try
        {
            var result = await inner.GetAllocationAsync(offset, length, cancellationToken).ConfigureAwait(false);
            failed = false;
            return result;
        }
        finally
        {
            meter.Record(IoOp.BlockStatus, 0, start, failed);
        }
    }
}
