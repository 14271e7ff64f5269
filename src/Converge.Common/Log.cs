using Microsoft.Extensions.Logging;

namespace Converge.Common;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Warning, "refused {Count} connection(s) from {Purpose} over the connection limits since the last report (at most one every 10 s); the last from {Address}: {Reason}")]
    public static partial void ConnectionsRefused(ILogger logger, long count, string purpose, string address, string reason);
}
