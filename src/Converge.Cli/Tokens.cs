using System.Net;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary>
/// Where the CLI finds the admin token for changes: <c>--token</c>, <c>$CONVERGE_TOKEN</c>, the <c>admin-token</c>
/// file in the data directory of the host asked when that host runs on this machine (readable only by its owner),
/// then <c>./.converge/admin-token</c> (written by <c>converge up</c>).
/// </summary>
internal static class Tokens
{
    public const string FileName = "admin-token";
    public const string EnvironmentVariable = "CONVERGE_TOKEN";

    public static async Task<string?> ResolveAsync(string? option, Uri api, ConvergeApiClient client, CancellationToken cancellationToken)
    {
        if (!string.IsNullOrWhiteSpace(option))
        {
            return option.Trim();
        }

        var fromEnvironment = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnvironment))
        {
            return fromEnvironment.Trim();
        }

        if (IsLoopback(api))
        {
            try
            {
                var host = await client.GetHostAsync(cancellationToken).ConfigureAwait(false);
                if (host.DataDirectory is { } dir && TryRead(Path.Combine(dir, FileName)) is { } token)
                {
                    return token;
                }
            }
            catch (ConvergeApiException)
            {
                // An older host without the field: fall through to the local file.
            }
        }

        return TryRead(Path.Combine(Path.GetFullPath(ClusterCommands.DefaultDataDirectory), FileName));
    }

    public static string? TryRead(string path)
    {
        try
        {
            var text = File.ReadAllText(path).Trim();
            return text.Length == 0 ? null : text;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static bool IsLoopback(Uri api) =>
        api.IsLoopback || (IPAddress.TryParse(api.Host, out var address) && IPAddress.IsLoopback(address));
}
