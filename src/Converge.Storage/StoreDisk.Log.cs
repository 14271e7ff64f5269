using System.Buffers;
using Converge.Common;

namespace Converge.Storage;

// Metadata log, group-committed flushes and checkpoints.
public sealed partial class StoreDisk
{
    private readonly Lock _flushLock = new();
    private readonly SemaphoreSlim _checkpointGate = new(1, 1);
    private List<BlockRun> _pendingFree = [];
    private List<BlockRun> _pendingPunch = [];
    private long _head;
    private long _tail;
    private long _lastSyncedHead;
    private long _dirty;
    private long _flushedDirty;
    private DateTimeOffset _lastFlushAt;
    private int _activeSlot;
    private long _superblockSequence;
    private Task? _checkpointTask;
    private TaskCompletionSource? _flushBatch;
    private bool _flushRunning;
    private bool _punchWarned;

    internal long LogHead
    {
        get
        {
            lock (_meta)
            {
                return _head;
            }
        }
    }

    internal int CheckpointsWritten { get; private set; }

    internal int FlushesCompleted { get; private set; }

    /// <summary>Room for <paramref name="total"/> bytes of records plus a pad of at most <paramref name="largest"/> before wrapping.</summary>
    private bool HasLogSpaceLocked(int total, int largest) => _head + _logReserved + total + largest - _tail <= _layout.LogBytes;

    /// <summary>One pwrite into the page cache, in LSN order; the caller checked the space.</summary>
    private void AppendLocked(Span<byte> record)
    {
        var position = _head % _layout.LogBytes;
        if (position + record.Length > _layout.LogBytes)
        {
            var remaining = _layout.LogBytes - position;
            if (remaining >= LogRecord.HeaderSize)
            {
                Span<byte> pad = stackalloc byte[LogRecord.HeaderSize];
                LogRecord.WriteHeader(pad, RecordType.Pad, (int)remaining);
                LogRecord.Seal(pad, _head);
                WriteLogLocked(pad, position);
            }

            _head += remaining;
            position = 0;
        }

        LogRecord.Seal(record, _head);
        WriteLogLocked(record, position);
        _head += record.Length;
        if (_head - _tail > _layout.LogBytes / 2)
        {
            _ = EnsureCheckpointLocked();
        }
    }

    private void WriteLogLocked(ReadOnlySpan<byte> data, long position)
    {
        try
        {
            RandomAccess.Write(_handle, data, _layout.LogOffset + position);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The in-memory state may now be ahead of the log: stop serving rather than diverge.
            _failed = true;
            Interlocked.Increment(ref _ioErrors);
            StorageMetrics.IoErrors.Add(1);
            throw new VolumeException(VolumeError.IO, $"writing the metadata log of disk {Path} failed: {e.Message}", e);
        }
    }

    private static void AddRun(List<BlockRun> runs, long physical, int count)
    {
        if (runs.Count > 0)
        {
            var last = runs[^1];
            if (last.Start + last.Count == physical && last.Count + count <= int.MaxValue / 2)
            {
                runs[^1] = last with { Count = last.Count + count };
                return;
            }
        }

        runs.Add(new BlockRun(physical, count));
    }

    internal Task FlushCoreAsync(CancellationToken ct)
    {
        TaskCompletionSource batch;
        var start = false;
        lock (_flushLock)
        {
            _flushBatch ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            batch = _flushBatch;
            if (!_flushRunning)
            {
                _flushRunning = true;
                start = true;
            }
        }

        if (start)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static disk => disk.FlushLoop(), this, preferLocal: false);
        }

        return ct.CanBeCanceled ? batch.Task.WaitAsync(ct) : batch.Task;
    }

    /// <summary>Group commit: one fdatasync at a time; callers arriving meanwhile share the next one.</summary>
    private void FlushLoop()
    {
        while (true)
        {
            TaskCompletionSource? batch;
            lock (_flushLock)
            {
                batch = _flushBatch;
                _flushBatch = null;
                if (batch is null)
                {
                    _flushRunning = false;
                    return;
                }
            }

            try
            {
                SyncOnce();
                batch.TrySetResult();
            }
            catch (Exception e)
            {
                batch.TrySetException(e is VolumeException ? e : new VolumeException(VolumeError.IO, $"flushing disk {Path} failed: {e.Message}", e));
            }
        }
    }

    private void SyncOnce()
    {
        long syncLsn;
        long dirty;
        List<BlockRun>? free = null;
        List<BlockRun>? punch = null;
        if (_options.RewriteInPlace)
        {
            CloseInPlaceWrites();
        }

        lock (_meta)
        {
            if (_options.RewriteInPlace)
            {
                StartInPlaceEpochLocked();
            }

            if (_failed)
            {
                throw new VolumeException(VolumeError.Unavailable, $"disk {Path} has failed");
            }

            syncLsn = _head;
            dirty = _dirty;
            if (_pendingFree.Count > 0)
            {
                free = _pendingFree;
                _pendingFree = [];
            }

            if (_pendingPunch.Count > 0)
            {
                punch = _pendingPunch;
                _pendingPunch = [];
            }
        }

        try
        {
            Native.DataSync(_handle);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // After a failed fdatasync the kernel may have dropped the dirty pages: nothing can be trusted any more.
            _failed = true;
            Interlocked.Increment(ref _ioErrors);
            StorageMetrics.IoErrors.Add(1);
            Log.IoError(_logger, Path, e);
            throw new VolumeException(VolumeError.IO, $"fdatasync of disk {Path} failed: {e.Message}", e);
        }

        StorageMetrics.Flushes.Add(1);

        // Punch before the blocks return to the allocator, or a new write could land in a hole being punched.
        foreach (var run in punch ?? [])
        {
            if (!Native.PunchHole(_handle, _layout.BlockOffset(run.Start), (long)run.Count << BlockGeometry.BlockShift) && !_punchWarned)
            {
                _punchWarned = true;
                Log.PunchUnsupported(_logger, Path);
            }
        }

        lock (_meta)
        {
            foreach (var run in free ?? [])
            {
                _allocator.Release(run.Start, run.Count);
            }

            foreach (var run in punch ?? [])
            {
                _allocator.Release(run.Start, run.Count);
            }

            _flushedDirty = dirty;
            _lastFlushAt = _options.Time.GetUtcNow();
            FlushesCompleted++;
            if (syncLsn > _lastSyncedHead)
            {
                var length = LogRecord.WriteSynced(_scratch, syncLsn);
                if (HasLogSpaceLocked(length, length))
                {
                    AppendLocked(_scratch.AsSpan(0, length));
                    _lastSyncedHead = _head;
                }
            }
        }
    }

    private async Task WaitFlushIdleAsync()
    {
        while (true)
        {
            lock (_flushLock)
            {
                if (!_flushRunning)
                {
                    return;
                }
            }

            await Task.Delay(1);
        }
    }

    private Task EnsureCheckpointLocked()
    {
        if (_checkpointTask is null || _checkpointTask.IsCompleted)
        {
            _checkpointTask = Task.Run(async () =>
            {
                try
                {
                    await CheckpointCoreAsync(CancellationToken.None);
                }
                catch (Exception e)
                {
                    Log.BackgroundFailed(_logger, Path, e);
                    throw;
                }
            });
        }

        return _checkpointTask;
    }

    /// <summary>
    /// Image as of an LSN, fdatasync (everything the image references is then durable), image into the inactive slot,
    /// fdatasync, next superblock copy, fdatasync; only then may the log before that LSN be overwritten.
    /// </summary>
    private async Task CheckpointCoreAsync(CancellationToken ct)
    {
        await _checkpointGate.WaitAsync(ct);
        try
        {
            byte[] image;
            int length;
            long lsn;
            lock (_meta)
            {
                if (_failed)
                {
                    throw new VolumeException(VolumeError.Unavailable, $"disk {Path} has failed");
                }

                lsn = _head;
                (image, length) = CheckpointImage.Serialize(_components.Values, lsn);
            }

            try
            {
                if (length > _layout.SlotBytes)
                {
                    throw new IOException($"metadata image of disk {Path} ({length} bytes) exceeds the checkpoint slot ({_layout.SlotBytes} bytes)");
                }

                await FlushCoreAsync(ct);
                var slot = 1 - _activeSlot;
                await RandomAccess.WriteAsync(_handle, image.AsMemory(0, length), _layout.SlotOffset(slot), ct);
                await Task.Run(() => Native.DataSync(_handle), ct);
                var superblock = new Superblock(Id, _layout, slot, lsn, length, Checksums.Crc32C(image.AsSpan(0, length)), _superblockSequence + 1);
                var block = ArrayPool<byte>.Shared.Rent((int)Layout.SuperblockBytes);
                try
                {
                    superblock.Write(block);
                    await RandomAccess.WriteAsync(_handle, block.AsMemory(0, (int)Layout.SuperblockBytes), superblock.FileOffset, ct);
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(block);
                }

                await Task.Run(() => Native.DataSync(_handle), ct);
                lock (_meta)
                {
                    _activeSlot = slot;
                    _superblockSequence = superblock.Sequence;
                    _tail = lsn;
                    CheckpointsWritten++;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(image);
            }
        }
        finally
        {
            _checkpointGate.Release();
        }
    }

    private static long SumBlocks(List<BlockRun> runs)
    {
        long total = 0;
        foreach (var run in runs)
        {
            total += run.Count;
        }

        return total;
    }

    /// <summary>
    /// The background flusher recycles superseded blocks at once when they reach this fraction (1/N) of the data region.
    /// Not sooner: every flush forces all dirty data of the disk to media, and it ends the in-place epoch, so the next
    /// overwrite of every block is redirected again and supersedes one more block. With 1/16, a 1 GiB working set on an
    /// 8 GiB disk flushed twice a second under sequential overwrites (17 fdatasyncs in 8 s) and cost 1441-1463 µs of
    /// host CPU per replicated MiB; with 1/4 it settled into in-place rewrites (0-2 fdatasyncs, 1203-1238 µs per MiB).
    /// Free space running low still flushes at once.
    /// </summary>
    private const int RecycleFlushDivisor = 4;

    private async Task BackgroundLoopAsync(CancellationToken ct)
    {
        var interval = _options.BackgroundFlushInterval;
        if (interval <= TimeSpan.Zero)
        {
            return;
        }

        using var timer = new PeriodicTimer(interval, _options.Time);
        try
        {
            while (await timer.WaitForNextTickAsync(ct))
            {
                bool due;
                lock (_meta)
                {
                    var unflushed = _dirty != _flushedDirty || _pendingFree.Count > 0 || _pendingPunch.Count > 0;
                    var waiting = SumBlocks(_pendingFree) + SumBlocks(_pendingPunch);
                    var pressure = waiting > 0 &&
                        (waiting >= _layout.DataBlocks / RecycleFlushDivisor || _allocator.FreeBlocks < _layout.DataBlocks / 8);
                    var aged = unflushed && _options.Time.GetUtcNow() - _lastFlushAt >= _options.MaxUnflushedAge;
                    due = pressure || aged;
                }

                if (due && !_failed)
                {
                    try
                    {
                        await FlushCoreAsync(ct);
                    }
                    catch (VolumeException e)
                    {
                        Log.BackgroundFailed(_logger, Path, e);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}
