using Microsoft.Extensions.Logging;

namespace Converge.Metadata;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Metadata node {EndPoint} starting (cold start: {ColdStart}) from {Directory}; restored state at index {Index}")]
    public static partial void Starting(ILogger logger, string endPoint, bool coldStart, string directory, long index);

    [LoggerMessage(2, LogLevel.Information, "Metadata leader is now {Leader}")]
    public static partial void LeaderChanged(ILogger logger, string leader);

    [LoggerMessage(3, LogLevel.Error, "Log entry {Index} is not a readable metadata command; skipped on every replica alike")]
    public static partial void UnreadableEntry(ILogger logger, long index, Exception exception);

    [LoggerMessage(4, LogLevel.Warning, "A metadata change handler threw")]
    public static partial void ChangedHandlerFailed(ILogger logger, Exception exception);

    [LoggerMessage(5, LogLevel.Information, "Raft membership change: {Change} {Member}")]
    public static partial void MembershipChange(ILogger logger, string change, string member);

    [LoggerMessage(6, LogLevel.Information, "Metadata node {EndPoint} stopped")]
    public static partial void Stopped(ILogger logger, string endPoint);
}
