using Converge.Coordinator.Tracking;
using Converge.Metadata;
using Converge.Storage;

namespace Converge.Host.Cluster;

/// <summary>
/// Deletes this host's cluster components that no virtual disk's layout names any more: the old copy of a component
/// rebuilt elsewhere while this host was away, a component of a virtual disk deleted while this host was down, or one
/// created for a placement whose commit lost a race. A component is deleted only after every scan for the whole grace
/// period found it unreferenced, each scan after a linearizable metadata read, so a placement in progress (components
/// are created before the layout that names them is committed) is never touched, and a host that cannot reach the
/// metadata quorum deletes nothing. Only components named the cluster's way (<c>VDISK/COMPONENTID</c>, and their
/// change maps) are considered.
/// </summary>
internal sealed partial class OrphanCollector(ClusterNode node, TimeSpan grace, TimeProvider time, ILogger logger) : IAsyncDisposable
{
    private readonly Dictionary<Guid, long> unreferencedSince = [];
    private readonly CancellationTokenSource stop = new();
    private Task loop = Task.CompletedTask;

    /// <summary>Components deleted since this host started.</summary>
    public long Deleted { get; private set; }

    private TimeSpan Interval => TimeSpan.FromTicks(Math.Clamp(grace.Ticks / 4, TimeSpan.FromSeconds(1).Ticks, TimeSpan.FromSeconds(30).Ticks));

    public void Start()
    {
        if (grace > TimeSpan.Zero)
        {
            loop = Task.Run(() => RunAsync(stop.Token), CancellationToken.None);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await stop.CancelAsync().ConfigureAwait(false);
        await loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        stop.Dispose();
    }

    /// <summary>The data component a store component belongs to (itself, or the one whose change map it is); null if it is not a cluster component.</summary>
    internal static Guid? OwnerOf(StoreComponent component)
    {
        if (ChangeMap.IsMapStore(component.Id, component.Name, out var mapOwner))
        {
            return mapOwner;
        }

        // A data component: its name ends with its id.
        var name = component.Name;
        var slash = name.LastIndexOf('/');
        return slash > 0 && Guid.TryParseExact(name.AsSpan(slash + 1), "N", out var owner) && owner == component.Id ? owner : null;
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(Interval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                try
                {
                    await ScanAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
                {
                    ScanFailed(logger, e.Message);
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private async Task ScanAsync(CancellationToken cancellationToken)
    {
        if (!node.Registered)
        {
            return;
        }

        using (var barrier = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
        {
            barrier.CancelAfter(TimeSpan.FromSeconds(5));
            try
            {
                await node.Metadata.Service.BarrierAsync(barrier.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException or InvalidOperationException ||
                                      (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                // No current view of the metadata: nothing may be judged unreferenced, and the clocks start over.
                unreferencedSince.Clear();
                return;
            }
        }

        var state = node.Metadata.Current;
        if (state.Cluster is null || !state.Hosts.ContainsKey(node.HostId))
        {
            return;
        }

        var referenced = new HashSet<Guid>(state.VirtualDisks.Values.SelectMany(v => v.Layout.Components).Select(c => c.ComponentId));
        var candidates = new List<(StoreComponent Component, Guid Owner)>();
        foreach (var component in node.Local.All())
        {
            if (OwnerOf(component) is { } owner && !referenced.Contains(owner))
            {
                candidates.Add((component, owner));
            }
        }

        var now = time.GetTimestamp();
        foreach (var id in unreferencedSince.Keys.Where(id => !candidates.Any(c => c.Component.Id == id)).ToList())
        {
            unreferencedSince.Remove(id);
        }

        foreach (var (component, owner) in candidates)
        {
            if (!unreferencedSince.TryGetValue(component.Id, out var since))
            {
                unreferencedSince[component.Id] = now;
                continue;
            }

            var unreferencedFor = time.GetElapsedTime(since, now);
            if (unreferencedFor < grace)
            {
                continue;
            }

            var (name, bytes, disk) = (component.Name, component.Size, component.Disk.Path);
            await node.Local.DeleteAsync(owner, cancellationToken).ConfigureAwait(false);
            unreferencedSince.Remove(component.Id);
            unreferencedSince.Remove(ChangeMap.StoreIdFor(owner));
            Deleted++;
            OrphanDeleted(logger, name, bytes, disk, unreferencedFor.TotalMinutes);
        }
    }

    [LoggerMessage(130, LogLevel.Warning, "deleted orphaned component {Name} ({Bytes} bytes on {Disk}): no virtual disk has referenced it for {Minutes:0.#} min")]
    private static partial void OrphanDeleted(ILogger logger, string name, long bytes, string disk, double minutes);

    [LoggerMessage(131, LogLevel.Warning, "orphan scan failed: {Reason}")]
    private static partial void ScanFailed(ILogger logger, string reason);
}
