namespace Converge.Common;

/// <summary>Why a volume request failed. Front ends map these to protocol errors (NBD errno values).</summary>
public enum VolumeError
{
    /// <summary>Device or media failure (EIO).</summary>
    IO,

    /// <summary>Stored data failed its checksum; never returned as data (EIO, counted separately).</summary>
    ChecksumMismatch,

    /// <summary>No free capacity left (ENOSPC).</summary>
    NoSpace,

    /// <summary>Range outside the volume or misaligned where alignment is required (EINVAL).</summary>
    OutOfRange,

    /// <summary>The operation or flag combination is not supported (ENOTSUP).</summary>
    NotSupported,

    /// <summary>The volume is read-only or fenced (EPERM).</summary>
    ReadOnly,

    /// <summary>The volume or its backing disk is offline (EIO; ESHUTDOWN when the server is stopping).</summary>
    Unavailable,
}

public class VolumeException : Exception
{
    public VolumeException(VolumeError error, string message, Exception? inner = null)
        : base(message, inner)
    {
        Error = error;
    }

    public VolumeError Error { get; }
}
