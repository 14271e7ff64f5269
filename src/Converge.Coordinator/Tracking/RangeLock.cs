namespace Converge.Coordinator.Tracking;

/// <summary>
/// Keeps copies (resync, repair, reconcile) and client writes of the same range apart: a copy reads one replica and
/// writes another, so a client write landing between the two would be overwritten with older data. Client writes
/// share a range with each other; a copy holds its range alone. Ranges are 1-D keys (see <see cref="Key"/>).
/// </summary>
public sealed class RangeLock
{
    private readonly Lock gate = new();
    private readonly List<Holder> held = [];
    private readonly List<(Holder Holder, TaskCompletionSource Ready)> waiting = [];

    /// <summary>A stripe offset as a key that never collides across stripes (stripes are below 2^48 bytes).</summary>
    public static long Key(int stripe, long stripeOffset) => ((long)stripe << 48) | stripeOffset;

    public async ValueTask<Releaser> AcquireAsync(long start, long end, bool exclusive, CancellationToken cancellationToken)
    {
        var holder = new Holder(start, end, exclusive);
        TaskCompletionSource ready;
        lock (gate)
        {
            if (!Conflicts(holder) && (exclusive || !waiting.Exists(w => w.Holder.Exclusive && w.Holder.Overlaps(holder))))
            {
                held.Add(holder);
                return new Releaser(this, holder);
            }

            ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            waiting.Add((holder, ready));
        }

        try
        {
            await ready.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            lock (gate)
            {
                if (waiting.RemoveAll(w => ReferenceEquals(w.Holder, holder)) == 0)
                {
                    // Granted just as we gave up: hand it back.
                    Release(holder);
                }
            }

            throw;
        }

        return new Releaser(this, holder);
    }

    private bool Conflicts(Holder candidate) =>
        held.Exists(h => h.Overlaps(candidate) && (h.Exclusive || candidate.Exclusive));

    private void Release(Holder holder)
    {
        lock (gate)
        {
            held.Remove(holder);
            for (var i = 0; i < waiting.Count; i++)
            {
                var (next, ready) = waiting[i];
                if (!Conflicts(next))
                {
                    held.Add(next);
                    waiting.RemoveAt(i--);
                    ready.TrySetResult();
                }
            }
        }
    }

    public readonly struct Releaser(RangeLock owner, object holder) : IDisposable
    {
        public void Dispose() => owner.Release((Holder)holder);
    }

    private sealed record Holder(long Start, long End, bool Exclusive)
    {
        public bool Overlaps(Holder other) => Start < other.End && other.Start < End;
    }
}
