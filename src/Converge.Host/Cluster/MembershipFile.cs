using System.Text.Json;
using System.Text.Json.Serialization;

namespace Converge.Host.Cluster;

/// <summary>
/// <c>DIR/membership.json</c>: how this host takes part in its cluster, written once it joined (or founded) one, so a
/// restart reuses it without joining again. <see cref="Role"/> is <c>voter</c> (a Raft member, log under
/// <c>DIR/metadata</c>) or <c>client</c> (reads and proposes through <see cref="Members"/>).
/// </summary>
internal sealed record Membership
{
    public const string Voter = "voter";
    public const string Client = "client";

    public required string Role { get; init; }

    public string? ClusterId { get; init; }

    /// <summary>This host cold-started the cluster: it initializes the cluster record if that is not done yet.</summary>
    public bool Founder { get; init; }

    /// <summary>API URLs of metadata members known at join time (clients start from these).</summary>
    public IReadOnlyList<string> Members { get; init; } = [];
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = true)]
[JsonSerializable(typeof(Membership))]
internal sealed partial class MembershipJsonContext : JsonSerializerContext;

internal static class MembershipFile
{
    public const string FileName = "membership.json";

    public static Membership? Load(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(path), MembershipJsonContext.Default.Membership)
                ?? throw new HostStartException($"{path} is empty");
        }
        catch (JsonException e)
        {
            throw new HostStartException($"{path} is not valid: {e.Message}", e);
        }
    }

    public static void Save(string dataDirectory, Membership membership)
    {
        var path = Path.Combine(dataDirectory, FileName);
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(stream, membership, MembershipJsonContext.Default.Membership);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
    }
}
