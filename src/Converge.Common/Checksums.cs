using System.IO.Hashing;

namespace Converge.Common;

/// <summary>CRC-32C (Castagnoli), the checksum of every stored 4 KiB block.</summary>
public static class Checksums
{
    // Crc32ParameterSet.Crc32C: the plain Crc32 type is IEEE, which is not what storage formats use.
    private static readonly Crc32ParameterSet Castagnoli = Crc32ParameterSet.Crc32C;

    public static uint Crc32C(ReadOnlySpan<byte> data) => Crc32.HashToUInt32(Castagnoli, data);
}
