using Converge.Common;

namespace Converge.Coordinator.Tracking;

/// <summary>What a change map records about a component's blocks.</summary>
[Flags]
public enum ChangeKinds : byte
{
    None = 0,

    /// <summary>Write intent, slot 0: a write may be in flight in this 1 MiB region (coarse, for failover reconciliation).</summary>
    Intent0 = 1,

    /// <summary>Write intent, slot 1: the coordinator alternates slots so it can clear one while writes mark the other.</summary>
    Intent1 = 2,

    /// <summary>Dirty: this 4 KiB block was written while a sibling replica was not active (for delta resync).</summary>
    Dirty = 4,

    Intents = Intent0 | Intent1,
    All = Intent0 | Intent1 | Dirty,
}

/// <summary>A range of a component's address space recorded in its change map.</summary>
public readonly record struct ChangedRange(long Offset, long Length)
{
    public long End => Offset + Length;
}

/// <summary>
/// The change map of one data component, kept beside it on the same disk (a hidden store component) so it survives
/// the coordinator and is flushed by the same fdatasync as the data. Two coarse write-intent bitmaps (1 bit per
/// MiB) let a new coordinator reconcile only the regions that had writes in flight (DESIGN.md, "Coordinator
/// failover"); a fine dirty bitmap (1 bit per 4 KiB block) records what an absent sibling missed, so it is resynced
/// by delta. A bit is persisted before the write it covers is issued, so a crash can leave extra bits, never
/// missing ones. Only the component's host writes the map; coordinators ask it to mark, read and clear bits.
/// </summary>
public sealed class ChangeMap
{
    public const int PageBytes = 4096;
    public const long IntentGranule = 1 << 20;
    public const long DirtyGranule = BlockGeometry.BlockSize;

    /// <summary>Largest component a map covers: 256 GiB (the placement engine's component bound).</summary>
    public const long MaxComponentBytes = 256L << 30;

    private const long IntentSlotBytes = MaxComponentBytes / IntentGranule / 8;
    private const long DirtyStart = 2 * IntentSlotBytes;

    /// <summary>Size of the hidden store component that holds a map (thin: only touched pages take space).</summary>
    public const long MapBytes = DirtyStart + (MaxComponentBytes / DirtyGranule / 8);

    private readonly IBlockVolume store;
    private readonly long componentBytes;
    private readonly Lock gate = new();
    private readonly Dictionary<long, Page> pages = [];
    private readonly SemaphoreSlim persist = new(1, 1);

    private const string StoreNameSuffix = ".map";

    /// <summary>The store id of a data component's map: derived, so it needs no metadata of its own.</summary>
    public static Guid StoreIdFor(Guid componentId)
    {
        Span<byte> bytes = stackalloc byte[16];
        componentId.TryWriteBytes(bytes);
        bytes[15] ^= 0xC3;
        bytes[14] ^= 0x5A;
        return new Guid(bytes);
    }

    /// <summary>The store name of a data component's map; a data component's store name ends with its id.</summary>
    public static string StoreNameFor(string componentName) => componentName + StoreNameSuffix;

    /// <summary>
    /// Whether a store component is a change map, and of which data component: its name is that component's name
    /// (ending with its id, 32 hex digits) plus ".map", and its id is derived from that id, so a virtual disk an
    /// operator happens to name like one is not mistaken for one.
    /// </summary>
    public static bool IsMapStore(Guid storeId, string storeName, out Guid componentId)
    {
        componentId = Guid.Empty;
        const int idLength = 32;
        if (!storeName.EndsWith(StoreNameSuffix, StringComparison.Ordinal) || storeName.Length < idLength + StoreNameSuffix.Length
            || !Guid.TryParseExact(storeName.AsSpan(storeName.Length - StoreNameSuffix.Length - idLength, idLength), "N", out var owner)
            || StoreIdFor(owner) != storeId)
        {
            return false;
        }

        componentId = owner;
        return true;
    }

    /// <summary>
    /// For the store's <c>OnLostWrite</c>: a map page whose newest write a crash lost may have lost bits set for data
    /// writes that did survive, and a missing bit lets replicas differ unnoticed. So every bit of such a page is set
    /// again: the next coordinator reconciles, and the next resync copies, all the page covers (extra bits only cost
    /// copying). Any other store component keeps its older content.
    /// </summary>
    public static bool ReplaceLostWrite(Guid storeId, string storeName, long logicalBlock, Span<byte> content)
    {
        if (!IsMapStore(storeId, storeName, out _))
        {
            return false;
        }

        content.Fill(0xFF);
        return true;
    }

    public ChangeMap(IBlockVolume store, long componentBytes)
    {
        if (componentBytes > MaxComponentBytes || store.Size < MapBytes)
        {
            throw new VolumeException(VolumeError.OutOfRange, $"a change map covers components up to {ByteSize.Format(MaxComponentBytes)}");
        }

        this.store = store;
        this.componentBytes = componentBytes;
    }

    /// <summary>Sets the bits of <paramref name="kinds"/> for a range and returns once they are persisted.</summary>
    public async ValueTask MarkAsync(long offset, long length, ChangeKinds kinds, bool durable, CancellationToken cancellationToken)
    {
        if (kinds == ChangeKinds.None || length <= 0)
        {
            return;
        }

        await LoadAsync(offset, length, kinds, cancellationToken).ConfigureAwait(false);
        List<long>? toPersist = null;
        lock (gate)
        {
            foreach (var (kind, first, last) in Bits(offset, length, kinds))
            {
                for (var bit = first; bit <= last; bit++)
                {
                    var pageIndex = PageOf(kind, bit);
                    var page = pages[pageIndex];
                    var within = BitWithinPage(kind, bit);
                    ref var b = ref page.Bits[within >> 3];
                    var mask = (byte)(1 << (int)(within & 7));
                    if ((b & mask) == 0)
                    {
                        b |= mask;
                        page.Version++;
                    }

                    // Set earlier but not yet written: wait for that write too, or a crash could lose the bit.
                    if (page.Persisted < page.Version && !(toPersist ??= []).Contains(pageIndex))
                    {
                        toPersist.Add(pageIndex);
                    }
                }
            }
        }

        if (toPersist is null)
        {
            return;
        }

        await PersistAsync(toPersist, durable, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The ranges whose bits of any of <paramref name="kinds"/> are set, merged, in component offsets.</summary>
    public async ValueTask<List<ChangedRange>> ReadAsync(ChangeKinds kinds, CancellationToken cancellationToken)
    {
        await LoadAsync(0, componentBytes, kinds, cancellationToken).ConfigureAwait(false);
        var ranges = new List<ChangedRange>();
        lock (gate)
        {
            foreach (var (kind, first, last) in Bits(0, componentBytes, kinds))
            {
                var granule = kind == ChangeKinds.Dirty ? DirtyGranule : IntentGranule;
                for (var bit = first; bit <= last; bit++)
                {
                    var page = pages[PageOf(kind, bit)];
                    var within = BitWithinPage(kind, bit);
                    if (within % 8 == 0 && page.Bits[within >> 3] == 0 && bit + 7 <= last)
                    {
                        bit += 7;
                        continue;
                    }

                    if ((page.Bits[within >> 3] & (1 << (int)(within & 7))) != 0)
                    {
                        var start = bit * granule;
                        ranges.Add(new ChangedRange(start, Math.Min(granule, componentBytes - start)));
                    }
                }
            }
        }

        return Merge(ranges);
    }

    /// <summary>Clears the bits of <paramref name="kinds"/> that lie wholly inside a range, and persists that.</summary>
    public async ValueTask ClearAsync(long offset, long length, ChangeKinds kinds, CancellationToken cancellationToken)
    {
        length = Math.Min(length, componentBytes - offset);
        if (kinds == ChangeKinds.None || length <= 0)
        {
            return;
        }

        await LoadAsync(offset, length, kinds, cancellationToken).ConfigureAwait(false);
        var changed = new List<long>();
        lock (gate)
        {
            foreach (var kind in Kinds(kinds))
            {
                var granule = kind == ChangeKinds.Dirty ? DirtyGranule : IntentGranule;

                // Only whole granules: a partly covered granule may still hold changes outside the range.
                var first = (offset + granule - 1) / granule;
                var lastExclusive = offset + length == componentBytes ? (componentBytes + granule - 1) / granule : (offset + length) / granule;
                for (var bit = first; bit < lastExclusive; bit++)
                {
                    var pageIndex = PageOf(kind, bit);
                    var page = pages[pageIndex];
                    var within = BitWithinPage(kind, bit);
                    ref var b = ref page.Bits[within >> 3];
                    var mask = (byte)(1 << (int)(within & 7));
                    if ((b & mask) != 0)
                    {
                        b &= (byte)~mask;
                        page.Version++;
                        if (!changed.Contains(pageIndex))
                        {
                            changed.Add(pageIndex);
                        }
                    }
                }
            }
        }

        if (changed.Count > 0)
        {
            await PersistAsync(changed, durable: false, cancellationToken).ConfigureAwait(false);
        }
    }

    private async ValueTask PersistAsync(List<long> pageIndexes, bool durable, CancellationToken cancellationToken)
    {
        // One writer at a time: marks that arrive while a page is being written are covered by the next write of it,
        // so concurrent writers share page writes (a group commit for map pages).
        await persist.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var wrote = false;
            var buffer = new byte[PageBytes];
            foreach (var index in pageIndexes)
            {
                long version;
                lock (gate)
                {
                    var page = pages[index];
                    if (page.Persisted >= page.Version)
                    {
                        continue;
                    }

                    version = page.Version;
                    page.Bits.CopyTo(buffer, 0);
                }

                await store.WriteAsync(index * PageBytes, buffer, WriteFlags.None, cancellationToken).ConfigureAwait(false);
                wrote = true;
                lock (gate)
                {
                    var page = pages[index];
                    page.Persisted = Math.Max(page.Persisted, version);
                }
            }

            if (wrote && durable)
            {
                await store.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            persist.Release();
        }
    }

    private async ValueTask LoadAsync(long offset, long length, ChangeKinds kinds, CancellationToken cancellationToken)
    {
        List<long>? missing = null;
        lock (gate)
        {
            foreach (var (kind, first, last) in Bits(offset, length, kinds))
            {
                for (var page = PageOf(kind, first); page <= PageOf(kind, last); page++)
                {
                    if (!pages.ContainsKey(page))
                    {
                        (missing ??= []).Add(page);
                    }
                }
            }
        }

        if (missing is null)
        {
            return;
        }

        foreach (var index in missing)
        {
            var bits = new byte[PageBytes];
            await store.ReadAsync(index * PageBytes, bits, cancellationToken).ConfigureAwait(false);
            lock (gate)
            {
                pages.TryAdd(index, new Page(bits));
            }
        }
    }

    private IEnumerable<(ChangeKinds Kind, long FirstBit, long LastBit)> Bits(long offset, long length, ChangeKinds kinds)
    {
        var end = Math.Min(offset + length, componentBytes);
        foreach (var kind in Kinds(kinds))
        {
            var granule = kind == ChangeKinds.Dirty ? DirtyGranule : IntentGranule;
            if (end > offset)
            {
                yield return (kind, offset / granule, (end - 1) / granule);
            }
        }
    }

    private static IEnumerable<ChangeKinds> Kinds(ChangeKinds kinds)
    {
        if (kinds.HasFlag(ChangeKinds.Intent0))
        {
            yield return ChangeKinds.Intent0;
        }

        if (kinds.HasFlag(ChangeKinds.Intent1))
        {
            yield return ChangeKinds.Intent1;
        }

        if (kinds.HasFlag(ChangeKinds.Dirty))
        {
            yield return ChangeKinds.Dirty;
        }
    }

    private static long RegionStart(ChangeKinds kind) => kind switch
    {
        ChangeKinds.Intent0 => 0,
        ChangeKinds.Intent1 => IntentSlotBytes,
        _ => DirtyStart,
    };

    private static long PageOf(ChangeKinds kind, long bit) => (RegionStart(kind) + (bit >> 3)) / PageBytes;

    private static long BitWithinPage(ChangeKinds kind, long bit) => (((RegionStart(kind) + (bit >> 3)) % PageBytes) << 3) | (bit & 7);

    public static List<ChangedRange> Merge(List<ChangedRange> ranges)
    {
        ranges.Sort((a, b) => a.Offset.CompareTo(b.Offset));
        var merged = new List<ChangedRange>(ranges.Count);
        foreach (var range in ranges)
        {
            if (merged.Count > 0 && merged[^1].End >= range.Offset)
            {
                var last = merged[^1];
                merged[^1] = new ChangedRange(last.Offset, Math.Max(last.End, range.End) - last.Offset);
            }
            else
            {
                merged.Add(range);
            }
        }

        return merged;
    }

    private sealed class Page(byte[] bits)
    {
        public byte[] Bits { get; } = bits;

        public long Version { get; set; }

        public long Persisted { get; set; }
    }
}
