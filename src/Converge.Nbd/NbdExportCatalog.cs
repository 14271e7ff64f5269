using Converge.Common;

namespace Converge.Nbd;

/// <summary>The set of volumes the NBD server exposes. Implementations must be thread-safe.</summary>
public interface INbdExportCatalog
{
    /// <summary>Exports announced in reply to <c>NBD_OPT_LIST</c>.</summary>
    IReadOnlyList<NbdExportInfo> ListExports();

    /// <summary>
    /// The volume behind <paramref name="name"/>, or <see langword="null"/> when there is none.
    /// The empty name is the default export: return the only export if exactly one exists, else null.
    /// </summary>
    ValueTask<IBlockVolume?> FindExportAsync(string name, CancellationToken cancellationToken);
}

/// <summary>One entry of <c>NBD_OPT_LIST</c> and the source of <c>NBD_INFO_DESCRIPTION</c>.</summary>
public sealed record NbdExportInfo(string Name, string Description);
