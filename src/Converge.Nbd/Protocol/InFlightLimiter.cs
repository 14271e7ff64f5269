namespace Converge.Nbd.Protocol;

/// <summary>
/// Bounds the requests and payload bytes one connection has in flight. Only the connection's reader loop
/// acquires (so at most one waiter); completions release from any thread.
/// </summary>
internal sealed class InFlightLimiter
{
    private readonly Lock _gate = new();
    private readonly int _maxCount;
    private readonly long _maxBytes;
    private int _count;
    private long _bytes;
    private TaskCompletionSource? _waiter;

    public InFlightLimiter(int maxCount, long maxBytes)
    {
        _maxCount = maxCount;
        _maxBytes = maxBytes;
    }

    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _count;
            }
        }
    }

    public ValueTask AcquireAsync(long bytes, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (TryAdmit(bytes))
            {
                return ValueTask.CompletedTask;
            }
        }

        return AcquireSlowAsync(bytes, cancellationToken);
    }

    public void Release(long bytes)
    {
        TaskCompletionSource? waiter;
        lock (_gate)
        {
            _count--;
            _bytes -= bytes;
            waiter = _waiter;
            _waiter = null;
        }

        waiter?.TrySetResult();
    }

    /// <summary>Completes once nothing is in flight.</summary>
    public async Task WaitIdleAsync()
    {
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                if (_count == 0)
                {
                    return;
                }

                wait = Waiter();
            }

            await wait;
        }
    }

    private async ValueTask AcquireSlowAsync(long bytes, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                if (TryAdmit(bytes))
                {
                    return;
                }

                wait = Waiter();
            }

            await wait.WaitAsync(cancellationToken);
        }
    }

    private Task Waiter() => (_waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    private bool TryAdmit(long bytes)
    {
        // A lone request is always admitted, whatever its size, so progress is guaranteed.
        if (_count == 0 || (_count < _maxCount && _bytes + bytes <= _maxBytes))
        {
            _count++;
            _bytes += bytes;
            return true;
        }

        return false;
    }
}
