using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
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
            // The session ends when the client disconnects, Kestrel aborts the transport, or the server asks connections
            // to close (shutdown): then it stops reading new requests, and in-flight ones still finish, as
            // NBD_CMD_DISC requires, so an idle client cannot hold up a host's flush-and-exit.
            var closeRequested = connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
                ?? CancellationToken.None;
            await NbdSession.RunAsync(connection.Transport, _catalog, _options, _logger, closeRequested);
        }
        finally
        {
            Log.ConnectionClosed(_logger, connection.ConnectionId);
        }
    }
}
