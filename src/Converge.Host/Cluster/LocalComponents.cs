using System.Security.Cryptography;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Storage;

namespace Converge.Host.Cluster;

/// <summary>
/// The components this host stores, over its online <see cref="StoreDisk"/>s. Component names are
/// <c>VDISK/COMPONENTID</c>, so a store read on its own still says what each component belongs to.
/// </summary>
internal sealed class LocalComponents(HostInventory inventory) : ILocalComponents
{
    private readonly SemaphoreSlim mutation = new(1, 1);

    public static string ComponentName(string virtualDiskName, Guid componentId) => $"{virtualDiskName}/{componentId:N}";

    public StoreComponent? FindComponent(Guid componentId)
    {
        foreach (var store in inventory.OnlineStores)
        {
            if (store.FindComponent(componentId) is { } component)
            {
                return component;
            }
        }

        return null;
    }

    public IBlockVolume? Find(Guid componentId) => FindComponent(componentId);

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
