using Converge.Common;
using Converge.Coordinator.Tracking;

namespace Converge.Coordinator.Tests;

/// <summary>
/// A component in memory. With <paramref name="yields"/> every operation first yields, as a remote one would, so that
/// concurrent writes and copies interleave. <paramref name="writeOrder"/>, when given, gets the component's id as each
/// write is issued (shared by the components of one volume, it shows the order the coordinator issued them in).
/// </summary>
internal sealed class MemoryReplica(Guid id, int size, bool yields = false, bool isLocal = true, System.Collections.Concurrent.ConcurrentQueue<Guid>? writeOrder = null)
    : IReplicaComponent
{
    public byte[] Bytes { get; } = new byte[size];

    public int Reads { get; private set; }

    public int Writes => Volatile.Read(ref writes);

    private int writes;

    public Guid ComponentId => id;

    public bool IsLocal => isLocal;

    public string Name => id.ToString("N");

    public long Size => Bytes.Length;

    public VolumeCapabilities Capabilities => VolumeCapabilities.Flush | VolumeCapabilities.Trim | VolumeCapabilities.WriteZeroes;

    public async ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        await YieldAsync();
        Reads++;
        Bytes.AsMemory((int)offset, buffer.Length).CopyTo(buffer);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, CancellationToken cancellationToken) =>
        WriteAsync(offset, data, flags, ChangeKinds.None, cancellationToken);

    /// <summary>The block checksums the coordinator passed with the last write (empty: the write came without).</summary>
    public uint[] LastBlockCrcs { get; private set; } = [];

    public ValueTask WriteAsync(
        long offset, ReadOnlyMemory<byte> data, ReadOnlyMemory<uint> blockCrcs, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        LastBlockCrcs = blockCrcs.ToArray();
        return WriteCoreAsync(offset, data, cancellationToken);
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        LastBlockCrcs = [];
        return WriteCoreAsync(offset, data, cancellationToken);
    }

    private async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        writeOrder?.Enqueue(id);
        await YieldAsync();
        Interlocked.Increment(ref writes);
        data.CopyTo(Bytes.AsMemory((int)offset));
    }

    public ValueTask FlushAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, CancellationToken cancellationToken) =>
        TrimAsync(offset, length, flags, ChangeKinds.None, cancellationToken);

    public ValueTask TrimAsync(long offset, long length, WriteFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        Array.Clear(Bytes, (int)offset, (int)length);
        return ValueTask.CompletedTask;
    }

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, CancellationToken cancellationToken) =>
        WriteZeroesAsync(offset, length, flags, ChangeKinds.None, cancellationToken);

    public ValueTask WriteZeroesAsync(long offset, long length, ZeroFlags flags, ChangeKinds track, CancellationToken cancellationToken)
    {
        Array.Clear(Bytes, (int)offset, (int)length);
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<AllocationExtent>> GetAllocationAsync(long offset, long length, CancellationToken cancellationToken) =>
        ValueTask.FromResult<IReadOnlyList<AllocationExtent>>([new AllocationExtent(length, AllocationFlags.Data)]);

    public ValueTask<List<ChangedRange>> ReadChangesAsync(ChangeKinds kinds, CancellationToken cancellationToken) => ValueTask.FromResult(new List<ChangedRange>());

    public ValueTask ClearChangesAsync(ChangeKinds kinds, long offset, long length, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    private ValueTask YieldAsync() => yields ? PauseAsync() : ValueTask.CompletedTask;

    private static async ValueTask PauseAsync()
    {
        if (Random.Shared.Next(8) == 0)
        {
            await Task.Delay(1);
        }
        else
        {
            await Task.Yield();
        }
    }
}
