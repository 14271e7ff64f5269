using System.Text.Json;
using System.Text.Json.Serialization;

namespace Converge.Host;

/// <summary>
/// <c>DIR/host.json</c>: the host's identity, its disks and the catalog of virtual disks (so that the virtual
/// disks of a missing disk are still known, shown as unavailable and their names stay taken).
/// The disks' own metadata is the truth for online disks; the catalog is reconciled with it at every start.
/// </summary>
internal sealed record HostState
{
    public required Guid Id { get; init; }
    public required string Name { get; init; }
    public IReadOnlyList<HostStateDisk> Disks { get; init; } = [];
    public IReadOnlyList<HostStateVirtualDisk> VirtualDisks { get; init; } = [];
}

internal sealed record HostStateDisk(Guid Id, string Path);

internal sealed record HostStateVirtualDisk(string Name, Guid Id, Guid DiskId, long SizeBytes);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = true)]
[JsonSerializable(typeof(HostState))]
internal sealed partial class HostStateJsonContext : JsonSerializerContext;

internal static class HostStateFile
{
    public const string FileName = "host.json";

    public static async Task<HostState?> LoadAsync(string dataDirectory, CancellationToken cancellationToken)
    {
        var path = Path.Combine(dataDirectory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            await using var stream = File.OpenRead(path);
            return await JsonSerializer.DeserializeAsync(stream, HostStateJsonContext.Default.HostState, cancellationToken).ConfigureAwait(false)
                ?? throw new HostStartException($"{path} is empty; restore it or move it away to start afresh");
        }
        catch (JsonException e)
        {
            throw new HostStartException($"{path} is not valid: {e.Message}; restore it or move it away to start afresh", e);
        }
    }

    /// <summary>Writes atomically: a temporary file, fsync, rename over the old one.</summary>
    public static async Task SaveAsync(string dataDirectory, HostState state, CancellationToken cancellationToken)
    {
        var path = Path.Combine(dataDirectory, FileName);
        var temp = path + ".tmp";
        var fileOptions = new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            Share = FileShare.None,
            Options = FileOptions.Asynchronous,
        };
        if (!OperatingSystem.IsWindows())
        {
            fileOptions.UnixCreateMode = FileModes.PrivateFile;
        }

        await using (var stream = new FileStream(temp, fileOptions))
        {
            await JsonSerializer.SerializeAsync(stream, state, HostStateJsonContext.Default.HostState, cancellationToken).ConfigureAwait(false);
            await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
    }
}
