using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Debug, "NBD connection {ConnectionId} opened from {RemoteEndPoint}")]
    public static partial void ConnectionOpened(ILogger logger, string connectionId, string remoteEndPoint);

    [LoggerMessage(2, LogLevel.Debug, "NBD connection {ConnectionId} closed")]
    public static partial void ConnectionClosed(ILogger logger, string connectionId);

    [LoggerMessage(3, LogLevel.Information, "NBD handshake timed out after {Timeout}")]
    public static partial void HandshakeTimedOut(ILogger logger, TimeSpan timeout);

    [LoggerMessage(4, LogLevel.Information, "NBD handshake ended: {Reason}")]
    public static partial void HandshakeEnded(ILogger logger, string reason);

    [LoggerMessage(5, LogLevel.Information, "NBD client asked for unknown export '{ExportName}'")]
    public static partial void ExportNotFound(ILogger logger, string exportName);

    [LoggerMessage(6, LogLevel.Information, "NBD client attached to export '{ExportName}' ({Size} bytes, flags 0x{Flags:x4}, structured replies {Structured}, base:allocation {BlockStatus})")]
    public static partial void ExportAttached(ILogger logger, string exportName, long size, ushort flags, bool structured, bool blockStatus);

    [LoggerMessage(7, LogLevel.Debug, "NBD option {Option} (length {Length}) answered with {Reply}")]
    public static partial void OptionRejected(ILogger logger, uint option, uint length, string reply);

    [LoggerMessage(8, LogLevel.Warning, "NBD request with bad magic 0x{Magic:x8}; disconnecting")]
    public static partial void BadRequestMagic(ILogger logger, uint magic);

    [LoggerMessage(9, LogLevel.Information, "NBD client disconnected with {InFlight} request(s) still in flight")]
    public static partial void ClientVanished(ILogger logger, int inFlight);

    [LoggerMessage(10, LogLevel.Information, "NBD client sent NBD_CMD_DISC")]
    public static partial void ClientDisconnectRequested(ILogger logger);

    [LoggerMessage(11, LogLevel.Warning, "NBD write of {Length} bytes exceeds the {Max}-byte maximum payload; payload discarded, EINVAL returned")]
    public static partial void OversizedWrite(ILogger logger, uint length, int max);

    [LoggerMessage(12, LogLevel.Debug, "NBD {Command} offset {Offset} length {Length} rejected with {Error}: {Message}")]
    public static partial void RequestRejected(ILogger logger, string command, ulong offset, uint length, string error, string message);

    [LoggerMessage(13, LogLevel.Warning, "NBD {Command} offset {Offset} length {Length} failed with {Error}: {Message}")]
    public static partial void VolumeFailed(ILogger logger, string command, ulong offset, uint length, string error, string message);

    [LoggerMessage(14, LogLevel.Error, "NBD {Command} offset {Offset} length {Length}: unexpected exception from the volume (bug); replied EIO")]
    public static partial void VolumeBug(ILogger logger, Exception exception, string command, ulong offset, uint length);

    [LoggerMessage(15, LogLevel.Debug, "NBD reply to {Command} could not be sent; the client is gone")]
    public static partial void ReplyFailed(ILogger logger, Exception exception, string command);

    [LoggerMessage(16, LogLevel.Debug, "NBD connection ended by transport error")]
    public static partial void TransportError(ILogger logger, Exception exception);

    [LoggerMessage(17, LogLevel.Error, "NBD session failed unexpectedly")]
    public static partial void SessionFailed(ILogger logger, Exception exception);

    [LoggerMessage(18, LogLevel.Warning, "NBD accept failed: {Reason}")]
    public static partial void AcceptFailed(ILogger logger, string reason);

    // 40-49: TLS and access control (issue 17).
    [LoggerMessage(40, LogLevel.Information, "NBD TLS established ({Protocol}, {Cipher}); client: {Identity}")]
    public static partial void TlsEstablished(ILogger logger, string protocol, string cipher, string identity);

    [LoggerMessage(41, LogLevel.Warning, "NBD export '{ExportName}' refused to {Identity} by its access list")]
    public static partial void ExportRefused(ILogger logger, string exportName, string identity);

    [LoggerMessage(42, LogLevel.Information, "NBD connection idle for {Timeout}; closing it")]
    public static partial void IdleTimedOut(ILogger logger, TimeSpan timeout);
}
