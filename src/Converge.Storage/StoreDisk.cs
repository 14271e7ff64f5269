using System.Text;
using Converge.Common;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Win32.SafeHandles;

namespace Converge.Storage;

/// <summary>
/// One disk file holding many components; see docs/local-store.md. Thread-safe. Dispose only after the front ends
/// stopped issuing I/O: disposal waits for requests in flight, then flushes and checkpoints; later requests fail with
/// <see cref="VolumeError.Unavailable"/>.
/// </summary>
public sealed partial class StoreDisk : IAsyncDisposable
{
    private const int StripeCount = 64;

    private readonly SafeFileHandle _handle;
    private readonly DirectWriter? _direct;
    private readonly StoreDiskOptions _options;
    private readonly ILogger _logger;
    private readonly Layout _layout;
    private readonly Lock _meta = new();
    private readonly Dictionary<Guid, StoreComponent> _components = [];
    private readonly Allocator _allocator;
    private readonly byte[] _scratch = new byte[1024];
    private readonly SemaphoreSlim[] _stripes;
    private readonly CancellationTokenSource _stop = new();
    private Task _background = Task.CompletedTask;
    private long _usedBlocks;
    private long _provisioned;
    private long _checksumErrors;
    private long _ioErrors;
    private int _activeOps;
    private volatile bool _closing;
    private volatile bool _failed;
    private int _disposeState;

    private StoreDisk(string path, SafeFileHandle handle, Superblock superblock, StoreDiskOptions options)
    {
        Path = path;
        _handle = handle;
        _direct = DirectWriter.TryOpen(path);
        _options = options;
        _logger = options.Logger ?? NullLogger.Instance;
        _layout = superblock.Layout;
        Id = superblock.DiskId;
        _allocator = new Allocator(_layout.DataBlocks);
        ReserveBlocks = Math.Min(_layout.DataBlocks / 8, BlockGeometry.MaxRequestBytes >> BlockGeometry.BlockShift);
        _activeSlot = superblock.ActiveSlot;
        _superblockSequence = superblock.Sequence;
        _lastFlushAt = options.Time.GetUtcNow();
        _stripes = new SemaphoreSlim[StripeCount];
        for (var i = 0; i < _stripes.Length; i++)
        {
            _stripes[i] = new SemaphoreSlim(1, 1);
        }
    }

    public Guid Id { get; }

    public string Path { get; }

    public DiskState State => _failed ? DiskState.Failed : DiskState.Online;

    /// <summary>Bytes of the data region.</summary>
    public long CapacityBytes => _layout.DataBytes;

    /// <summary>Mapped data blocks × 4096.</summary>
    public long UsedBytes => Volatile.Read(ref _usedBlocks) << BlockGeometry.BlockShift;

    /// <summary>Sum of component sizes (may exceed capacity: thin provisioning).</summary>
    public long ProvisionedBytes => Volatile.Read(ref _provisioned);

    public long FreeBytes => CapacityBytes - UsedBytes;

    public long ChecksumErrors => Volatile.Read(ref _checksumErrors);

    public long IoErrors => Volatile.Read(ref _ioErrors);

    public IReadOnlyList<StoreComponent> Components
    {
        get
        {
            lock (_meta)
            {
                return [.. _components.Values];
            }
        }
    }

    /// <summary>
    /// Blocks kept back from writes that map new logical blocks, so overwrites (which always need fresh blocks until
    /// the next flush recycles the old ones) still succeed on a disk whose components are full.
    /// </summary>
    internal long ReserveBlocks { get; }

    internal SafeFileHandle Handle => _handle;

    internal Layout DiskLayout => _layout;

    public StoreComponent? FindComponent(Guid id)
    {
        lock (_meta)
        {
            return _components.GetValueOrDefault(id);
        }
    }

    /// <summary>
    /// Creates the file 0600, or opens an existing empty one (made 0600 too); never through a symbolic link, and never
    /// a file with data in it.
    /// </summary>
    private static SafeFileHandle OpenForFormat(string path)
    {
        try
        {
            return Native.OpenDiskFile(path, createNew: true);
        }
        catch (IOException) when (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
        {
            // Exists (or is a link, which the no-follow open below refuses): an empty file is formatted in place.
        }

        var handle = Native.OpenDiskFile(path, createNew: false);
        try
        {
            var length = RandomAccess.GetLength(handle);
            if (length > 0)
            {
                throw new IOException($"refusing to format {path}: the file exists and is not empty ({ByteSize.Format(length)})");
            }

            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(handle, Native.DiskFileMode);
            }

            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public static async Task<StoreDisk> FormatAsync(string path, long sizeBytes, StoreDiskOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        var layout = Layout.Compute(sizeBytes, options.LogBytes);
        using (var handle = OpenForFormat(path))
        {
            RandomAccess.SetLength(handle, sizeBytes);
            var (image, length) = CheckpointImage.Serialize([], 0);
            try
            {
                await RandomAccess.WriteAsync(handle, image.AsMemory(0, length), layout.SlotOffset(0), ct);
                var superblock = new Superblock(Guid.NewGuid(), layout, 0, 0, length, Checksums.Crc32C(image.AsSpan(0, length)), 1);
                var block = new byte[Layout.SuperblockBytes];
                superblock.Write(block);
                await RandomAccess.WriteAsync(handle, block, superblock.FileOffset, ct);
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(image);
            }

            await Task.Run(() => Native.DataSync(handle), ct);
        }

        Native.SyncDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        return await OpenAsync(path, options, ct);
    }

    public async Task<StoreComponent> CreateComponentAsync(Guid id, string name, long sizeBytes, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (sizeBytes <= 0 || sizeBytes % BlockGeometry.BlockSize != 0)
        {
            throw new ArgumentException($"component size {sizeBytes} must be a positive multiple of {BlockGeometry.BlockSize}", nameof(sizeBytes));
        }

        if (name.Length == 0 || Encoding.UTF8.GetByteCount(name) > 255)
        {
            throw new ArgumentException("component name must be 1 to 255 UTF-8 bytes", nameof(name));
        }

        EnterOp();
        try
        {
            StoreComponent component;
            while (true)
            {
                Task wait;
                lock (_meta)
                {
                    if (_components.ContainsKey(id))
                    {
                        throw new InvalidOperationException($"component {id} already exists on disk {Path}");
                    }

                    var length = LogRecord.WriteCreate(_scratch, id, sizeBytes, name);
                    if (HasLogSpaceLocked(length, length))
                    {
                        AppendLocked(_scratch.AsSpan(0, length));
                        component = new StoreComponent(this, id, name, sizeBytes);
                        _components.Add(id, component);
                        _provisioned += sizeBytes;
                        _dirty++;
                        break;
                    }

                    wait = EnsureCheckpointLocked();
                }

                await WaitForCheckpointAsync(wait, ct);
            }

            await FlushCoreAsync(ct);
            return component;
        }
        finally
        {
            ExitOp();
        }
    }

    /// <summary>Grows a component; shrinking is refused with <see cref="ArgumentException"/>.</summary>
    public async Task ResizeComponentAsync(Guid id, long newSizeBytes, CancellationToken ct)
    {
        if (newSizeBytes <= 0 || newSizeBytes % BlockGeometry.BlockSize != 0)
        {
            throw new ArgumentException($"component size {newSizeBytes} must be a positive multiple of {BlockGeometry.BlockSize}", nameof(newSizeBytes));
        }

        EnterOp();
        try
        {
            while (true)
            {
                Task wait;
                lock (_meta)
                {
                    var component = _components.GetValueOrDefault(id) ?? throw new KeyNotFoundException($"no component {id} on disk {Path}");
                    if (newSizeBytes < component.Size)
                    {
                        throw new ArgumentException($"component {id} is {component.Size} bytes; shrinking to {newSizeBytes} is not supported", nameof(newSizeBytes));
                    }

                    if (newSizeBytes == component.Size)
                    {
                        return;
                    }

                    var length = LogRecord.WriteResize(_scratch, id, newSizeBytes);
                    if (HasLogSpaceLocked(length, length))
                    {
                        AppendLocked(_scratch.AsSpan(0, length));
                        _provisioned += newSizeBytes - component.Size;
                        component.SetSize(newSizeBytes);
                        _dirty++;
                        break;
                    }

                    wait = EnsureCheckpointLocked();
                }

                await WaitForCheckpointAsync(wait, ct);
            }

            await FlushCoreAsync(ct);
        }
        finally
        {
            ExitOp();
        }
    }

    /// <summary>Deletes a component and frees its blocks; its requests then fail with <see cref="VolumeError.Unavailable"/>.</summary>
    public async Task DeleteComponentAsync(Guid id, CancellationToken ct)
    {
        EnterOp();
        try
        {
            while (true)
            {
                Task wait;
                lock (_meta)
                {
                    var component = _components.GetValueOrDefault(id) ?? throw new KeyNotFoundException($"no component {id} on disk {Path}");
                    var length = LogRecord.WriteDelete(_scratch, id);
                    if (HasLogSpaceLocked(length, length))
                    {
                        AppendLocked(_scratch.AsSpan(0, length));
                        _components.Remove(id);
                        component.Deleted = true;
                        UnmapRangeLocked(component, 0, component.Size >> BlockGeometry.BlockShift);
                        _provisioned -= component.Size;
                        _dirty++;
                        break;
                    }

                    wait = EnsureCheckpointLocked();
                }

                await WaitForCheckpointAsync(wait, ct);
            }

            await FlushCoreAsync(ct);
        }
        finally
        {
            ExitOp();
        }
    }

    /// <summary>Makes every completed write durable (fdatasync; concurrent callers share one).</summary>
    public Task FlushAsync(CancellationToken ct) => FlushCoreAsync(ct);

    /// <summary>Writes a full metadata image and truncates the log.</summary>
    public Task CheckpointAsync(CancellationToken ct) => CheckpointCoreAsync(ct);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposeState, 1) != 0)
        {
            return;
        }

        _closing = true;
        await _stop.CancelAsync();
        await _background.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        while (Volatile.Read(ref _activeOps) > 0)
        {
            await Task.Delay(1);
        }

        if (!_failed)
        {
            try
            {
                await CheckpointCoreAsync(CancellationToken.None);
            }
            catch (Exception e) when (e is IOException or VolumeException)
            {
                Log.IoError(_logger, Path, e);
            }
        }

        await WaitFlushIdleAsync();
        _direct?.Dispose();
        _handle.Dispose();
        _stop.Dispose();
    }

    /// <summary>Test hook: drops the disk as a crash would (no flush, no checkpoint; the page cache keeps what was written).</summary>
    internal void SimulateCrash()
    {
        _closing = true;
        _disposeState = 1;
        _stop.Cancel();
        _direct?.Dispose();
        _handle.Dispose();
    }

    private void EnterOp()
    {
        Interlocked.Increment(ref _activeOps);
        if (_closing || _failed)
        {
            Interlocked.Decrement(ref _activeOps);
            throw new VolumeException(VolumeError.Unavailable, _failed ? $"disk {Path} has failed" : $"disk {Path} is closed");
        }
    }

    private void ExitOp() => Interlocked.Decrement(ref _activeOps);

    private static async Task WaitForCheckpointAsync(Task checkpoint, CancellationToken ct)
    {
        try
        {
            await checkpoint.WaitAsync(ct);
        }
        catch (IOException e)
        {
            throw new VolumeException(VolumeError.IO, $"metadata log is full and the checkpoint that would free it failed: {e.Message}", e);
        }
    }
}
