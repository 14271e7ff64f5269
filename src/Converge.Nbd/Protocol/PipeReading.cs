using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;

namespace Converge.Nbd.Protocol;

/// <summary>Exact-length reads from a <see cref="PipeReader"/> that consume as they copy, so a large payload never
/// has to fit under the pipe's pause threshold.</summary>
internal static class PipeReading
{
    /// <summary>Fills <paramref name="destination"/>; false when the stream ended first (a clean EOF or a truncated message).</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public static async ValueTask<bool> ReadExactAsync(PipeReader reader, Memory<byte> destination, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < destination.Length)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            if (result.IsCanceled)
            {
                reader.AdvanceTo(buffer.Start);
                return false;
            }

            var take = (int)Math.Min(buffer.Length, destination.Length - filled);
            if (take > 0)
            {
                var part = buffer.Slice(0, take);
                part.CopyTo(destination.Span[filled..]);
                filled += take;
                if (take == buffer.Length)
                {
                    reader.AdvanceTo(buffer.End);
                }
                else
                {
                    // Leave the rest unexamined so the next read returns it without waiting.
                    reader.AdvanceTo(part.End);
                }
            }
            else
            {
                reader.AdvanceTo(buffer.Start, buffer.End);
            }

            if (filled < destination.Length && result.IsCompleted && take == buffer.Length)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Consumes and discards <paramref name="count"/> bytes; false when the stream ended first.</summary>
    public static async ValueTask<bool> SkipAsync(PipeReader reader, long count, CancellationToken cancellationToken)
    {
        while (count > 0)
        {
            var result = await reader.ReadAsync(cancellationToken);
            var buffer = result.Buffer;
            if (result.IsCanceled)
            {
                reader.AdvanceTo(buffer.Start);
                return false;
            }

            var take = Math.Min(buffer.Length, count);
            count -= take;
            reader.AdvanceTo(buffer.GetPosition(take));
            if (count > 0 && result.IsCompleted && take == buffer.Length)
            {
                return false;
            }
        }

        return true;
    }
}
