namespace Converge.TestKit;

/// <summary>Looking inside the disk files a host keeps, the way bit rot would touch them.</summary>
public static class DiskFiles
{
    private const int Block = 4096;

    /// <summary>The file offset of the first 4 KiB block filled with <paramref name="pattern"/>, or -1.</summary>
    public static long FindFilledBlock(string path, byte pattern)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 20);
        var chunk = new byte[1 << 20];
        long offset = 0;
        int read;
        while ((read = file.ReadAtLeast(chunk, chunk.Length, throwOnEndOfStream: false)) > 0)
        {
            for (var i = 0; i + Block <= read; i += Block)
            {
                var block = chunk.AsSpan(i, Block);
                if (block[0] == pattern && !block.ContainsAnyExcept(pattern))
                {
                    return offset + i;
                }
            }

            offset += read;
        }

        return -1;
    }
}
