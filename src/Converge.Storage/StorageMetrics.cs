using System.Diagnostics.Metrics;

namespace Converge.Storage;

/// <summary>The store's BCL meter; the host decides where it is exported.</summary>
public static class StorageMetrics
{
    public const string MeterName = "Converge.Storage";

    private static readonly Meter Meter = new(MeterName);

    internal static readonly Counter<long> ChecksumErrors =
        Meter.CreateCounter<long>("converge.storage.checksum_errors", description: "Blocks whose CRC-32C did not match on read");

    internal static readonly Counter<long> IoErrors =
        Meter.CreateCounter<long>("converge.storage.io_errors", description: "Failed reads, writes and syncs of disk files");

    internal static readonly Counter<long> BytesRead =
        Meter.CreateCounter<long>("converge.storage.bytes_read", unit: "By", description: "Bytes returned to readers");

    internal static readonly Counter<long> BytesWritten =
        Meter.CreateCounter<long>("converge.storage.bytes_written", unit: "By", description: "Bytes accepted from writers");

    internal static readonly Counter<long> BlocksDefragmented =
        Meter.CreateCounter<long>("converge.storage.blocks_defragmented", description: "Blocks that large reads moved into contiguous runs");

    internal static readonly Counter<long> Flushes =
        Meter.CreateCounter<long>("converge.storage.flushes", description: "fdatasync calls");
}
