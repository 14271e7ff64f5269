using System.Runtime.InteropServices;

namespace Converge.Host;

/// <summary>
/// File modes of what the host creates: its data folders and files hold replica data, tokens and keys, so they are
/// the owner's only (folders 0700, files 0600).
/// </summary>
internal static partial class FileModes
{
    public const UnixFileMode PrivateFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public const UnixFileMode PrivateDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    private const UnixFileMode GroupOrOther =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>
    /// Sets the process umask to 077, so everything the daemon creates (including files of libraries that take no mode,
    /// such as the Raft log) is the owner's only; the explicit modes elsewhere hold even without it.
    /// </summary>
    public static void RestrictProcessUmask()
    {
        if (!OperatingSystem.IsWindows())
        {
            _ = umask(0b000_111_111);
        }
    }

    /// <summary>Creates the data directory 0700, or takes group and other access away from an existing one.</summary>
    public static void CreatePrivateDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            Directory.CreateDirectory(path);
            return;
        }

        var directory = Directory.CreateDirectory(path, PrivateDirectory);
        if ((directory.UnixFileMode & GroupOrOther) != 0)
        {
            File.SetUnixFileMode(path, directory.UnixFileMode & ~GroupOrOther);
        }
    }

    [LibraryImport("libc")]
    private static partial uint umask(uint mask);
}
