using Microsoft.Extensions.Logging;

namespace Converge.Storage;

public sealed class StoreDiskOptions
{
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>How often unflushed writes are flushed in the background (recycles space for clients that never flush). Zero or infinite disables it.</summary>
    public TimeSpan BackgroundFlushInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Size of the metadata log; used by <see cref="StoreDisk.FormatAsync"/> only (the layout is stored on disk).</summary>
    public long LogBytes { get; init; } = 64L << 20;

    public ILogger? Logger { get; init; }
}

public enum DiskState
{
    Online,
    Missing,
    Corrupt,
    Failed,
}

/// <summary>A disk could not be opened; it is reported, never recreated.</summary>
public sealed class DiskOpenException : Exception
{
    public DiskOpenException(DiskState state, string diskPath, string message, Exception? inner = null)
        : base(message, inner)
    {
        State = state;
        DiskPath = diskPath;
    }

    public DiskState State { get; }

    public string DiskPath { get; }
}
