using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text;

namespace Converge.Security;

/// <summary>
/// A join token: <c>cvj1.ID.SECRET.CAHASH</c>. The id names the token's record in the cluster metadata, which holds
/// only a salted SHA-256 of the secret; CAHASH is the SHA-256 of the cluster CA certificate, which the joining host
/// pins when it first connects (as kubeadm's discovery hash does).
/// </summary>
public sealed record JoinToken(string Id, string Secret, string CaFingerprint)
{
    public const string Prefix = "cvj1";

    public static JoinToken Create(string caFingerprint) =>
        new(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)), Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16)), caFingerprint);

    public override string ToString() => $"{Prefix}.{Id}.{Secret}.{CaFingerprint}";

    public static bool TryParse(string? text, [NotNullWhen(true)] out JoinToken? token, out string error)
    {
        token = null;
        var parts = (text ?? string.Empty).Trim().Split('.');
        if (parts.Length != 4 || parts[0] != Prefix)
        {
            error = $"a join token looks like {Prefix}.ID.SECRET.CAHASH (from 'converge cluster join-token create')";
            return false;
        }

        if (!IsHex(parts[1], 16) || !IsHex(parts[2], 32) || !IsHex(parts[3], 64))
        {
            error = "the join token is damaged: its id, secret or CA hash is not the hex it should be";
            return false;
        }

        token = new JoinToken(parts[1], parts[2], parts[3].ToLowerInvariant());
        error = string.Empty;
        return true;
    }

    public static string NewSalt() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));

    /// <summary>SHA-256 (hex) of salt and secret: what the metadata stores.</summary>
    public static string Hash(string salt, string secret) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(salt + ":" + secret)));

    public bool Matches(string salt, string hash) =>
        CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(Hash(salt, Secret)), Encoding.ASCII.GetBytes(hash));

    private static bool IsHex(string s, int length) => s.Length == length && s.All(char.IsAsciiHexDigit);
}
