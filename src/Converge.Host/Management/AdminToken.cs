using System.Security.Cryptography;
using System.Text;
using Converge.Host.Cluster;

namespace Converge.Host.Management;

/// <summary>
/// The admin bearer token: made once (a cluster's founder, or a standalone host at its first start), written to
/// <c>DIR/admin-token</c> with mode 0600, and only its SHA-256 kept where hosts check it (the cluster metadata, or
/// <c>DIR/admin-token.sha256</c> on a standalone host).
/// </summary>
public static class AdminToken
{
    public const string FileName = "admin-token";
    public const string HashFileName = "admin-token.sha256";

    /// <summary>256 random bits, URL-safe base64 with a recognisable prefix.</summary>
    public static string Create() =>
        "cvg_" + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32)).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    public static string Hash(string token) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(token.Trim())));

    /// <summary>Compares in constant time.</summary>
    public static bool Matches(string token, string expectedHash)
    {
        var actual = Encoding.ASCII.GetBytes(Hash(token));
        var expected = Encoding.ASCII.GetBytes(expectedHash);
        return CryptographicOperations.FixedTimeEquals(actual, expected);
    }

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

/// <summary>Where the expected token hash comes from: the cluster metadata, or the standalone host's hash file.</summary>
internal sealed class AdminTokenVerifier
{
    private readonly ClusterNode? cluster;
    private readonly string? standaloneHash;

    public AdminTokenVerifier(HostOptions options, IServiceProvider services)
    {
        cluster = services.GetService<ClusterNode>();
        if (cluster is null)
        {
            // A standalone host makes its token at first start; the hash file is what it checks against afterwards.
            var dataDirectory = Path.GetFullPath(options.DataDirectory);
            var hashPath = Path.Combine(dataDirectory, AdminToken.HashFileName);
            if (File.Exists(hashPath))
            {
                standaloneHash = File.ReadAllText(hashPath).Trim();
            }
            else
            {
                Directory.CreateDirectory(dataDirectory);
                standaloneHash = AdminToken.Hash(AdminToken.LoadOrCreate(dataDirectory));
                AdminToken.WritePrivate(hashPath, standaloneHash + "\n");
            }
        }
    }

    /// <summary>The hash to check against; null when none is known (a cluster not initialized yet, or founded before tokens).</summary>
    public string? ExpectedHash => cluster is null ? standaloneHash : cluster.Metadata.Current.Cluster?.AdminTokenHash;

    /// <summary>True when the cluster exists but has no token (founded by an older version): mutations stay open.</summary>
    public bool LegacyOpen => cluster is not null && cluster.Metadata.Current.Cluster is { AdminTokenHash: null };
}
