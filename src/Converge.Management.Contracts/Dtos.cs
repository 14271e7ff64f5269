using System.Text.Json;

namespace Converge.Management.Contracts;

/// <summary><c>GET /api/v1/health</c>: <c>ready</c> once every disk was opened (or reported) and the listeners are up.</summary>
public sealed record HealthInfo
{
    public required string Status { get; init; }
}

/// <summary><c>GET /api/v1/host</c>.</summary>
public sealed record HostInfo
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required string Version { get; init; }

    /// <summary><c>host:port</c> of the NBD listener.</summary>
    public required string NbdEndpoint { get; init; }

    /// <summary>Base URL of this API, e.g. <c>http://127.0.0.1:7480</c>.</summary>
    public required string ApiEndpoint { get; init; }

    public required DateTimeOffset StartedAt { get; init; }
    public required int DiskCount { get; init; }
    public required int VirtualDiskCount { get; init; }
}

/// <summary>Values of <see cref="DiskInfo.State"/>.</summary>
public static class DiskStates
{
    public const string Online = "online";
    public const string Missing = "missing";
    public const string Corrupt = "corrupt";
    public const string Failed = "failed";
}

/// <summary>One physical disk (a file today) of a host.</summary>
public sealed record DiskInfo
{
    public required string Id { get; init; }
    public required string Path { get; init; }

    /// <summary>One of <see cref="DiskStates"/>.</summary>
    public required string State { get; init; }

    /// <summary>Why the disk is not online; null when it is.</summary>
    public string? Error { get; init; }

    public long CapacityBytes { get; init; }
    public long UsedBytes { get; init; }
    public long ProvisionedBytes { get; init; }
    public long FreeBytes { get; init; }
    public int ComponentCount { get; init; }
    public long ChecksumErrors { get; init; }
    public long IoErrors { get; init; }
}

/// <summary>Values of <see cref="VirtualDiskInfo.State"/>.</summary>
public static class VirtualDiskStates
{
    public const string Online = "online";
    public const string Unavailable = "unavailable";
}

public sealed record VirtualDiskInfo
{
    public required string Name { get; init; }
    public required string Id { get; init; }
    public required long SizeBytes { get; init; }
    public long UsedBytes { get; init; }

    /// <summary>One of <see cref="VirtualDiskStates"/>.</summary>
    public required string State { get; init; }

    public required string DiskId { get; init; }
    public required string DiskPath { get; init; }
    public long ChecksumErrors { get; init; }

    /// <summary>e.g. <c>nbd://127.0.0.1:10809/demo</c>.</summary>
    public required string NbdUri { get; init; }
}

/// <summary><c>POST /api/v1/vdisks</c>. <see cref="Size"/> is a size string (<c>"10GiB"</c>) or a number of bytes.</summary>
public sealed record CreateVirtualDiskRequest
{
    public required string Name { get; init; }
    public JsonElement Size { get; init; }

    public static CreateVirtualDiskRequest Create(string name, string size) =>
        new() { Name = name, Size = JsonSerializer.SerializeToElement(size, ContractsJsonContext.Default.String) };

    public static CreateVirtualDiskRequest Create(string name, long sizeBytes) =>
        new() { Name = name, Size = JsonSerializer.SerializeToElement(sizeBytes, ContractsJsonContext.Default.Int64) };
}

/// <summary><c>PATCH /api/v1/vdisks/{name}</c>.</summary>
public sealed record ResizeVirtualDiskRequest
{
    public required string Size { get; init; }
}

/// <summary><c>POST /api/v1/disks</c>. Without <see cref="Size"/> an existing formatted disk is adopted.</summary>
public sealed record AddDiskRequest
{
    public required string Path { get; init; }
    public string? Size { get; init; }
}

/// <summary>RFC 7807 problem details as the API returns them.</summary>
public sealed record ProblemInfo
{
    public string? Type { get; init; }
    public string? Title { get; init; }
    public int? Status { get; init; }
    public string? Detail { get; init; }
}

/// <summary>What <c>converge status --json</c> prints.</summary>
public sealed record StatusInfo
{
    public required HostInfo Host { get; init; }
    public required IReadOnlyList<DiskInfo> Disks { get; init; }
    public required IReadOnlyList<VirtualDiskInfo> VirtualDisks { get; init; }
}

/// <summary><c>DIR/cluster.json</c>, written by <c>converge up</c> and read by <c>converge down</c> and the CLI's default <c>--api</c>.</summary>
public sealed record ClusterFile
{
    public required IReadOnlyList<ClusterHostEntry> Hosts { get; init; }
}

public sealed record ClusterHostEntry
{
    public required string Name { get; init; }
    public required int Pid { get; init; }

    /// <summary>API base URL, e.g. <c>http://127.0.0.1:7480</c>.</summary>
    public required string Api { get; init; }

    /// <summary>NBD <c>host:port</c>, e.g. <c>127.0.0.1:10809</c>.</summary>
    public required string Nbd { get; init; }

    /// <summary>Absolute data directory of the host.</summary>
    public required string Data { get; init; }
}
