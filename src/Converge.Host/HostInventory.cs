using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Converge.Common;
using Converge.Management.Contracts;
using Converge.Nbd;
using Converge.Storage;

namespace Converge.Host;

/// <summary>
/// Owns the host's disks and the catalog of virtual disks (name → store component), serves the catalog to the
/// NBD server and applies management changes. Reads are lock-free over an immutable snapshot; mutations are
/// serialized by one semaphore and recorded in <c>host.json</c> after the store has applied them.
/// </summary>
internal sealed class HostInventory : INbdExportCatalog, IAsyncDisposable
{
    private readonly HostOptions options;
    private readonly ILogger logger;
    private readonly ILogger storeLogger;
    private readonly SemaphoreSlim mutation = new(1, 1);
    private readonly string dataDirectory;
    private volatile Snapshot snapshot = Snapshot.Empty;
    private HostState? state;
    private bool disposed;

    public HostInventory(HostOptions options, ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggerFactory);
        this.options = options;
        dataDirectory = Path.GetFullPath(options.DataDirectory);
        logger = loggerFactory.CreateLogger(ConvergeHost.LogCategory);
        storeLogger = loggerFactory.CreateLogger("converge.storage");
        NbdEndpoint = FormatEndPoint(options.NbdEndPoint);
    }

    public Guid HostId => State.Id;

    public string HostName => State.Name;

    /// <summary><c>host:port</c> clients use to reach the NBD listener.</summary>
    public string NbdEndpoint { get; }

    private HostState State => state ?? throw new InvalidOperationException("the inventory is not open");

    /// <summary>Opens every recorded disk (reporting those that fail), formats or adopts the new ones, reconciles the catalog.</summary>
    public async Task OpenAsync(CancellationToken cancellationToken)
    {
        var stored = await HostStateFile.LoadAsync(dataDirectory, cancellationToken).ConfigureAwait(false);
        var id = stored?.Id ?? Guid.NewGuid();
        var name = options.Name ?? stored?.Name ?? DefaultHostName();
        Log.HostStarting(logger, name, id, dataDirectory);

        var disks = new List<HostDisk>();
        try
        {
            foreach (var known in stored?.Disks ?? [])
            {
                disks.Add(await OpenKnownDiskAsync(known, cancellationToken).ConfigureAwait(false));
            }

            foreach (var spec in options.Disks)
            {
                var path = Path.GetFullPath(spec.Path);
                if (disks.Any(d => d.Path == path))
                {
                    continue;
                }

                HostDisk disk;
                try
                {
                    disk = await OpenOrFormatAsync(path, spec.SizeBytes, cancellationToken).ConfigureAwait(false);
                }
                catch (HostOperationException e)
                {
                    throw new HostStartException(e.Message, e);
                }

                if (disks.FirstOrDefault(d => d.Id == disk.Id) is { } twin)
                {
                    await CloseAsync(disk).ConfigureAwait(false);
                    throw new HostStartException($"disk {path} is the same disk (id {disk.Id}) as {twin.Path}; give each disk once");
                }

                disks.Add(disk);
            }

            if (disks.Count == 0)
            {
                throw new HostStartException(
                    $"no disks: {Path.Combine(dataDirectory, HostStateFile.FileName)} records none and none were given; " +
                    "give at least one with --disk PATH:SIZE (e.g. --disk /var/lib/converge/disk1.img:8GiB)");
            }
        }
        catch
        {
            foreach (var disk in disks)
            {
                await CloseAsync(disk).ConfigureAwait(false);
            }

            throw;
        }

        var entries = ImmutableSortedDictionary.CreateBuilder<string, VirtualDiskEntry>(StringComparer.Ordinal);
        foreach (var disk in disks.Where(d => d.Store is not null))
        {
            foreach (var component in disk.Store!.Components)
            {
                if (entries.TryGetValue(component.Name, out var other))
                {
                    Log.DuplicateVirtualDisk(logger, component.Name, disk.Path, other.Disk.Path);
                    continue;
                }

                entries[component.Name] = new VirtualDiskEntry(component.Name, component.Id, disk, component.Size, component);
            }
        }

        foreach (var recorded in stored?.VirtualDisks ?? [])
        {
            var disk = disks.FirstOrDefault(d => d.Id == recorded.DiskId);
            if (disk is null || disk.Store is not null)
            {
                if (disk is not null && disk.Store!.FindComponent(recorded.Id) is null)
                {
                    Log.CatalogEntryDropped(logger, recorded.Name, disk.Path);
                }

                continue;
            }

            if (entries.ContainsKey(recorded.Name))
            {
                Log.DuplicateVirtualDisk(logger, recorded.Name, disk.Path, entries[recorded.Name].Disk.Path);
                continue;
            }

            entries[recorded.Name] = new VirtualDiskEntry(recorded.Name, recorded.Id, disk, recorded.SizeBytes, Component: null);
            Log.VirtualDiskUnavailable(logger, recorded.Name, disk.Path, disk.State.ToString().ToLowerInvariant());
        }

        snapshot = new Snapshot([.. disks], entries.ToImmutable());
        state = new HostState { Id = id, Name = name };
        await SaveAsync(cancellationToken).ConfigureAwait(false);
    }

    public IReadOnlyList<DiskInfo> ListDisks() => [.. snapshot.Disks.Select(ToInfo)];

    /// <summary>Cluster mode: the local stores of the disks that are online (the host's component store).</summary>
    internal IReadOnlyList<StoreDisk> OnlineStores => [.. snapshot.Disks.Where(d => d.Store is not null).Select(d => d.Store!)];

    public IReadOnlyList<VirtualDiskInfo> ListVirtualDisks() => [.. snapshot.VirtualDisks.Values.Select(ToInfo)];

    public int DiskCount => snapshot.Disks.Length;

    public int VirtualDiskCount => snapshot.VirtualDisks.Count;

    public VirtualDiskInfo GetVirtualDisk(string name) => ToInfo(Find(snapshot, name));

    /// <summary>Creates a virtual disk on the online disk with the most free capacity that can hold it.</summary>
    public async Task<VirtualDiskInfo> CreateVirtualDiskAsync(string name, JsonElement size, CancellationToken cancellationToken)
    {
        if (!NameRules.IsValid(name, out var nameError))
        {
            throw new HostOperationException(HostErrorKind.Invalid, $"virtual disk {nameError}");
        }

        var bytes = ParseSize(size);
        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var current = snapshot;
            if (current.VirtualDisks.TryGetValue(name, out var existing))
            {
                throw new HostOperationException(
                    HostErrorKind.Conflict,
                    $"virtual disk '{name}' already exists ({ByteSize.Format(existing.SizeBytes)} on {existing.Disk.Path})");
            }

            var online = current.Disks.Where(d => d.Store is not null).ToList();
            var target = online
                .Where(d => bytes <= d.Store!.CapacityBytes)
                .OrderByDescending(d => d.Store!.FreeBytes)
                .FirstOrDefault();
            if (target is null)
            {
                throw new HostOperationException(
                    HostErrorKind.InsufficientCapacity,
                    online.Count == 0
                        ? $"cannot create '{name}': no disk is online"
                        : $"cannot create '{name}' ({ByteSize.Format(bytes)}): no online disk can hold it; the largest has a capacity of {ByteSize.Format(online.Max(d => d.Store!.CapacityBytes))}");
            }

            var component = await target.Store!.CreateComponentAsync(Guid.NewGuid(), name, bytes, cancellationToken).ConfigureAwait(false);
            var entry = new VirtualDiskEntry(name, component.Id, target, component.Size, component);
            snapshot = current with { VirtualDisks = current.VirtualDisks.SetItem(name, entry) };
            await SaveAsync(cancellationToken).ConfigureAwait(false);
            Log.VirtualDiskCreated(logger, name, ByteSize.Format(bytes), target.Path);
            return ToInfo(entry);
        }
        finally
        {
            mutation.Release();
        }
    }

    /// <summary>Grows a virtual disk; shrinking is refused.</summary>
    public async Task<VirtualDiskInfo> ResizeVirtualDiskAsync(string name, string? size, CancellationToken cancellationToken)
    {
        var bytes = ParseSize(size);
        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var current = snapshot;
            var entry = Find(current, name);
            var component = RequireOnline(entry, "resize");
            var oldSize = component.Size;
            if (bytes < oldSize)
            {
                throw new HostOperationException(
                    HostErrorKind.Invalid,
                    $"cannot shrink '{name}' from {ByteSize.Format(oldSize)} to {ByteSize.Format(bytes)}: virtual disks only grow");
            }

            if (bytes == oldSize)
            {
                return ToInfo(entry);
            }

            if (bytes > entry.Disk.Store!.CapacityBytes)
            {
                throw new HostOperationException(
                    HostErrorKind.InsufficientCapacity,
                    $"cannot grow '{name}' to {ByteSize.Format(bytes)}: its disk {entry.Disk.Path} has a capacity of {ByteSize.Format(entry.Disk.Store.CapacityBytes)}");
            }

            await entry.Disk.Store.ResizeComponentAsync(entry.Id, bytes, cancellationToken).ConfigureAwait(false);
            var resized = entry with { SizeBytes = component.Size };
            snapshot = current with { VirtualDisks = current.VirtualDisks.SetItem(name, resized) };
            await SaveAsync(cancellationToken).ConfigureAwait(false);
            Log.VirtualDiskResized(logger, name, ByteSize.Format(oldSize), ByteSize.Format(component.Size));
            return ToInfo(resized);
        }
        finally
        {
            mutation.Release();
        }
    }

    public async Task DeleteVirtualDiskAsync(string name, CancellationToken cancellationToken)
    {
        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var current = snapshot;
            var entry = Find(current, name);
            RequireOnline(entry, "delete");
            snapshot = current with { VirtualDisks = current.VirtualDisks.Remove(name) };
            try
            {
                await entry.Disk.Store!.DeleteComponentAsync(entry.Id, cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                snapshot = current;
                throw;
            }

            await SaveAsync(cancellationToken).ConfigureAwait(false);
            Log.VirtualDiskDeleted(logger, name, entry.Disk.Path);
        }
        finally
        {
            mutation.Release();
        }
    }

    /// <summary>Adds a disk: formats <paramref name="path"/> when it does not exist and a size is given, else adopts it.</summary>
    public async Task<DiskInfo> AddDiskAsync(string? path, string? size, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(path))
        {
            throw new HostOperationException(HostErrorKind.Invalid, "the disk path is empty");
        }

        if (!Path.IsPathFullyQualified(path))
        {
            throw new HostOperationException(HostErrorKind.Invalid, $"disk path '{path}' is not absolute; the host resolves paths on its own machine");
        }

        long? bytes = size is null ? null : ParseSize(size);
        var fullPath = Path.GetFullPath(path);
        CheckUnderDiskRoot(fullPath);
        await mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var current = snapshot;
            if (current.Disks.FirstOrDefault(d => d.Path == fullPath) is { } known)
            {
                throw new HostOperationException(HostErrorKind.Conflict, $"disk {fullPath} is already part of this host (state {known.State.ToString().ToLowerInvariant()})");
            }

            var disk = await OpenOrFormatAsync(fullPath, bytes, cancellationToken).ConfigureAwait(false);
            string? conflict = null;
            if (current.Disks.FirstOrDefault(d => d.Id == disk.Id) is { } twin)
            {
                conflict = $"disk {fullPath} is the same disk (id {disk.Id}) as {twin.Path}";
            }
            else if (disk.Store!.Components.FirstOrDefault(c => current.VirtualDisks.ContainsKey(c.Name)) is { } clash)
            {
                conflict = $"disk {fullPath} holds virtual disk '{clash.Name}', and this host already has one of that name";
            }

            if (conflict is not null)
            {
                await CloseAsync(disk).ConfigureAwait(false);
                throw new HostOperationException(HostErrorKind.Conflict, conflict + "; the disk was not added");
            }

            var virtualDisks = current.VirtualDisks;
            foreach (var component in disk.Store!.Components)
            {
                virtualDisks = virtualDisks.SetItem(component.Name, new VirtualDiskEntry(component.Name, component.Id, disk, component.Size, component));
            }

            snapshot = new Snapshot(current.Disks.Add(disk), virtualDisks);
            await SaveAsync(cancellationToken).ConfigureAwait(false);
            Log.DiskAdded(logger, fullPath, disk.Id);
            return ToInfo(disk);
        }
        finally
        {
            mutation.Release();
        }
    }

    /// <summary>The folders <c>disk add</c> may use: --disk-root, else the data directory.</summary>
    private IReadOnlyList<string> DiskRoots =>
        options.DiskRoots.Count == 0 ? [dataDirectory] : [.. options.DiskRoots.Select(r => Path.TrimEndingDirectorySeparator(Path.GetFullPath(r)))];

    /// <summary>
    /// <c>disk add</c> takes a path from the API, so it must stay where the operator allowed: under a disk root, with
    /// no symbolic link on the way below the root, and not a link itself. The store then opens the file with
    /// O_NOFOLLOW (a link swapped in after this check fails the open); a folder swapped for a link between this check
    /// and the open is not caught, which needs write access to a folder under the root.
    /// </summary>
    private void CheckUnderDiskRoot(string fullPath)
    {
        var roots = DiskRoots;
        var root = roots.FirstOrDefault(r => IsUnder(r, fullPath));
        if (root is null)
        {
            throw new HostOperationException(
                HostErrorKind.Invalid,
                $"disk path {fullPath} is outside the disk roots ({string.Join(", ", roots)}); put the disk file under one, or start the host with --disk-root");
        }

        var current = root;
        foreach (var part in Path.GetRelativePath(root, fullPath).Split(Path.DirectorySeparatorChar))
        {
            current = Path.Combine(current, part);
            FileSystemInfo entry = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (entry.LinkTarget is not null)
            {
                throw new HostOperationException(
                    HostErrorKind.Invalid,
                    $"disk path {fullPath}: {current} is a symbolic link (to {entry.LinkTarget}); give the real path");
            }
        }
    }

    private static bool IsUnder(string root, string fullPath)
    {
        var relative = Path.GetRelativePath(root, fullPath);
        return relative != "." && !Path.IsPathRooted(relative) && relative != ".." &&
            !relative.StartsWith(".." + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    public IReadOnlyList<NbdExportInfo> ListExports() =>
    [
        .. snapshot.VirtualDisks.Values
            .Where(v => v.Component is not null)
            .Select(v => new NbdExportInfo(v.Name, $"Converge virtual disk {v.Name}, {ByteSize.Format(v.Component!.Size)}")),
    ];

    /// <summary>An online virtual disk by name; <c>""</c> is the default export when exactly one virtual disk is online.</summary>
    public ValueTask<IBlockVolume?> FindExportAsync(string name, CancellationToken cancellationToken) => ValueTask.FromResult(FindExport(name));

    private IBlockVolume? FindExport(string name)
    {
        var current = snapshot;
        if (name.Length == 0)
        {
            var online = current.VirtualDisks.Values.Where(v => v.Component is not null).Take(2).ToList();
            return online.Count == 1 ? online[0].Component : null;
        }

        return current.VirtualDisks.TryGetValue(name, out var entry) ? entry.Component : null;
    }

    /// <summary>Flushes, checkpoints and closes every online disk.</summary>
    public async ValueTask DisposeAsync()
    {
        await mutation.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (disposed)
            {
                return;
            }

            disposed = true;
            foreach (var disk in snapshot.Disks)
            {
                await CloseAsync(disk).ConfigureAwait(false);
            }
        }
        finally
        {
            mutation.Release();
        }
    }

    internal static string FormatEndPoint(IPEndPoint endPoint)
    {
        var address = endPoint.Address;
        if (address.Equals(IPAddress.Any))
        {
            address = IPAddress.Loopback;
        }
        else if (address.Equals(IPAddress.IPv6Any))
        {
            address = IPAddress.IPv6Loopback;
        }

        var host = address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
        return string.Create(CultureInfo.InvariantCulture, $"{host}:{endPoint.Port}");
    }

    private async Task<HostDisk> OpenKnownDiskAsync(HostStateDisk known, CancellationToken cancellationToken)
    {
        StoreDisk store;
        try
        {
            store = await StoreDisk.OpenAsync(known.Path, StoreOptions(), cancellationToken).ConfigureAwait(false);
        }
        catch (DiskOpenException e)
        {
            return Unavailable(known, e.State, e.Message);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Unavailable(known, DiskState.Failed, e.Message);
        }

        if (store.Id != known.Id)
        {
            var actual = store.Id;
            await store.DisposeAsync().ConfigureAwait(false);
            return Unavailable(known, DiskState.Failed, $"the file holds disk {actual}, not {known.Id}: a different disk was put in its place");
        }

        Log.DiskOpened(logger, known.Path, store.Id, ByteSize.Format(store.CapacityBytes), store.Components.Count);
        return new HostDisk(known.Id, known.Path, DiskState.Online, null, store);
    }

    private HostDisk Unavailable(HostStateDisk known, DiskState diskState, string reason)
    {
        Log.DiskUnavailable(logger, known.Path, diskState.ToString().ToLowerInvariant(), reason);
        return new HostDisk(known.Id, known.Path, diskState, reason, Store: null);
    }

    private async Task<HostDisk> OpenOrFormatAsync(string path, long? sizeBytes, CancellationToken cancellationToken)
    {
        if (Directory.Exists(path))
        {
            throw new HostOperationException(HostErrorKind.Invalid, $"disk path {path} is a directory; give a file path");
        }

        if (File.Exists(path))
        {
            try
            {
                var store = await StoreDisk.OpenAsync(path, StoreOptions(), cancellationToken).ConfigureAwait(false);
                Log.DiskOpened(logger, path, store.Id, ByteSize.Format(store.CapacityBytes), store.Components.Count);
                return new HostDisk(store.Id, path, DiskState.Online, null, store);
            }
            catch (Exception e) when (e is DiskOpenException or IOException or UnauthorizedAccessException)
            {
                throw new HostOperationException(HostErrorKind.Invalid, $"cannot adopt existing file {path} as a disk: {e.Message}", e);
            }
        }

        if (sizeBytes is not { } size)
        {
            throw new HostOperationException(
                HostErrorKind.Invalid,
                $"disk {path} does not exist; give a size to format a new one (e.g. {path}:8GiB)");
        }

        var directory = Path.GetDirectoryName(path);
        if (directory is not null && !Directory.Exists(directory))
        {
            throw new HostOperationException(HostErrorKind.Invalid, $"cannot format {path}: directory {directory} does not exist");
        }

        try
        {
            var store = await StoreDisk.FormatAsync(path, size, StoreOptions(), cancellationToken).ConfigureAwait(false);
            Log.DiskFormatted(logger, path, store.Id, ByteSize.Format(store.CapacityBytes));
            return new HostDisk(store.Id, path, DiskState.Online, null, store);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new HostOperationException(HostErrorKind.Invalid, $"cannot format {path} ({ByteSize.Format(size)}): {e.Message}", e);
        }
    }

    private async Task CloseAsync(HostDisk disk)
    {
        if (disk.Store is not { } store)
        {
            return;
        }

        try
        {
            await store.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            await store.CheckpointAsync(CancellationToken.None).ConfigureAwait(false);
            Log.DiskClosed(logger, disk.Path);
        }
        catch (Exception e)
        {
            Log.DiskCloseFailed(logger, e, disk.Path, e.Message);
        }
        finally
        {
            await store.DisposeAsync().ConfigureAwait(false);
        }
    }

    private StoreDiskOptions StoreOptions() => new()
    {
        Time = options.Time,
        BackgroundFlushInterval = options.BackgroundFlushInterval,
        Logger = storeLogger,
        OnLostWrite = Coordinator.Tracking.ChangeMap.ReplaceLostWrite,
    };

    private Task SaveAsync(CancellationToken cancellationToken)
    {
        var current = snapshot;
        state = State with
        {
            Disks = [.. current.Disks.Select(d => new HostStateDisk(d.Id, d.Path))],
            VirtualDisks = [.. current.VirtualDisks.Values.Select(v => new HostStateVirtualDisk(v.Name, v.Id, v.Disk.Id, v.Component?.Size ?? v.SizeBytes))],
        };
        return HostStateFile.SaveAsync(dataDirectory, state, cancellationToken);
    }

    private static VirtualDiskEntry Find(Snapshot current, string name) =>
        current.VirtualDisks.TryGetValue(name, out var entry)
            ? entry
            : throw new HostOperationException(HostErrorKind.NotFound, $"virtual disk '{name}' does not exist");

    private static StoreComponent RequireOnline(VirtualDiskEntry entry, string verb) =>
        entry.Component ?? throw new HostOperationException(
            HostErrorKind.Conflict,
            $"cannot {verb} '{entry.Name}': it is unavailable because its disk {entry.Disk.Path} is {entry.Disk.State.ToString().ToLowerInvariant()} ({entry.Disk.Error})");

    internal static long ParseSize(JsonElement size) => size.ValueKind switch
    {
        JsonValueKind.String => ParseSize(size.GetString()),
        JsonValueKind.Number when size.TryGetInt64(out var n) => CheckSize(n, n.ToString(CultureInfo.InvariantCulture)),
        JsonValueKind.Undefined or JsonValueKind.Null => throw new HostOperationException(HostErrorKind.Invalid, "size is missing; give e.g. \"10GiB\" or a number of bytes"),
        _ => throw new HostOperationException(HostErrorKind.Invalid, $"size {size.GetRawText()} is not a size; give e.g. \"10GiB\" or a number of bytes"),
    };

    internal static long ParseSize(string? text)
    {
        if (!ByteSize.TryParse(text, out var bytes, out var error))
        {
            throw new HostOperationException(HostErrorKind.Invalid, error);
        }

        return CheckSize(bytes, text!);
    }

    private static long CheckSize(long bytes, string text)
    {
        if (bytes <= 0)
        {
            throw new HostOperationException(HostErrorKind.Invalid, $"size '{text}' must be larger than zero");
        }

        if (bytes % BlockGeometry.BlockSize != 0)
        {
            throw new HostOperationException(
                HostErrorKind.Invalid,
                $"size '{text}' ({bytes} bytes) is not a multiple of {BlockGeometry.BlockSize} bytes; e.g. {ByteSize.Format((bytes / BlockGeometry.BlockSize + 1) * BlockGeometry.BlockSize)} would be");
        }

        return bytes;
    }

    private DiskInfo ToInfo(HostDisk disk) => disk.Store is { } store
        ? new DiskInfo
        {
            Id = disk.Id.ToString(),
            Path = disk.Path,
            State = store.State.ToString().ToLowerInvariant(),
            Error = store.State == DiskState.Online ? null : "the disk failed while running; see the host log",
            CapacityBytes = store.CapacityBytes,
            UsedBytes = store.UsedBytes,
            ProvisionedBytes = store.ProvisionedBytes,
            FreeBytes = store.FreeBytes,
            ComponentCount = store.Components.Count,
            ChecksumErrors = store.ChecksumErrors,
            IoErrors = store.IoErrors,
        }
        : new DiskInfo
        {
            Id = disk.Id.ToString(),
            Path = disk.Path,
            State = disk.State.ToString().ToLowerInvariant(),
            Error = disk.Error,
            ComponentCount = snapshot.VirtualDisks.Values.Count(v => v.Disk.Id == disk.Id),
        };

    private VirtualDiskInfo ToInfo(VirtualDiskEntry entry) => new()
    {
        Name = entry.Name,
        Id = entry.Id.ToString(),
        SizeBytes = entry.Component?.Size ?? entry.SizeBytes,
        UsedBytes = entry.Component?.UsedBytes ?? 0,
        State = entry.Component is not null && entry.Disk.Store?.State == DiskState.Online ? VirtualDiskStates.Online : VirtualDiskStates.Unavailable,
        DiskId = entry.Disk.Id.ToString(),
        DiskPath = entry.Disk.Path,
        ChecksumErrors = entry.Component?.ChecksumErrors ?? 0,
        NbdUri = $"nbd://{NbdEndpoint}/{entry.Name}",
    };

    private static string DefaultHostName()
    {
        var name = Environment.MachineName.ToLowerInvariant();
        return NameRules.IsValid(name, out _) ? name : "host";
    }

    private sealed record HostDisk(Guid Id, string Path, DiskState State, string? Error, StoreDisk? Store);

    private sealed record VirtualDiskEntry(string Name, Guid Id, HostDisk Disk, long SizeBytes, StoreComponent? Component);

    private sealed record Snapshot(ImmutableArray<HostDisk> Disks, ImmutableSortedDictionary<string, VirtualDiskEntry> VirtualDisks)
    {
        public static readonly Snapshot Empty = new([], ImmutableSortedDictionary.Create<string, VirtualDiskEntry>(StringComparer.Ordinal));
    }
}

internal enum HostErrorKind
{
    Invalid,
    NotFound,
    Conflict,
    InsufficientCapacity,
    Unavailable,
}

/// <summary>A refused management operation; nothing was changed. The message is meant for the operator.</summary>
internal sealed class HostOperationException(HostErrorKind kind, string message, Exception? inner = null) : Exception(message, inner)
{
    public HostErrorKind Kind { get; } = kind;
}
