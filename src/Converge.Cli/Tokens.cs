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

    public static async Task<string?> ResolveAsync(string? option, Uri api, ConvergeApiClient client, CancellationToken cancellationToken) =>
        (await ResolveWithSourceAsync(option, api, client, cancellationToken).ConfigureAwait(false)).Token;

    /// <summary><c>--token</c>, else <c>$CONVERGE_TOKEN</c>; no files.</summary>
    public static string? FromOptionOrEnvironment(string? option) =>
        !string.IsNullOrWhiteSpace(option) ? option.Trim()
        : Environment.GetEnvironmentVariable(EnvironmentVariable) is { } e && !string.IsNullOrWhiteSpace(e) ? e.Trim()
        : null;

    /// <summary>The token, and the file it was read from (null for <c>--token</c> and the environment).</summary>
    public static async Task<(string? Token, string? File)> ResolveWithSourceAsync(string? option, Uri api, ConvergeApiClient client, CancellationToken cancellationToken)
    {
        if (FromOptionOrEnvironment(option) is { } given)
        {
            return (given, null);
        }

        if (IsLoopback(api))
        {
            try
            {
                if (await FromDataDirectoryAsync(client, cancellationToken).ConfigureAwait(false) is { Token: not null } token)
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
                            if (await FromDataDirectoryAsync(new ConvergeApiClient(http), cancellationToken).ConfigureAwait(false) is { Token: not null } found)
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

        var local = Path.Combine(Path.GetFullPath(ClusterCommands.DefaultDataDirectory), FileName);
        return (TryRead(local), local);
    }

    private static async Task<(string? Token, string? File)> FromDataDirectoryAsync(ConvergeApiClient client, CancellationToken cancellationToken)
    {
        var host = await client.GetHostAsync(cancellationToken).ConfigureAwait(false);
        var path = host.DataDirectory is { } dir ? Path.Combine(dir, FileName) : null;
        return (path is null ? null : TryRead(path), path);
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

    public static bool IsLoopback(Uri api) =>
        api.IsLoopback || (IPAddress.TryParse(api.Host, out var address) && IPAddress.IsLoopback(address));
}
