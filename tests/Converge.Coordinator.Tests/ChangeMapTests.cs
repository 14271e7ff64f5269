using Converge.Common;
using Converge.Coordinator.Tracking;
using Converge.Storage;

namespace Converge.Coordinator.Tests;

/// <summary>The change map: bits persisted before marks return, reloaded from the store, cleared by whole granules.</summary>
public class ChangeMapTests
{
    private const long MiB = 1L << 20;

    [Fact]
    public async Task Marks_are_persisted_and_read_back_by_a_fresh_map()
    {
        var store = new MemoryVolume(ChangeMap.MapBytes);
        var map = new ChangeMap(store, 64 * MiB);
        await map.MarkAsync(8192, 100, ChangeKinds.Dirty | ChangeKinds.Intent0, durable: true, CancellationToken.None);
        await map.MarkAsync(10 * MiB, 3 * MiB, ChangeKinds.Intent1, durable: false, CancellationToken.None);
        Assert.Equal(1, store.Flushes);

        // A new map over the same store (a restarted host) sees the same bits.
        var reloaded = new ChangeMap(store, 64 * MiB);
        Assert.Equal([new ChangedRange(8192, 4096)], await reloaded.ReadAsync(ChangeKinds.Dirty, CancellationToken.None));
        Assert.Equal([new ChangedRange(0, MiB)], await reloaded.ReadAsync(ChangeKinds.Intent0, CancellationToken.None));
        Assert.Equal([new ChangedRange(0, MiB), new ChangedRange(10 * MiB, 3 * MiB)], await reloaded.ReadAsync(ChangeKinds.Intents, CancellationToken.None));
    }

    [Fact]
    public async Task A_map_page_whose_newest_write_a_crash_lost_comes_back_with_every_bit_set()
    {
        var dir = Path.Combine(Path.GetTempPath(), "converge-changemap-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var ct = CancellationToken.None;
            var componentId = Guid.NewGuid();
            var componentName = $"vd/{componentId:N}";
            var (impostorId, impostorName) = (Guid.NewGuid(), $"{Guid.NewGuid():N}.map");   // a standalone virtual disk's name may look like a map's
            var options = new StoreDiskOptions { LogBytes = 8L << 20, BackgroundFlushInterval = TimeSpan.Zero, OnLostWrite = ChangeMap.ReplaceLostWrite };
            Assert.True(ChangeMap.IsMapStore(ChangeMap.StoreIdFor(componentId), ChangeMap.StoreNameFor(componentName), out var owner));
            Assert.Equal(componentId, owner);
            Assert.False(ChangeMap.IsMapStore(componentId, componentName, out _));
            Assert.False(ChangeMap.IsMapStore(impostorId, impostorName, out _));

            var path = Path.Combine(dir, "disk.img");
            var crashed = Path.Combine(dir, "crashed.img");
            await using (var disk = await StoreDisk.FormatAsync(path, 128 * MiB, options, ct))
            {
                var data = await disk.CreateComponentAsync(componentId, componentName, 64 * MiB, ct);
                var mapStore = await disk.CreateComponentAsync(ChangeMap.StoreIdFor(componentId), ChangeMap.StoreNameFor(componentName), ChangeMap.MapBytes, ct);
                var impostor = await disk.CreateComponentAsync(impostorId, impostorName, MiB, ct);
                await impostor.WriteAsync(0, Filled(1), WriteFlags.None, ct);
                var map = new ChangeMap(mapStore, 64 * MiB);
                await map.MarkAsync(5 * MiB, 4096, ChangeKinds.Intent0, durable: true, ct);

                // After that flush: a write marks its region, then its data lands; the crash keeps the data but loses the
                // map page (and the impostor's newer block).
                await map.MarkAsync(20 * MiB, 4096, ChangeKinds.Intent0, durable: false, ct);
                await data.WriteAsync(20 * MiB, Filled(7), WriteFlags.None, ct);
                await impostor.WriteAsync(0, Filled(2), WriteFlags.None, ct);
                await disk.CopyRawToAsync(crashed, ct);
                using var file = File.OpenHandle(crashed, FileMode.Open, FileAccess.ReadWrite);
                RandomAccess.Write(file, Filled(0x3C), disk.PhysicalOffsetOf(mapStore, 0)!.Value);
                RandomAccess.Write(file, Filled(0x3C), disk.PhysicalOffsetOf(impostor, 0)!.Value);
            }

            await using var reopened = await StoreDisk.OpenAsync(crashed, options, ct);
            Assert.Equal(2, reopened.RecoveryLostWrites);
            Assert.Equal(1, reopened.RecoveryReplacedBlocks);
            var recovered = new ChangeMap(reopened.FindComponent(ChangeMap.StoreIdFor(componentId))!, 64 * MiB);

            // Without the replacement the page would read back as before the lost write: only 5 MiB marked, and the next
            // coordinator would not reconcile the write at 20 MiB that one replica kept.
            Assert.Equal([new ChangedRange(0, 64 * MiB)], await recovered.ReadAsync(ChangeKinds.Intent0, ct));
            Assert.Empty(await recovered.ReadAsync(ChangeKinds.Intent1 | ChangeKinds.Dirty, ct));
            var back = new byte[4096];
            await reopened.FindComponent(componentId)!.ReadAsync(20 * MiB, back, ct);
            Assert.Equal(Filled(7), back);
            await reopened.FindComponent(impostorId)!.ReadAsync(0, back, ct);
            Assert.Equal(Filled(1), back);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        static byte[] Filled(byte value) => Enumerable.Repeat(value, 4096).ToArray();
    }

    [Fact]
    public async Task Clearing_keeps_granules_the_range_only_partly_covers()
    {
        var store = new MemoryVolume(ChangeMap.MapBytes);
        var map = new ChangeMap(store, 16 * MiB);
        await map.MarkAsync(0, 16 * MiB, ChangeKinds.All, durable: false, CancellationToken.None);
        await map.ClearAsync(4096 + 1, 3 * 4096, ChangeKinds.Dirty, CancellationToken.None);
        await map.ClearAsync(MiB, 2 * MiB, ChangeKinds.Intent0, CancellationToken.None);

        var fresh = new ChangeMap(store, 16 * MiB);
        Assert.Equal([new ChangedRange(0, 8192), new ChangedRange(16384, (16 * MiB) - 16384)], await fresh.ReadAsync(ChangeKinds.Dirty, CancellationToken.None));
        Assert.Equal([new ChangedRange(0, MiB), new ChangedRange(3 * MiB, 13 * MiB)], await fresh.ReadAsync(ChangeKinds.Intent0, CancellationToken.None));
        Assert.Equal([new ChangedRange(0, 16 * MiB)], await fresh.ReadAsync(ChangeKinds.Intent1, CancellationToken.None));
    }

    [Fact]
    public async Task Concurrent_marks_all_land_and_share_page_writes()
    {
        var store = new MemoryVolume(ChangeMap.MapBytes) { WriteDelay = TimeSpan.FromMilliseconds(2) };
        var map = new ChangeMap(store, 256 * MiB);
        var random = new Random(5);
        var blocks = Enumerable.Range(0, 2000).Select(_ => (long)random.Next(0, 65536) * 4096).Distinct().ToList();
        await Task.WhenAll(blocks.Select(b => map.MarkAsync(b, 4096, ChangeKinds.Dirty, durable: false, CancellationToken.None).AsTask()));

        var read = await new ChangeMap(store, 256 * MiB).ReadAsync(ChangeKinds.Dirty, CancellationToken.None);
        Assert.Equal(blocks.Count * 4096L, read.Sum(r => r.Length));
        Assert.All(blocks, b => Assert.Contains(read, r => r.Offset <= b && b < r.End));
        Assert.True(store.Writes < blocks.Count, $"{store.Writes} page writes for {blocks.Count} marks: no sharing");
    }

    [Fact]
    public async Task Range_lock_keeps_a_copy_apart_from_overlapping_writes_only()
    {
        var locks = new RangeLock();
        var write = await locks.AcquireAsync(0, 4096, exclusive: false, CancellationToken.None);
        var otherWrite = await locks.AcquireAsync(0, 4096, exclusive: false, CancellationToken.None);
        var copy = locks.AcquireAsync(0, 8192, exclusive: true, CancellationToken.None).AsTask();
        var elsewhere = await locks.AcquireAsync(8192, 16384, exclusive: false, CancellationToken.None);
        Assert.False(copy.IsCompleted);

        // A new write to the copy's range waits behind the copy (no starvation of copies).
        var later = locks.AcquireAsync(4096, 8192, exclusive: false, CancellationToken.None).AsTask();
        write.Dispose();
        otherWrite.Dispose();
        using (await copy.WaitAsync(TimeSpan.FromSeconds(5)))
        {
            Assert.False(later.IsCompleted);
        }

        (await later.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        elsewhere.Dispose();
    }

    private sealed class MemoryVolume(long size) : IBlockVolume
    {
        private readonly byte[] data = new byte[size];

        public TimeSpan WriteDelay { get; init; }

        public int Writes;

        public int Flushes;

        public string Name => "memory";

        public long Size => data.LongLength;

        public VolumeCapabilities Capabilities => VolumeCapabilities.Flush;

        public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            data.AsSpan((int)offset, buffer.Length).CopyTo(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Writes);
            if (WriteDelay > TimeSpan.Zero)
            {
                await Task.Delay(WriteDelay, cancellationToken);
            }

            source.Span.CopyTo(data.AsSpan((int)offset));
        }

        public ValueTask FlushAsync(CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Flushes);
            return ValueTask.CompletedTask;
        }

        public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) => throw new NotSupportedException();

        public ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken) => throw new NotSupportedException();
    }
}
