using System.Text.Json.Serialization;
using Converge.Metadata;

namespace Converge.Host.Management;

/// <summary>A standalone host's <c>api-tokens.json</c>.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, WriteIndented = true)]
[JsonSerializable(typeof(List<ApiTokenRecord>))]
internal sealed partial class TokenFileJsonContext : JsonSerializerContext;
