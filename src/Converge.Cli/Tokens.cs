using System.Net;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary>
/// Where the CLI finds the admin token for changes: <c>--token</c>, <c>$CONVERGE_TOKEN</c>, the <c>admin-token</c>
/// file in the data directory of the host asked when that host runs on this machine (readable only by its owner), or
/// of another host of its cluster on this machine (the founder keeps it), then <c>./.converge/admin-token</c>
/// (written by <c>converge up</c>).
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
                if (await FromDataDirectoryAsync(client, cancellationToken).ConfigureAwait(false) is { } token)
                {
                    return token;
                }

                // A cluster on this machine: the founder keeps the token; ask the other local hosts where their data is.
                if (await client.TryGetClusterAsync(cancellationToken).ConfigureAwait(false) is { } cluster)
                {
                    foreach (var other in cluster.Hosts.Where(h => Uri.TryCreate(h.Api, UriKind.Absolute, out var u) && IsLoopback(u) && u != api))
                    {
                        using var http = new HttpClient { BaseAddress = new Uri(other.Api), Timeout = TimeSpan.FromSeconds(5) };
                        try
                        {
                            if (await FromDataDirectoryAsync(new ConvergeApiClient(http), cancellationToken).ConfigureAwait(false) is { } found)
                            {
                                return found;
                            }
                        }
                        catch (Exception e) when (e is HttpRequestException or ConvergeApiException or TaskCanceledException)
                        {
                            // That host does not answer: try the next.
                        }
                    }
                }
            }
            catch (ConvergeApiException)
            {
                // An older host without the field: fall through to the local file.
            }
        }

        return TryRead(Path.Combine(Path.GetFullPath(ClusterCommands.DefaultDataDirectory), FileName));
    }

    private static async Task<string?> FromDataDirectoryAsync(ConvergeApiClient client, CancellationToken cancellationToken)
    {
        var host = await client.GetHostAsync(cancellationToken).ConfigureAwait(false);
        return host.DataDirectory is { } dir ? TryRead(Path.Combine(dir, FileName)) : null;
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
