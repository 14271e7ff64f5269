using Converge.Host.Cluster;
using Converge.Management.Contracts;
using Converge.Metadata;
using Prometheus;

namespace Converge.Host.Management;

/// <summary>
/// The host's Prometheus series besides the per-virtual-disk I/O of <see cref="IoMeters"/>: capacity and errors per
/// disk, resync bytes, component states, metadata. Values are read from the inventory, the resync tracker and the
/// metadata when Prometheus scrapes <c>/metrics</c>.
/// </summary>
internal sealed class HostMetrics
{
    private static readonly string[] DiskLabels = ["disk", "path"];

    public HostMetrics(CollectorRegistry registry, HostInventory inventory, IServiceProvider services)
    {
        var cluster = services.GetService<ClusterNode>();
        var factory = Metrics.WithCustomRegistry(registry);
        var capacity = factory.CreateGauge("converge_disk_capacity_bytes", "Capacity of each disk of this host", DiskLabels);
        var used = factory.CreateGauge("converge_disk_used_bytes", "Bytes in use on each disk of this host", DiskLabels);
        var free = factory.CreateGauge("converge_disk_free_bytes", "Free bytes on each disk of this host", DiskLabels);
        var provisioned = factory.CreateGauge("converge_disk_provisioned_bytes", "Bytes promised to components on each disk of this host (thin)", DiskLabels);
        var online = factory.CreateGauge("converge_disk_online", "1 when the disk is online, 0 when missing, corrupt or failed", DiskLabels);
        var checksumErrors = factory.CreateCounter("converge_disk_checksum_errors_total", "Blocks whose CRC-32C did not match when read, per disk", DiskLabels);
        var ioErrors = factory.CreateCounter("converge_disk_io_errors_total", "I/O errors of each disk", DiskLabels);
        var resyncBytes = factory.CreateCounter("converge_resync_bytes_total", "Bytes copied by resyncs, rebuilds, reconciles and repairs this host ran");
        var resyncRemaining = factory.CreateGauge("converge_resync_remaining_bytes", "Bytes the copies this host runs still have to copy");
        var resyncRunning = factory.CreateGauge("converge_resync_running", "Copies this host runs now");
        var components = factory.CreateGauge("converge_components", "Components of every virtual disk in the cluster by state (as this host's metadata says)", "state");
        var vdisks = factory.CreateGauge("converge_vdisks", "Virtual disks in the cluster (or on this standalone host)");
        var appliedIndex = factory.CreateGauge("converge_metadata_applied_index", "Last metadata log index this host applied");
        var leader = factory.CreateGauge("converge_metadata_leader", "1 when this host is the metadata leader");

        registry.AddBeforeCollectCallback(() =>
        {
            foreach (var disk in inventory.ListDisks())
            {
                string[] labels = [disk.Id, disk.Path];
                capacity.WithLabels(labels).Set(disk.CapacityBytes);
                used.WithLabels(labels).Set(disk.UsedBytes);
                free.WithLabels(labels).Set(disk.FreeBytes);
                provisioned.WithLabels(labels).Set(disk.ProvisionedBytes);
                online.WithLabels(labels).Set(disk.State == DiskStates.Online ? 1 : 0);
                checksumErrors.WithLabels(labels).IncTo(disk.ChecksumErrors);
                ioErrors.WithLabels(labels).IncTo(disk.IoErrors);
            }

            if (cluster is null)
            {
                vdisks.Set(inventory.VirtualDiskCount);
                return;
            }

            resyncBytes.IncTo(cluster.Resyncs.BytesCopied);
            var running = cluster.Resyncs.Snapshot();
            resyncRemaining.Set(running.Sum(r => r.RemainingBytes));
            resyncRunning.Set(running.Count);
            if (!cluster.Registered)
            {
                return;
            }

            var state = cluster.Metadata.Current;
            var counts = Enum.GetValues<ComponentState>().ToDictionary(s => s, _ => 0);
            foreach (var vdisk in state.VirtualDisks.Values)
            {
                foreach (var component in vdisk.Layout.Components)
                {
                    counts[vdisk.StateOf(component.ComponentId)]++;
                }
            }

            foreach (var (s, n) in counts)
            {
                components.WithLabels(s.ToString().ToLowerInvariant()).Set(n);
            }

            vdisks.Set(state.VirtualDisks.Count);
            appliedIndex.Set(state.AppliedIndex);
            leader.Set(cluster.Metadata.Service.IsLeader ? 1 : 0);
        });
    }
}
