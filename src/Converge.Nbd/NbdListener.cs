using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Converge.Common;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>
/// The NBD port: one <see cref="NbdSession"/> per connection on the raw socket (<see cref="SocketListener"/>).
/// Stopping ends every session's reading; requests already running still finish and are answered, then the
/// connections close.
/// </summary>
public sealed class NbdListener : SocketListener
{
    private readonly INbdExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;
    private long _connectionIds;

    public NbdListener(EndPoint endPoint, INbdExportCatalog catalog, NbdServerOptions options, ILogger<NbdListener> logger)
        : base(endPoint, "NBD clients")
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        options.Validate();
        _catalog = catalog;
        _options = options;
        _logger = logger;
        Logger = logger;
    }

    protected override void OnAcceptFailed(SocketException exception) => Log.AcceptFailed(_logger, exception.Message);

    protected override async Task ServeAsync(Socket connection)
    {
        var id = "nbd-" + Interlocked.Increment(ref _connectionIds).ToString(CultureInfo.InvariantCulture);
        var remote = connection.RemoteEndPoint?.ToString() ?? "?";
        using var scope = _logger.BeginScope("nbd connection {ConnectionId} from {RemoteEndPoint}", id, remote);
        Log.ConnectionOpened(_logger, id, remote);
        try
        {
            await NbdSession.RunAsync(connection, _catalog, _options, _logger, Stopping);
        }
        finally
        {
            Log.ConnectionClosed(_logger, id);
        }
    }
}
