using Microsoft.Extensions.Logging;

namespace Converge.Coordinator;

internal static partial class Log
{
    [LoggerMessage(EventId = 1, Level = LogLevel.Warning, Message = "malformed peer frame; closing the connection")]
    public static partial void MalformedPeerFrame(ILogger logger);

    [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "peer connection ended: {Reason}")]
    public static partial void PeerConnectionFailed(ILogger logger, string reason);

    [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "peer request {Op} failed unexpectedly")]
    public static partial void PeerRequestFailed(ILogger logger, string op, Exception exception);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "peer {Op} at offset {Offset} ({Length} bytes) arrived damaged (payload checksum mismatch); refused, the sender retries")]
    public static partial void PeerPayloadCorrupt(ILogger logger, string op, long offset, int length);

    // 40-49: peer TLS (issue 17).
    [LoggerMessage(EventId = 40, Level = LogLevel.Warning, Message = "peer connection from {RemoteEndPoint} refused: TLS handshake failed: {Reason}")]
    public static partial void PeerTlsRefused(ILogger logger, string remoteEndPoint, string reason);
}
