using System.Text.Json.Serialization;

namespace Converge.Metadata;

/// <summary>
/// Serialization of log entries (commands) and snapshots (state). Computed properties (getter-only, such as
/// <see cref="Placement.ObjectLayout.TotalVotes"/>) are not written.
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UseStringEnumConverter = true,
    IgnoreReadOnlyProperties = true,
    RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(MetadataCommand))]
[JsonSerializable(typeof(ClusterState))]
[JsonSerializable(typeof(CommandResult))]
public sealed partial class MetadataJsonContext : JsonSerializerContext;
