using System.Collections.Concurrent;
using System.Security.Cryptography;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Coordinator.Tracking;
using Converge.Storage;

namespace Converge.Host.Cluster;

/// <summary>
/// The components this host stores, over its online <see cref="StoreDisk"/>s. Component names are
/// <c>VDISK/COMPONENTID</c>, so a store read on its own still says what each component belongs to.
/// </summary>
internal sealed class LocalComponents(HostInventory inventory) : ILocalComponents
{
    private readonly SemaphoreSlim mutation = new(1, 1);
    private readonly ConcurrentDictionary<Guid, ChangeMap> changeMaps = new();
    private readonly ConcurrentDictionary<Guid, bool> failedDisks = new();

    /// <summary>Test hook (--enable-fault-injection): every I/O to the disk's components fails with EIO from now on.</summary>
    public void InjectDiskFailure(Guid diskId, bool failing)
    {
        if (failing)
        {
            failedDisks[diskId] = true;
        }
        else
        {
            failedDisks.TryRemove(diskId, out _);
        }
    }

    public static string ComponentName(string virtualDiskName, Guid componentId) => $"{virtualDiskName}/{componentId:N}";

    public async ValueTask<ChangeMap> GetChangeMapAsync(Guid componentId, CancellationToken cancellationToken)
    {
        if (changeMaps.TryGetValue(componentId, out var map))
        {
            return map;
        }

        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (changeMaps.TryGetValue(componentId, out map))
            {
                return map;
            }

            var component = FindComponent(componentId)
                ?? throw new VolumeException(VolumeError.Unavailable, $"component {componentId:N} is not on this host's online disks");
            var mapId = ChangeMap.StoreIdFor(componentId);
            var store = FindComponent(mapId)
                ?? await component.Disk.CreateComponentAsync(mapId, ChangeMap.StoreNameFor(component.Name), ChangeMap.MapBytes, cancellationToken).ConfigureAwait(false);
            map = new ChangeMap(store, component.Size);
            changeMaps[componentId] = map;
            return map;
        }
        finally
        {
            mutation.Release();
        }
    }

    public StoreComponent? FindComponent(Guid componentId)
    {
        foreach (var store in inventory.OnlineStores)
        {
            if (!failedDisks.IsEmpty && failedDisks.ContainsKey(store.Id))
            {
                continue;
            }

            if (store.FindComponent(componentId) is { } component)
            {
                return component;
            }
        }

        return null;
    }

    /// <summary>Every component on this host's online disks that are not failed.</summary>
    public IEnumerable<StoreComponent> All() =>
        inventory.OnlineStores.Where(s => failedDisks.IsEmpty || !failedDisks.ContainsKey(s.Id)).SelectMany(s => s.Components);

    public IBlockVolume? Find(Guid componentId)
    {
        if (!failedDisks.IsEmpty)
        {
            foreach (var store in inventory.OnlineStores)
            {
                if (failedDisks.ContainsKey(store.Id) && store.FindComponent(componentId) is not null)
                {
                    return new FailingDiskComponent(componentId, store.Path);
                }
            }
        }

        return FindComponent(componentId);
    }

    public async ValueTask EnsureAsync(Guid componentId, Guid diskId, string name, long sizeBytes, CancellationToken cancellationToken)
    {
        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (FindComponent(componentId) is { } existing)
            {
                if (existing.Size < sizeBytes)
                {
                    await existing.Disk.ResizeComponentAsync(componentId, sizeBytes, cancellationToken).ConfigureAwait(false);
                }

                return;
            }

            var store = inventory.OnlineStores.FirstOrDefault(s => s.Id == diskId)
                ?? throw new VolumeException(VolumeError.Unavailable, $"disk {diskId:N} is not online on this host");
            if (sizeBytes > store.CapacityBytes)
            {
                throw new VolumeException(VolumeError.NoSpace, $"component {componentId:N} ({ByteSize.Format(sizeBytes)}) is larger than disk {store.Path}");
            }

            await store.CreateComponentAsync(componentId, name, sizeBytes, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            mutation.Release();
        }
    }

    public async ValueTask DeleteAsync(Guid componentId, CancellationToken cancellationToken)
    {
        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (FindComponent(componentId) is { } existing)
            {
                await existing.Disk.DeleteComponentAsync(componentId, cancellationToken).ConfigureAwait(false);
            }

            changeMaps.TryRemove(componentId, out _);
            if (FindComponent(ChangeMap.StoreIdFor(componentId)) is { } map)
            {
                await map.Disk.DeleteComponentAsync(map.Id, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            mutation.Release();
        }
    }

    public IReadOnlyList<PeerDiskStats> DiskStats() =>
    [
        .. inventory.OnlineStores.Select(s => new PeerDiskStats(
            s.Id, s.CapacityBytes, s.UsedBytes, s.FreeBytes, s.State == Converge.Storage.DiskState.Online)),
    ];

    /// <summary>SHA-256 of the component's whole contents as the local store returns them (holes read as zeros).</summary>
    public async Task<string> DigestAsync(StoreComponent component, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        for (long offset = 0; offset < component.Size; offset += buffer.Length)
        {
            var length = (int)Math.Min(buffer.Length, component.Size - offset);
            await component.ReadAsync(offset, buffer.AsMemory(0, length), cancellationToken).ConfigureAwait(false);
            hash.AppendData(buffer, 0, length);
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}

/// <summary>A component on a disk that fails every I/O (fault injection): what a dying device looks like to peers.</summary>
internal sealed class FailingDiskComponent(Guid componentId, string diskPath) : IBlockVolume
{
    public string Name { get; } = componentId.ToString("N");

    public long Size => 0;

    public VolumeCapabilities Capabilities => VolumeCapabilities.None;

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) => Fail();

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) => Fail();

    public ValueTask FlushAsync(CancellationToken cancellationToken) => Fail();

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) => Fail();

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) => Fail();

    public ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromException<IReadOnlyList<AllocationExtent>>(Error());

    private ValueTask Fail() => ValueTask.FromException(Error());

    private VolumeException Error() => new(VolumeError.IO, $"disk {diskPath} fails I/O (injected fault)");
}
