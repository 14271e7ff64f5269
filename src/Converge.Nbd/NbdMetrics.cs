using System.Diagnostics.Metrics;
using Converge.Nbd.Protocol;

namespace Converge.Nbd;

/// <summary>Names of the NBD server's telemetry, for the host to subscribe to.</summary>
public static class NbdTelemetry
{
    /// <summary>The BCL <see cref="Meter"/> name: requests, bytes and errors per op, request latency, open connections.</summary>
    public const string MeterName = "Converge.Nbd";
}

internal static class NbdMetrics
{
    private static readonly Meter Meter = new(NbdTelemetry.MeterName);

    private static readonly Counter<long> Requests =
        Meter.CreateCounter<long>("converge.nbd.requests", "{request}", "NBD requests completed, by op");

    private static readonly Counter<long> Bytes =
        Meter.CreateCounter<long>("converge.nbd.bytes", "By", "Bytes read, written, trimmed or zeroed, by op");

    private static readonly Counter<long> Errors =
        Meter.CreateCounter<long>("converge.nbd.errors", "{request}", "NBD requests answered with an error, by op and error");

    private static readonly Histogram<double> Duration =
        Meter.CreateHistogram<double>("converge.nbd.request.duration", "s", "Time from request received to reply sent");

    private static readonly UpDownCounter<long> Connections =
        Meter.CreateUpDownCounter<long>("converge.nbd.connections", "{connection}", "Open NBD connections");

    public static void ConnectionOpened() => Connections.Add(1);

    public static void ConnectionClosed() => Connections.Add(-1);

    public static void RequestCompleted(NbdCommand command, long bytes, NbdError error, TimeSpan elapsed)
    {
        var op = new KeyValuePair<string, object?>("op", OpName(command));
        Requests.Add(1, op);
        Duration.Record(elapsed.TotalSeconds, op);
        if (error == NbdError.None)
        {
            if (bytes > 0)
            {
                Bytes.Add(bytes, op);
            }
        }
        else
        {
            Errors.Add(1, op, new KeyValuePair<string, object?>("error", ErrorName(error)));
        }
    }

    public static string OpName(NbdCommand command) => command switch
    {
        NbdCommand.Read => "read",
        NbdCommand.Write => "write",
        NbdCommand.Disconnect => "disc",
        NbdCommand.Flush => "flush",
        NbdCommand.Trim => "trim",
        NbdCommand.Cache => "cache",
        NbdCommand.WriteZeroes => "write_zeroes",
        NbdCommand.BlockStatus => "block_status",
        _ => "unknown",
    };

    public static string ErrorName(NbdError error) => error switch
    {
        NbdError.None => "none",
        NbdError.EPERM => "EPERM",
        NbdError.EIO => "EIO",
        NbdError.ENOMEM => "ENOMEM",
        NbdError.EINVAL => "EINVAL",
        NbdError.ENOSPC => "ENOSPC",
        NbdError.EOVERFLOW => "EOVERFLOW",
        NbdError.ENOTSUP => "ENOTSUP",
        NbdError.ESHUTDOWN => "ESHUTDOWN",
        _ => "other",
    };
}
