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
