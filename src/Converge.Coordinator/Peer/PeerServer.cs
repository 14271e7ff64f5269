using System.Buffers;
using System.IO.Pipelines;
using Converge.Common;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;

namespace Converge.Coordinator.Peer;

/// <summary>Outcome of one peer request: <see cref="Status"/> 0 or a VolumeError + 1, and reply payload bytes.</summary>
public readonly record struct PeerResult(int Status, int Length)
{
    public static readonly PeerResult Ok = new(0, 0);

    public static PeerResult Error(VolumeError error) => new((int)error + 1, 0);
}

/// <summary>What a host does with requests from its peers (component I/O, component lifecycle, stats).</summary>
public interface IPeerRequestHandler
{
    /// <summary>Bytes of reply payload a request may produce (READ: its length; stats: a bound).</summary>
    int ReplyCapacity(in PeerRequestHeader header);

    ValueTask<PeerResult> HandleAsync(PeerRequestHeader header, ReadOnlyMemory<byte> payload, Memory<byte> reply, CancellationToken cancellationToken);
}

/// <summary>Kestrel entry point for the peer data port.</summary>
public sealed class PeerConnectionHandler(IPeerRequestHandler handler, ILogger<PeerConnectionHandler> logger) : ConnectionHandler
{
    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        ArgumentNullException.ThrowIfNull(connection);

        // Stop on abort or when the server asks connections to close (shutdown); in-flight requests still finish.
        var closeRequested = connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested ?? CancellationToken.None;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed, closeRequested);
        await PeerSession.RunAsync(connection.Transport, handler, logger, stop.Token);
    }
}

/// <summary>
/// One peer connection: a reader loop that dispatches each request as it arrives (many in flight) and replies in
/// completion order under a write lock. A malformed frame closes the connection; handler errors become statuses.
/// </summary>
public static class PeerSession
{
    private const int MaxInFlight = 128;
    private const int MaxPayload = BlockGeometry.MaxRequestBytes + (1 << 20);

    public static async Task RunAsync(IDuplexPipe transport, IPeerRequestHandler handler, ILogger logger, CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        using var writeLock = new SemaphoreSlim(1, 1);
        using var slots = new SemaphoreSlim(MaxInFlight, MaxInFlight);
        var inFlight = new List<Task>();
        var reader = transport.Input;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                var result = await reader.ReadAsync(stop.Token);
                var buffer = result.Buffer;
                while (true)
                {
                    var probe = buffer;
                    if (!PeerRequestHeader.TryRead(ref probe, out var header, out var malformed))
                    {
                        if (malformed)
                        {
                            Log.MalformedPeerFrame(logger);
                            return;
                        }

                        break;
                    }

                    var payloadLength = header.PayloadLength;
                    if (payloadLength > MaxPayload || header.Length > MaxPayload)
                    {
                        Log.MalformedPeerFrame(logger);
                        return;
                    }

                    if (probe.Length < payloadLength)
                    {
                        break;
                    }

                    var payload = payloadLength == 0 ? null : ArrayPool<byte>.Shared.Rent(payloadLength);
                    if (payload is not null)
                    {
                        probe.Slice(0, payloadLength).CopyTo(payload);
                    }

                    buffer = probe.Slice(payloadLength);
                    await slots.WaitAsync(stop.Token);
                    inFlight.RemoveAll(t => t.IsCompleted);
                    inFlight.Add(ServeAsync(header, payload, payloadLength, transport.Output, handler, writeLock, slots, logger, stop.Token));
                }

                reader.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (ex is IOException or ConnectionResetException or InvalidOperationException)
        {
            Log.PeerConnectionFailed(logger, ex.Message);
        }
        finally
        {
            await Task.WhenAll(inFlight).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            await stop.CancelAsync();
            await reader.CompleteAsync();
            await transport.Output.CompleteAsync();
        }
    }

    private static async Task ServeAsync(
        PeerRequestHeader header, byte[]? payload, int payloadLength, PipeWriter output, IPeerRequestHandler handler,
        SemaphoreSlim writeLock, SemaphoreSlim slots, ILogger logger, CancellationToken cancellationToken)
    {
        var capacity = Math.Clamp(handler.ReplyCapacity(header), 0, MaxPayload);
        var reply = capacity == 0 ? null : ArrayPool<byte>.Shared.Rent(capacity);
        try
        {
            PeerResult result;
            try
            {
                result = await handler.HandleAsync(
                    header, payload.AsMemory(0, payloadLength), reply.AsMemory(0, capacity), cancellationToken);
            }
            catch (VolumeException ex)
            {
                result = PeerResult.Error(ex.Error);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // A bug in one request must not take down the connection's other requests.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.PeerRequestFailed(logger, header.Op.ToString(), ex);
                result = PeerResult.Error(VolumeError.IO);
            }

            var length = result.Status == 0 ? Math.Clamp(result.Length, 0, capacity) : 0;
            await writeLock.WaitAsync(cancellationToken);
            try
            {
                var span = output.GetSpan(PeerReplyHeader.Size);
                new PeerReplyHeader(header.RequestId, result.Status, length).Write(span);
                output.Advance(PeerReplyHeader.Size);
                if (length > 0)
                {
                    output.Write(reply.AsSpan(0, length));
                }

                await output.FlushAsync(cancellationToken);
            }
            finally
            {
                writeLock.Release();
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception ex) when (ex is IOException or ConnectionResetException or InvalidOperationException)
        {
            Log.PeerConnectionFailed(logger, ex.Message);
        }
        finally
        {
            if (payload is not null)
            {
                ArrayPool<byte>.Shared.Return(payload);
            }

            if (reply is not null)
            {
                ArrayPool<byte>.Shared.Return(reply);
            }

            slots.Release();
        }
    }
}
