using System.Security.Cryptography;
using System.Text;
using Converge.Metadata;

namespace Converge.Host.Management;

/// <summary>
/// The first admin bearer token: made once (a cluster's founder, or a standalone host at its first start), written to
/// <c>DIR/admin-token</c> with mode 0600, and only a salted hash kept where hosts check it (the cluster metadata, or
/// <c>DIR/api-tokens.json</c> on a standalone host; see <see cref="ApiTokenStore"/>).
/// </summary>
public static class AdminToken
{
    public const string FileName = "admin-token";
    /// <summary>Where standalone hosts before salted tokens kept the unsalted hash; migrated to <c>api-tokens.json</c>.</summary>
    public const string HashFileName = "admin-token.sha256";

    /// <summary>256 random bits, URL-safe base64 with a recognisable prefix.</summary>
    public static string Create() =>
        "cvg_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>The unsalted SHA-256 a founder hands to <see cref="InitializeCluster"/>, which salts it.</summary>
    public static string Hash(string token) => ApiTokenHashing.UnsaltedHash(token);

    /// <summary>The token in <c>DIR/admin-token</c>, created (0600) when absent: <c>converge up</c> may have placed one there.</summary>
    public static string LoadOrCreate(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, FileName);
        if (File.Exists(path))
        {
            var existing = File.ReadAllText(path).Trim();
            if (existing.Length >= 16)
            {
                return existing;
            }
        }

        var token = Create();
        WritePrivate(path, token + "\n");
        return token;
    }

    /// <summary>Writes a file readable only by its owner (0600), atomically.</summary>
    public static void WritePrivate(string path, string contents)
    {
        var temp = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using (var stream = new FileStream(temp, options))
        {
            stream.Write(Encoding.UTF8.GetBytes(contents));
            stream.Flush(flushToDisk: true);
        }

        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        File.Move(temp, path, overwrite: true);
    }
}
