using System.Security.Cryptography;
using System.Text;

namespace Converge.Metadata;

/// <summary>
/// How token secrets are stored: <c>HMAC-SHA256(key: salt, message: SHA-256(secret))</c>, hex. A secret is 256 random
/// bits, so no guessing or dictionary attack on the hash can work and a slow password hash (PBKDF2, Argon2) would
/// only cost every request time; the per-token salt keeps equal secrets from having equal hashes across tokens and
/// clusters. Hashing SHA-256(secret) rather than the secret lets an old cluster's unsalted SHA-256 be salted in place.
/// </summary>
public static class ApiTokenHashing
{
    /// <summary>A new random salt (128 bits, hex).</summary>
    public static string NewSalt() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    /// <summary>A new token id (48 random bits, hex): short enough to type, long enough not to collide in a token list.</summary>
    public static string NewId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));

    /// <summary>The unsalted SHA-256 (hex) the first token versions stored.</summary>
    public static string UnsaltedHash(string secret) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret.Trim())));

    public static string Hash(string salt, string secret) =>
        Salted(salt, SHA256.HashData(Encoding.UTF8.GetBytes(secret.Trim())));

    /// <summary>Salts an unsalted SHA-256 (hex) without knowing the secret; null when the text is not a SHA-256.</summary>
    public static string? SaltUnsalted(string salt, string unsaltedHex)
    {
        if (unsaltedHex.Length != 64)
        {
            return null;
        }

        try
        {
            return Salted(salt, Convert.FromHexString(unsaltedHex));
        }
        catch (FormatException)
        {
            return null;
        }
    }

    /// <summary>Whether <paramref name="secret"/> is the token's, in constant time for a given record.</summary>
    public static bool Matches(ApiTokenRecord token, string secret)
    {
        ArgumentNullException.ThrowIfNull(token);
        var actual = Encoding.ASCII.GetBytes(token.Salt.Length == 0 ? UnsaltedHash(secret) : Hash(token.Salt, secret));
        return CryptographicOperations.FixedTimeEquals(actual, Encoding.ASCII.GetBytes(token.Hash));
    }

    /// <summary>The record among <paramref name="tokens"/> whose secret this is, or null. Tokens are few: each is checked.</summary>
    public static ApiTokenRecord? Find(IEnumerable<ApiTokenRecord> tokens, string secret)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ApiTokenRecord? found = null;
        foreach (var token in tokens)
        {
            // No early exit: the time taken does not say which record matched.
            if (Matches(token, secret))
            {
                found ??= token;
            }
        }

        return found;
    }

    private static string Salted(string salt, byte[] digest) =>
        Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(salt), digest));
}
