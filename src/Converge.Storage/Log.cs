using Microsoft.Extensions.Logging;

namespace Converge.Storage;

internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Opened disk {Path} ({DiskId}): {Components} components, {UsedBytes} bytes used; replayed {Records} log records, {Rejected} unsynced blocks rejected")]
    public static partial void Opened(ILogger logger, string path, Guid diskId, int components, long usedBytes, int records, int rejected);

    [LoggerMessage(2, LogLevel.Error, "Checksum mismatch on disk {Path}, component {ComponentId}, logical block {Block}")]
    public static partial void ChecksumMismatch(ILogger logger, string path, Guid componentId, long block);

    [LoggerMessage(3, LogLevel.Error, "I/O error on disk {Path}")]
    public static partial void IoError(ILogger logger, string path, Exception exception);

    [LoggerMessage(4, LogLevel.Warning, "Background flush or checkpoint of disk {Path} failed")]
    public static partial void BackgroundFailed(ILogger logger, string path, Exception exception);

    [LoggerMessage(5, LogLevel.Warning, "Disk {Path}: the host filesystem cannot punch holes; freed space stays allocated in the file")]
    public static partial void PunchUnsupported(ILogger logger, string path);

    [LoggerMessage(6, LogLevel.Warning, "Disk {Path}: component {ComponentId} ({Name}) lost the newest write of {Lost} blocks in a crash before it was flushed (older content kept); {Replaced} replaced as its owner asked")]
    public static partial void LostWrites(ILogger logger, string path, Guid componentId, string name, long lost, long replaced);

    [LoggerMessage(7, LogLevel.Error, "Disk {Path}: no free block to replace lost block {Block} of component {ComponentId}; it keeps its older content")]
    public static partial void LostWriteNotReplaced(ILogger logger, string path, Guid componentId, long block);
}
