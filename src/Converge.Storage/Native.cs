using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Converge.Storage;

internal static partial class Native
{
    private const int FallocFlPunchHole = 0x02;
    private const int FallocFlKeepSize = 0x01;
    private const int EINTR = 4;
    private const int ORdOnly = 0;
    private const int ODirectory = 0x10000;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fdatasync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int fallocate(int fd, int mode, long offset, long len);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenCreate(string path, int flags, uint mode);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int flock(int fd, int operation);

    private const int ORdWr = 2;
    private const int OCreat = 0x40;
    private const int OExcl = 0x80;
    private const int OCloExec = 0x80000;
    private const int LockEx = 2;
    private const int LockNb = 4;
    private const int ENOENT = 2;
    private const int EEXIST = 17;
    private const int EACCES = 13;
    private const int ELOOP = 40;

    /// <summary>Mode of a disk image the store creates: the owner's only (replica data).</summary>
    public const UnixFileMode DiskFileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    // O_NOFOLLOW differs between the Linux ABIs.
    private static int ONoFollow => RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x8000 : 0x20000;

    /// <summary>
    /// Opens a disk image read-write without following a symbolic link in its last component (O_NOFOLLOW: a link
    /// there fails the open itself, so a swap between a check and the open cannot redirect it), creating it 0600 when
    /// <paramref name="createNew"/> (O_CREAT|O_EXCL, which never follows a link either), and takes the exclusive
    /// advisory lock <see cref="FileShare.None"/> would.
    /// </summary>
    /// <exception cref="FileNotFoundException">It does not exist.</exception>
    /// <exception cref="IOException">It is a symbolic link, exists (with <paramref name="createNew"/>), is in use, or cannot be opened.</exception>
    /// <exception cref="UnauthorizedAccessException">Permission denied.</exception>
    public static SafeFileHandle OpenDiskFile(string path, bool createNew)
    {
        var flags = ORdWr | OCloExec | ONoFollow | (createNew ? OCreat | OExcl : 0);
        var fd = OpenCreate(path, flags, (uint)DiskFileMode);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            var message = Marshal.GetPInvokeErrorMessage(errno);
            throw errno switch
            {
                ENOENT => new FileNotFoundException($"{path}: {message}", path),
                ELOOP => new IOException($"{path} is a symbolic link; give the path of the file itself"),
                EEXIST => new IOException($"{path} already exists"),
                EACCES => new UnauthorizedAccessException($"{path}: {message}"),
                _ => new IOException($"{path}: {message}"),
            };
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (flock(fd, LockEx | LockNb) != 0)
        {
            var message = Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());
            handle.Dispose();
            throw new IOException($"{path} is in use by another process ({message})");
        }

        return handle;
    }

    /// <summary>Durable data and the metadata needed to read it back; throws <see cref="IOException"/> on failure.</summary>
    public static void DataSync(SafeFileHandle handle)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var fd = (int)handle.DangerousGetHandle();
            int rc;
            do
            {
                rc = fdatasync(fd);
            }
            while (rc != 0 && Marshal.GetLastPInvokeError() == EINTR);

            if (rc != 0)
            {
                throw new IOException($"fdatasync failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Gives the range's space back to the host filesystem; false when the filesystem cannot punch holes.</summary>
    public static bool PunchHole(SafeFileHandle handle, long offset, long length)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return fallocate((int)handle.DangerousGetHandle(), FallocFlPunchHole | FallocFlKeepSize, offset, length) == 0;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Makes a newly created file's directory entry durable.</summary>
    public static void SyncDirectory(string directory)
    {
        var fd = Open(directory, ORdOnly | ODirectory);
        if (fd < 0)
        {
            return;
        }

        _ = fsync(fd);
        _ = Close(fd);
    }
}
