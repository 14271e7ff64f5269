using System.IO.Pipelines;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>The whole per-connection NBD protocol: handshake, then transmission.</summary>
public static class NbdSession
{
    /// <summary>
    /// Serves one client over <paramref name="transport"/> until it disconnects, the protocol is violated, or
    /// <paramref name="cancellationToken"/> fires. Never throws for client or transport misbehaviour; completes
    /// both pipes on return.
    /// </summary>
    public static async Task RunAsync(
        IDuplexPipe transport,
        INbdExportCatalog catalog,
        NbdServerOptions options,
        ILogger logger,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);

        NbdMetrics.ConnectionOpened();
        try
        {
            var export = await new NbdHandshake(transport, catalog, options, logger).RunAsync(cancellationToken);
            if (export is null)
            {
                return;
            }

            Log.ExportAttached(logger, export.ExportName, export.Size, (ushort)export.Flags, export.StructuredReplies, export.BaseAllocation);
            await new NbdTransmission(transport, export, options, logger).RunAsync(cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Server shutdown.
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
        {
            // Connection reset or aborted by the transport (ConnectionResetException is an IOException,
            // ConnectionAbortedException an OperationCanceledException).
            Log.TransportError(logger, ex);
        }
        catch (Exception ex)
        {
            Log.SessionFailed(logger, ex);
        }
        finally
        {
            NbdMetrics.ConnectionClosed();
            await transport.Output.CompleteAsync();
            await transport.Input.CompleteAsync();
        }
    }
}
