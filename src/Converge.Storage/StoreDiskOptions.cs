using Microsoft.Extensions.Logging;

namespace Converge.Storage;

public sealed class StoreDiskOptions
{
    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>
    /// How often the background flusher looks at the disk; zero or infinite disables it. It flushes at once when
    /// superseded blocks waiting for a flush to be recycled reach a quarter of the data region or free space runs low,
    /// and otherwise only once unflushed writes are <see cref="MaxUnflushedAge"/> old. Client durability never
    /// depends on it: FLUSH and FUA flush before they are acknowledged.
    /// </summary>
    public TimeSpan BackgroundFlushInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Longest time writes stay unflushed when nothing else asks for a flush (bounds recovery work after a crash and
    /// keeps the media recent, like the kernel's dirty-page expiry). Flushing more often than needed costs clients
    /// throughput: every fdatasync forces all dirty data of the disk to media.
    /// </summary>
    public TimeSpan MaxUnflushedAge { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Size of the metadata log; used by <see cref="StoreDisk.FormatAsync"/> only (the layout is stored on disk).</summary>
    public long LogBytes { get; init; } = 64L << 20;

    /// <summary>
    /// Rewrite blocks in place when their current physical block was allocated after the last flush started
    /// (docs/local-store.md, "In-place rewrites"); otherwise every write is redirected. On by default;
    /// <c>CONVERGE_STORE_REWRITE_IN_PLACE=0</c> in the environment turns it off (for A/B benchmarks).
    /// </summary>
    public bool RewriteInPlace { get; init; } = Environment.GetEnvironmentVariable("CONVERGE_STORE_REWRITE_IN_PLACE") != "0";

    /// <summary>
    /// Large reads that find their blocks scattered move them into one contiguous run (docs/local-store.md,
    /// "Defragmenting reads"). On by default; <c>CONVERGE_STORE_DEFRAG=0</c> in the environment turns it off (for A/B
    /// benchmarks). Off whenever <see cref="RewriteInPlace"/> is: a relocation relies on the in-place admission.
    /// </summary>
    public bool DefragmentOnRead { get; init; } = Environment.GetEnvironmentVariable("CONVERGE_STORE_DEFRAG") != "0";

    public ILogger? Logger { get; init; }

    /// <summary>
    /// Asked while a disk is opened, for every block whose newest write was lost in a crash (its record reached the
    /// media, its data did not, so the block kept older content or none): return true to replace the block with what
    /// the handler left in the span, which holds the older content (zeros if none). Replacements are durable before
    /// the disk opens. For data whose lost bits must err towards set, such as change maps; null keeps older content.
    /// </summary>
    public LostWriteHandler? OnLostWrite { get; init; }
}

/// <summary>See <see cref="StoreDiskOptions.OnLostWrite"/>; called during recovery, so it must not touch the disk.</summary>
public delegate bool LostWriteHandler(Guid componentId, string componentName, long logicalBlock, Span<byte> content);

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
