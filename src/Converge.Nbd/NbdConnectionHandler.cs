using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>
/// Kestrel entry point: <c>kestrel.Listen(ep, l =&gt; l.UseConnectionHandler&lt;NbdConnectionHandler&gt;())</c>.
/// One instance serves every connection; all per-connection state lives in <see cref="NbdSession"/>.
/// </summary>
public sealed class NbdConnectionHandler : ConnectionHandler
{
    private readonly INbdExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger<NbdConnectionHandler> _logger;

    public NbdConnectionHandler(INbdExportCatalog catalog, NbdServerOptions options, ILogger<NbdConnectionHandler> logger)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        options.Validate();
        _catalog = catalog;
        _options = options;
        _logger = logger;
    }

    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        using var scope = _logger.BeginScope("nbd connection {ConnectionId} from {RemoteEndPoint}", connection.ConnectionId, connection.RemoteEndPoint);
        Log.ConnectionOpened(_logger, connection.ConnectionId, connection.RemoteEndPoint?.ToString() ?? "?");
        try
        {
            // The session ends by itself when the client disconnects or Kestrel aborts the transport;
            // in-flight volume requests are always allowed to finish (NBD_CMD_DISC requires it).
            await NbdSession.RunAsync(connection.Transport, _catalog, _options, _logger, CancellationToken.None);
        }
        finally
        {
            Log.ConnectionClosed(_logger, connection.ConnectionId);
        }
    }
}
