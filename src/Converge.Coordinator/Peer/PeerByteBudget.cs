namespace Converge.Coordinator.Peer;

/// <summary>
/// Bounds the bytes one peer connection holds (request payloads and reply buffers, until the reply is sent). Only the
/// connection's reader acquires (so at most one waiter); sends and completions release from any thread. A request
/// larger than the whole budget is charged the whole budget, so it still runs (alone).
/// </summary>
internal sealed class PeerByteBudget
{
    private readonly Lock _gate = new();
    private readonly long _max;
    private long _used;
    private long _wanted;
    private TaskCompletionSource? _waiter;

    public PeerByteBudget(long max)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(max, 1);
        _max = max;
    }

    /// <summary>What a request of <paramref name="bytes"/> is charged.</summary>
    public long Charge(long bytes) => Math.Min(bytes, _max);

    /// <summary>Takes <paramref name="charge"/> (from <see cref="Charge"/>) when it fits.</summary>
    public bool TryAcquire(long charge)
    {
        lock (_gate)
        {
            if (_used + charge > _max)
            {
                return false;
            }

            _used += charge;
            return true;
        }
    }

    /// <summary>Waits until <paramref name="charge"/> fits, and takes it.</summary>
    public Task AcquireAsync(long charge, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (_used + charge <= _max)
            {
                _used += charge;
                return Task.CompletedTask;
            }

            _wanted = charge;
            _waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _waiter.Task.WaitAsync(cancellationToken);
        }
    }

    public void Release(long charge)
    {
        if (charge == 0)
        {
            return;
        }

        TaskCompletionSource? wake = null;
        lock (_gate)
        {
            _used -= charge;
            if (_waiter is not null && _used + _wanted <= _max)
            {
                _used += _wanted;
                wake = _waiter;
                _waiter = null;
            }
        }

        wake?.TrySetResult();
    }
}
