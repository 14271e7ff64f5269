namespace Converge.Host.Management;

/// <summary>Log lines of the management layer (event ids 500+ so they never collide with the host's own).</summary>
internal static partial class ManagementLog
{
    [LoggerMessage(500, LogLevel.Information, "the cluster's admin token is in {Path} (mode 0600); only its hash is kept in the cluster metadata")]
    public static partial void AdminTokenWritten(ILogger logger, string path);

    [LoggerMessage(501, LogLevel.Information, "this standalone host's admin token is in {Path} (mode 0600)")]
    public static partial void StandaloneTokenWritten(ILogger logger, string path);
}
