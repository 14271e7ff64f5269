using Converge.Common;
using Microsoft.Win32.SafeHandles;

namespace Converge.Nbd.Tests;

/// <summary>
/// Test-only <see cref="IBlockVolume"/> over a sparse temp file (RandomAccess), with an in-memory 4 KiB allocation
/// map for block status, counters for assertions, fault injection and an optional gate that holds requests.
/// </summary>
internal sealed class TestVolume : IBlockVolume, IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly string _path;
    private readonly bool[] _allocated;
    private readonly Lock _gate = new();
    private int _flushes;
    private int _fuaWrites;

    public TestVolume(string name, long size, VolumeCapabilities capabilities = AllCapabilities)
    {
        Name = name;
        Size = size;
        Capabilities = capabilities;
        _path = Path.Combine(Path.GetTempPath(), $"converge-nbd-{name}-{Guid.NewGuid():N}.img");
        _file = File.OpenHandle(_path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);

        // Unlinked at once: the open handle keeps the data, and nothing is left behind even if a test never disposes.
        File.Delete(_path);
        RandomAccess.SetLength(_file, size);
        _allocated = new bool[(size + BlockGeometry.BlockSize - 1) / BlockGeometry.BlockSize];
    }

    public const VolumeCapabilities AllCapabilities =
        VolumeCapabilities.Flush | VolumeCapabilities.Fua | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes
        | VolumeCapabilities.FastZero | VolumeCapabilities.BlockStatus | VolumeCapabilities.MultiConn;

    public string Name { get; }

    public long Size { get; }

    public VolumeCapabilities Capabilities { get; }

    public int Flushes => Volatile.Read(ref _flushes);

    public int FuaWrites => Volatile.Read(ref _fuaWrites);

    /// <summary>When set, every data request touching this byte fails with <see cref="FailWith"/>.</summary>
    public long? FailAt { get; set; }

    public VolumeError FailWith { get; set; } = VolumeError.IO;

    /// <summary>When set, writes wait for this task before doing anything.</summary>
    public Task? WriteGate { get; set; }

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        Check(offset, buffer.Length);
        var done = 0;
        while (done < buffer.Length)
        {
            var n = await RandomAccess.ReadAsync(_file, buffer[done..], offset + done, cancellationToken);
            if (n == 0)
            {
                buffer.Span[done..].Clear();
                break;
            }

            done += n;
        }
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken)
    {
        if (WriteGate is { } gate)
        {
            await gate;
        }

        Check(offset, data.Length);
        await RandomAccess.WriteAsync(_file, data, offset, cancellationToken);
        Mark(offset, data.Length, allocated: true, partialToo: true);
        if ((flags & WriteFlags.Fua) != 0)
        {
            Interlocked.Increment(ref _fuaWrites);
        }
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _flushes);
        RandomAccess.FlushToDisk(_file);
        return ValueTask.CompletedTask;
    }

    public async ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken)
    {
        Check(offset, length);
        await WriteZerosAsync(offset, length, cancellationToken);
        Mark(offset, length, allocated: false, partialToo: false);
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken)
    {
        Check(offset, length);
        var noHole = (flags & ZeroFlags.NoHole) != 0;
        if ((flags & ZeroFlags.FastZero) != 0 && noHole)
        {
            throw new VolumeException(VolumeError.NotSupported, "fast zero with NO_HOLE would need real writes");
        }

        await WriteZerosAsync(offset, length, cancellationToken);
        Mark(offset, length, allocated: noHole, partialToo: noHole);
    }

    public ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken)
    {
        Check(offset, length);
        var extents = new List<AllocationExtent>();
        lock (_gate)
        {
            var end = Math.Min(Size, offset + length);
            var position = offset;
            while (position < end)
            {
                var block = position / BlockGeometry.BlockSize;
                var state = _allocated[block];
                var next = (block + 1) * BlockGeometry.BlockSize;
                while (next < Size && _allocated[next / BlockGeometry.BlockSize] == state)
                {
                    next += BlockGeometry.BlockSize;
                }

                next = Math.Min(next, Size);
                extents.Add(new AllocationExtent(next - position, state ? AllocationFlags.Data : AllocationFlags.Hole | AllocationFlags.Zero));
                position = next;
            }
        }

        return ValueTask.FromResult<IReadOnlyList<AllocationExtent>>(extents);
    }

    public void Dispose() => _file.Dispose();

    private async ValueTask WriteZerosAsync(long offset, long length, CancellationToken cancellationToken)
    {
        var zeros = new byte[Math.Min(length, 1 << 20)];
        while (length > 0)
        {
            var n = (int)Math.Min(length, zeros.Length);
            await RandomAccess.WriteAsync(_file, zeros.AsMemory(0, n), offset, cancellationToken);
            offset += n;
            length -= n;
        }
    }

    private void Check(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Size)
        {
            throw new VolumeException(VolumeError.OutOfRange, $"{offset}+{length} outside {Size}");
        }

        if (FailAt is { } at && at >= offset && at < offset + length)
        {
            throw new VolumeException(FailWith, $"injected failure at {at}");
        }
    }

    private void Mark(long offset, long length, bool allocated, bool partialToo)
    {
        lock (_gate)
        {
            var first = partialToo ? offset / BlockGeometry.BlockSize : (offset + BlockGeometry.BlockSize - 1) / BlockGeometry.BlockSize;
            var last = partialToo ? (offset + length - 1) / BlockGeometry.BlockSize : ((offset + length) / BlockGeometry.BlockSize) - 1;
            for (var b = first; b <= last && b < _allocated.Length; b++)
            {
                _allocated[b] = allocated;
            }
        }
    }
}

/// <summary>A mutable catalog the tests add volumes to.</summary>
internal sealed class TestCatalog : INbdExportCatalog
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, (IBlockVolume Volume, string Description)> _exports = new(StringComparer.Ordinal);

    public TestVolume Add(string name, long size, VolumeCapabilities capabilities = TestVolume.AllCapabilities, string description = "")
    {
        var volume = new TestVolume(name, size, capabilities);
        lock (_gate)
        {
            _exports.Add(name, (volume, description));
        }

        return volume;
    }

    public IReadOnlyList<NbdExportInfo> ListExports()
    {
        lock (_gate)
        {
            return _exports.Select(e => new NbdExportInfo(e.Key, e.Value.Description)).ToList();
        }
    }

    public ValueTask<IBlockVolume?> FindExportAsync(string name, CancellationToken cancellationToken) => ValueTask.FromResult(FindExport(name));

    private IBlockVolume? FindExport(string name)
    {
        lock (_gate)
        {
            if (name.Length == 0)
            {
                return _exports.Count == 1 ? _exports.Values.First().Volume : null;
            }

            return _exports.TryGetValue(name, out var e) ? e.Volume : null;
        }
    }
}
