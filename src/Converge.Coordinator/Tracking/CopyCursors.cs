using System.Collections.Concurrent;

namespace Converge.Coordinator.Tracking;

/// <summary>
/// The copies in progress into components that are not yet readable (rebuild, resync, move targets), each as the
/// ranges it will still copy. A client write that lies wholly inside a range the copy has not reached yet need not
/// go to the target: the copy reads that range from an active replica later, under the range lock, and takes the
/// write's data with it. Skipping those writes spares the target (and the link to it) work the copy redoes anyway,
/// which is what the client loses IOPS to during a rebuild (bench/RESULTS.md). Shared by the successive volumes of
/// one coordinator, like <see cref="RangeLock"/>.
/// </summary>
/// <remarks>
/// Safe because of two orders: a copy moves its cursor past a chunk before it releases the chunk's exclusive range
/// lock, and a write asks <see cref="TryCarry"/> only while holding its own (shared) range lock. So a write sees a
/// chunk as ahead only if the chunk's copy has not started, and that copy then waits for the write and reads its
/// data. Writes that straddle the cursor or a range's edge go to the target as before. The skipped write still marks
/// the active replicas dirty where a sibling is missing, so a copy that fails part way is redone from complete
/// information (a full copy again, or the dirty bits).
/// </remarks>
public sealed class CopyCursors
{
    private readonly ConcurrentDictionary<Guid, Cursor> copies = new();

    // ConcurrentDictionary.IsEmpty takes every lock of the dictionary when it is empty, which is the usual case on
    // the write path; a count of registered copies answers with one read.
    private int registered;

    /// <summary>Whether any copy is registered: the write path's fast check.</summary>
    public bool IsEmpty => Volatile.Read(ref registered) == 0;

    /// <summary>
    /// Registers a copy into <paramref name="target"/> that will copy <paramref name="ranges"/> (sorted, disjoint, in
    /// component offsets) in ascending order. Returns null when a copy into that target is already registered: then
    /// this one skips nothing. Dispose the cursor when the copy ends, however it ends.
    /// </summary>
    public Cursor? Begin(Guid target, IReadOnlyList<ChangedRange> ranges)
    {
        for (var i = 1; i < ranges.Count; i++)
        {
            if (ranges[i].Offset < ranges[i - 1].End)
            {
                throw new ArgumentException("copy ranges must be sorted and disjoint", nameof(ranges));
            }
        }

        var cursor = new Cursor(this, target, [.. ranges]);
        if (!copies.TryAdd(target, cursor))
        {
            return null;
        }

        Interlocked.Increment(ref registered);
        return cursor;
    }

    /// <summary>
    /// Leaves the write of <paramref name="length"/> bytes at <paramref name="offset"/> (component offsets) into
    /// <paramref name="target"/> to its copy when it lies wholly inside a range the copy has not reached: true means the
    /// caller skips the target (counted in <see cref="Cursor.Carried"/>).
    /// </summary>
    public bool TryCarry(Guid target, long offset, long length) =>
        copies.TryGetValue(target, out var cursor) && cursor.TryCarry(offset, length);

    /// <summary>One registered copy; <see cref="Advance"/> is called with the chunk's range lock still held.</summary>
    public sealed class Cursor : IDisposable
    {
        private readonly CopyCursors owner;
        private readonly Guid target;
        private readonly ChangedRange[] ranges;
        private long copiedTo;
        private long carried;

        internal Cursor(CopyCursors owner, Guid target, ChangedRange[] ranges)
        {
            this.owner = owner;
            this.target = target;
            this.ranges = ranges;
            copiedTo = ranges.Length == 0 ? long.MaxValue : ranges[0].Offset;
        }

        /// <summary>Client writes (and trims) that skipped the target because this copy carries them.</summary>
        public long Carried => Interlocked.Read(ref carried);

        /// <summary>Everything below <paramref name="end"/> is copied (or will be written to the target from now on).</summary>
        public void Advance(long end)
        {
            if (end > Volatile.Read(ref copiedTo))
            {
                Volatile.Write(ref copiedTo, end);
            }
        }

        internal bool TryCarry(long offset, long length)
        {
            if (offset < Volatile.Read(ref copiedTo) || length <= 0)
            {
                return false;
            }

            // The last range starting at or before the write must also hold its end.
            int lo = 0, hi = ranges.Length - 1, found = -1;
            while (lo <= hi)
            {
                var mid = (lo + hi) >>> 1;
                if (ranges[mid].Offset <= offset)
                {
                    found = mid;
                    lo = mid + 1;
                }
                else
                {
                    hi = mid - 1;
                }
            }

            if (found < 0 || offset + length > ranges[found].End)
            {
                return false;
            }

            Interlocked.Increment(ref carried);
            return true;
        }

        public void Dispose()
        {
            if (owner.copies.TryRemove(new KeyValuePair<Guid, Cursor>(target, this)))
            {
                Interlocked.Decrement(ref owner.registered);
            }
        }
    }
}
