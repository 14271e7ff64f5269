using System.Net.Sockets;
using Converge.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>The whole per-connection NBD protocol: handshake, then transmission.</summary>
public static class NbdSession
{
    /// <summary>
    /// Serves one client over <paramref name="socket"/> until it disconnects, the protocol is violated, or
    /// <paramref name="cancellationToken"/> fires (then it stops reading new requests, and the ones in flight still
    /// finish and are answered, as NBD_CMD_DISC requires). Never throws for client or transport misbehaviour; closes
    /// and disposes the socket on return.
    /// </summary>
    public static async Task RunAsync(
        Socket socket,
        INbdExportCatalog catalog,
        NbdServerOptions options,
        ILogger logger,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);

        NbdMetrics.ConnectionOpened();
        using var connection = new NbdConnection(socket);
        try
        {
            var export = await new NbdHandshake(connection, catalog, options, logger).RunAsync(cancellationToken);
            if (export is null)
            {
                return;
            }

            Log.ExportAttached(logger, export.ExportName, export.Size, (ushort)export.Flags, export.StructuredReplies, export.BaseAllocation);
            using (WatchIdle(connection, options, logger))
            {
                await new NbdTransmission(connection, export, options, logger).RunAsync(cancellationToken);
            }

            // Spec (NBD_CMD_DISC): close the TLS session, then the TCP connection.
            await connection.Transport.CloseTlsAsync(TimeSpan.FromSeconds(1));
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Server shutdown.
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
            // Connection reset, or cut by the listener when shutdown ran out of time.
            Log.TransportError(logger, ex);
        }
        catch (Exception ex)
        {
            Log.SessionFailed(logger, ex);
        }
        finally
        {
            NbdMetrics.ConnectionClosed();
        }
    }

    /// <summary>
    /// Closes a transmission-phase connection that received nothing for <see cref="NbdServerOptions.IdleTimeout"/>.
    /// The reader only counts its receives; a timer at a quarter of the timeout compares the count, so the data path
    /// reads no clock.
    /// </summary>
    private static ITimer? WatchIdle(NbdConnection connection, NbdServerOptions options, ILogger logger)
    {
        if (options.IdleTimeout == Timeout.InfiniteTimeSpan)
        {
            return null;
        }

        var period = options.IdleTimeout / 4;
        var last = connection.Receives;
        var quiet = 0;
        return options.Time.CreateTimer(
            _ =>
            {
                var now = connection.Receives;
                if (now != last)
                {
                    last = now;
                    quiet = 0;
                    return;
                }

                if (++quiet == 4)
                {
                    Log.IdleTimedOut(logger, options.IdleTimeout);
                    connection.Shutdown();
                }
            },
            null,
            period,
            period);
    }
}
