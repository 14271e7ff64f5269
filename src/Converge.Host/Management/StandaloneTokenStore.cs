using System.Text.Json;
using Converge.Metadata;

namespace Converge.Host.Management;

/// <summary>
/// A standalone host's tokens: <c>DIR/api-tokens.json</c> (mode 0600), the same records as the cluster metadata keeps.
/// At its first start the host makes the admin token (<c>DIR/admin-token</c>); a host from before salted tokens has
/// its <c>admin-token.sha256</c> salted in place, so its token keeps working.
/// </summary>
internal sealed class StandaloneTokenStore : ApiTokenStore
{
    public const string FileName = "api-tokens.json";

    private readonly string path;
    private readonly Lock gate = new();
    private volatile IReadOnlyList<ApiTokenRecord> tokens;

    public StandaloneTokenStore(HostOptions options)
    {
        var dataDirectory = Path.GetFullPath(options.DataDirectory);
        Directory.CreateDirectory(dataDirectory);
        path = Path.Combine(dataDirectory, FileName);
        if (File.Exists(path))
        {
            tokens = Load(path);
            return;
        }

        var salt = ApiTokenHashing.NewSalt();
        var legacyPath = Path.Combine(dataDirectory, AdminToken.HashFileName);
        var unsalted = File.Exists(legacyPath)
            ? File.ReadAllText(legacyPath).Trim()
            : AdminToken.Hash(AdminToken.LoadOrCreate(dataDirectory));
        var hash = ApiTokenHashing.SaltUnsalted(salt, unsalted)
            ?? throw new HostStartException($"{legacyPath} does not hold a SHA-256; remove it and {AdminToken.FileName} to make a new admin token");
        tokens = [new ApiTokenRecord(ApiTokenHashing.NewId(), "admin", ApiTokenRoles.Admin, salt, hash, DateTimeOffset.UtcNow)];
        Save();
        File.Delete(legacyPath);
    }

    public override bool Ready => true;

    public override IReadOnlyList<ApiTokenRecord> Tokens => tokens;

    public override Task AddAsync(ApiTokenRecord token, string? replaces, CancellationToken cancellationToken)
    {
        lock (gate)
        {
            if (ApiTokenRules.CheckCreate(tokens, token, replaces) is { } error)
            {
                throw new HostOperationException(error.StartsWith("there is no token", StringComparison.Ordinal) ? HostErrorKind.NotFound : HostErrorKind.Conflict, error);
            }

            var previous = tokens;
            tokens = [.. previous.Where(t => t.Id != replaces), token];
            SaveOrRestore(previous);
        }

        return Task.CompletedTask;
    }

    public override Task RevokeAsync(string id, CancellationToken cancellationToken)
    {
        lock (gate)
        {
            if (ApiTokenRules.CheckRevoke(tokens, id) is { } error)
            {
                throw new HostOperationException(HostErrorKind.NotFound, error);
            }

            var previous = tokens;
            tokens = [.. previous.Where(t => t.Id != id)];
            SaveOrRestore(previous);
        }

        return Task.CompletedTask;
    }

    private static List<ApiTokenRecord> Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize(File.ReadAllBytes(path), TokenFileJsonContext.Default.ListApiTokenRecord)
                ?? throw new JsonException("the file holds null");
        }
        catch (JsonException e)
        {
            throw new HostStartException($"{path} is not a token list ({e.Message}); restore it, or remove it and admin-token to make a new admin token");
        }
    }

    /// <summary>A change is only in effect once it is on disk: a failed write leaves the tokens as they were.</summary>
    private void SaveOrRestore(IReadOnlyList<ApiTokenRecord> previous)
    {
        try
        {
            Save();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            tokens = previous;
            throw new HostOperationException(HostErrorKind.Unavailable, $"cannot write {path}: {e.Message}", e);
        }
    }

    private void Save() =>
        AdminToken.WritePrivate(path, JsonSerializer.Serialize([.. tokens], TokenFileJsonContext.Default.ListApiTokenRecord) + "\n");
}
