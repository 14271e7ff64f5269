using Converge.Common;

namespace Converge.Storage.Tests;

internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "converge-storage-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A clock that moves only when told to; enough for PeriodicTimer.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly List<ManualTimer> _timers = [];
    private DateTimeOffset _now = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => _now;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        timer.Change(dueTime, period);
        lock (_timers)
        {
            _timers.Add(timer);
        }

        return timer;
    }

    public void Advance(TimeSpan by)
    {
        _now += by;
        ManualTimer[] timers;
        lock (_timers)
        {
            timers = [.. _timers];
        }

        foreach (var timer in timers)
        {
            timer.Fire(_now);
        }
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        private DateTimeOffset? _due;
        private TimeSpan _period;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            _due = dueTime == Timeout.InfiniteTimeSpan ? null : owner._now + dueTime;
            _period = period;
            return true;
        }

        public void Fire(DateTimeOffset now)
        {
            while (_due is { } due && due <= now)
            {
                _due = _period > TimeSpan.Zero && _period != Timeout.InfiniteTimeSpan ? due + _period : null;
                callback(state);
            }
        }

        public void Dispose()
        {
            _due = null;
            lock (owner._timers)
            {
                owner._timers.Remove(this);
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

internal static class Data
{
    public const int Block = BlockGeometry.BlockSize;

    public static StoreDiskOptions Options(
        long logBytes = 8L << 20, TimeProvider? time = null, TimeSpan? flushInterval = null, TimeSpan? maxUnflushedAge = null) => new()
        {
            LogBytes = logBytes,
            Time = time ?? TimeProvider.System,
            BackgroundFlushInterval = flushInterval ?? TimeSpan.Zero,
            MaxUnflushedAge = maxUnflushedAge ?? TimeSpan.FromSeconds(30),
        };

    /// <summary>A self-describing block: its logical block number and version, then bytes derived from both.</summary>
    public static void FillBlock(Span<byte> block, long logical, int version)
    {
        BitConverter.TryWriteBytes(block, logical);
        BitConverter.TryWriteBytes(block[8..], version);
        var seed = (uint)((logical * 2654435761L) ^ (version * 40503L));
        for (var i = 12; i < block.Length; i++)
        {
            seed = (seed * 1103515245) + 12345;
            block[i] = (byte)(seed >> 16);
        }
    }

    public static byte[] Blocks(long firstLogical, int count, int version)
    {
        var data = new byte[count * Block];
        for (var i = 0; i < count; i++)
        {
            FillBlock(data.AsSpan(i * Block, Block), firstLogical + i, version);
        }

        return data;
    }

    /// <summary>The version a block carries if its content is exactly one written version; -1 for zeros; throws on a mix.</summary>
    public static int VersionOf(ReadOnlySpan<byte> block, long logical)
    {
        if (!block.ContainsAnyExcept((byte)0))
        {
            return -1;
        }

        var version = BitConverter.ToInt32(block[8..]);
        var expected = new byte[Block];
        FillBlock(expected, logical, version);
        Assert.True(block.SequenceEqual(expected), $"block {logical} is not a clean version (header says {version})");
        return version;
    }

    /// <summary>Writes raw bytes into a (copied) disk file, as a crash that tore or lost them would leave it.</summary>
    public static void Overwrite(string path, long offset, ReadOnlySpan<byte> data)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        RandomAccess.Write(handle, data, offset);
    }

    /// <summary>Reads blocks [first, first + count) and asserts every one is a clean <paramref name="version"/>.</summary>
    public static async Task AssertVersionsAsync(StoreComponent c, long first, int count, int version)
    {
        var back = new byte[count * Block];
        await c.ReadAsync(first * Block, back, CancellationToken.None);
        for (var i = 0; i < count; i++)
        {
            Assert.Equal(version, VersionOf(back.AsSpan(i * Block, Block), first + i));
        }
    }

    /// <summary>Flushes at random moments (0 to <paramref name="maxGapMs"/> ms apart) until <paramref name="stop"/> fires.</summary>
    public static Task FlushAtRandomAsync(StoreComponent c, int seed, int maxGapMs, CancellationToken stop, CancellationToken ct) => Task.Run(
        async () =>
        {
            var rng = new Random(seed);
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(rng.Next(0, maxGapMs), ct);
                await c.FlushAsync(ct);
            }
        },
        ct);

    public static byte[] Random(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
