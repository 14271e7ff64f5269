using Converge.Common;
using static Converge.Storage.Tests.Data;

namespace Converge.Storage.Tests;

/// <summary>CRC-32C of whole buffers from block CRCs, and writes stored under block CRCs their caller computed.</summary>
public sealed class BlockChecksumTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly CancellationTokenSource _timeout = new(TimeSpan.FromSeconds(60));

    private CancellationToken Ct => _timeout.Token;

    public void Dispose()
    {
        _timeout.Dispose();
        _dir.Dispose();
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 3)]
    [InlineData(256, 4)]
    [InlineData(8192, 5)]
    public void The_crc_of_blocks_folded_from_their_own_crcs_is_the_crc_of_the_whole_buffer(int blocks, int seed)
    {
        var data = Random(blocks * BlockGeometry.BlockSize, seed);
        var crcs = new uint[blocks];
        Checksums.Crc32CBlocks(data, crcs);

        Assert.Equal(Checksums.Crc32C(data), Checksums.Crc32COfBlocks(crcs));
        Assert.Equal(System.IO.Hashing.Crc32.HashToUInt32(System.IO.Hashing.Crc32ParameterSet.Crc32C, data), Checksums.Crc32COfBlocks(crcs));
        Assert.Equal(Checksums.Crc32C(ReadOnlySpan<byte>.Empty), Checksums.Crc32COfBlocks(ReadOnlySpan<uint>.Empty));
    }

    [Fact]
    public async Task A_write_with_block_crcs_is_stored_under_them_as_given()
    {
        await using var disk = await StoreDisk.FormatAsync(_dir.File("d1.img"), 96L << 20, Options(), Ct);
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "vol", 4L << 20, Ct);
        var data = Random(4 * BlockGeometry.BlockSize, 9);
        var crcs = new uint[4];
        Checksums.Crc32CBlocks(data, crcs);

        await c.WriteAsync(8192, data, crcs, WriteFlags.None, Ct);
        var back = new byte[data.Length];
        await c.ReadAsync(8192, back, Ct);
        Assert.Equal(data, back);

        // Given, not recomputed: a wrong checksum for block 2 makes exactly that block unreadable. (Callers pass only
        // checksums they computed from these bytes; this shows the store keeps them.)
        crcs[2] ^= 1;
        await c.WriteAsync(8192, data, crcs, WriteFlags.None, Ct);
        await c.ReadAsync(8192, back.AsMemory(0, 2 * BlockGeometry.BlockSize), Ct);
        var error = await Assert.ThrowsAsync<VolumeException>(async () => await c.ReadAsync(8192 + (2 * BlockGeometry.BlockSize), back.AsMemory(0, BlockGeometry.BlockSize), Ct));
        Assert.Equal(VolumeError.ChecksumMismatch, error.Error);
    }

    [Fact]
    public async Task Block_crcs_for_a_write_that_is_not_whole_blocks_are_refused()
    {
        await using var disk = await StoreDisk.FormatAsync(_dir.File("d1.img"), 96L << 20, Options(), Ct);
        var c = await disk.CreateComponentAsync(Guid.NewGuid(), "vol", 4L << 20, Ct);
        var data = Random(BlockGeometry.BlockSize, 1);

        await Assert.ThrowsAsync<ArgumentException>(async () => await c.WriteAsync(512, data, new uint[1], WriteFlags.None, Ct));
        await Assert.ThrowsAsync<ArgumentException>(async () => await c.WriteAsync(0, data, new uint[2], WriteFlags.None, Ct));
        Assert.Equal(0, c.UsedBytes);
    }
}
