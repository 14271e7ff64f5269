namespace Converge.Host.Tests;

/// <summary>Garbage and vanishing clients over raw TCP: the daemon drops them and keeps serving everyone else.</summary>
public sealed class BadInputTests(HostFixture fixture) : IClassFixture<HostFixture>
{
    private const int Write = 1;
    private const int Read = 0;

    [Fact]
    public async Task Raw_client_roundtrip_works()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("raw", "16MiB");
        await using var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort);
        await raw.HandshakeAsync(vdisk.Name);
        Assert.Equal(16UL << 20, raw.ExportSize);
        var data = Enumerable.Range(0, 4096).Select(i => (byte)(i * 7)).ToArray();
        await raw.WriteAsync([.. RawNbdClient.Request(Write, 11, 8192, 4096), .. data]);
        Assert.Equal((0u, 11UL), await raw.ReadSimpleReplyAsync());
        await raw.WriteAsync(RawNbdClient.Request(Read, 12, 8192, 4096));
        Assert.Equal((0u, 12UL), await raw.ReadSimpleReplyAsync());
        Assert.Equal(data, await raw.ReadExactAsync(4096));

        // Out of range: an error reply, and the connection stays usable.
        await raw.WriteAsync(RawNbdClient.Request(Read, 13, 16UL << 20, 4096));
        var (error, cookie) = await raw.ReadSimpleReplyAsync();
        Assert.Equal(13UL, cookie);
        Assert.NotEqual(0u, error);
        await raw.WriteAsync(RawNbdClient.Request(Read, 14, 8192, 4096));
        Assert.Equal((0u, 14UL), await raw.ReadSimpleReplyAsync());
        Assert.Equal(data, await raw.ReadExactAsync(4096));
    }

    [Fact]
    public async Task Garbage_handshakes_are_dropped_and_others_still_served()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("garbage", "16MiB");
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["write -P 0x6b 0 1M"]), fixture.Host);
        var random = new Random(7);

        // Random bytes instead of client flags and options.
        for (var i = 0; i < 5; i++)
        {
            await using var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort);
            await raw.ReadGreetingAsync();
            var junk = new byte[random.Next(1, 8192)];
            random.NextBytes(junk);
            await SendIgnoringResetAsync(raw, junk);
            Assert.True(await raw.ServerClosesAsync(TimeSpan.FromSeconds(15)), "server should drop a client sending garbage");
        }

        // HTTP at the NBD port; an option with an absurd length; connect and leave at once.
        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await SendIgnoringResetAsync(raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
            Assert.True(await raw.ServerClosesAsync(TimeSpan.FromSeconds(15)));
        }

        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await raw.ReadGreetingAsync();
            await raw.WriteAsync([0, 0, 0, 3]);
            await SendIgnoringResetAsync(raw, [.. OptionHeader(7, uint.MaxValue), 1, 2, 3]);
            Assert.True(await raw.ServerClosesAsync(TimeSpan.FromSeconds(15)), "an option claiming 4 GiB of data must be refused");
        }

        for (var i = 0; i < 20; i++)
        {
            var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort);
            if (i % 2 == 0)
            {
                raw.Abort();
            }

            await raw.DisposeAsync();
        }

        await AssertStillServingAsync(vdisk.NbdUri, "0x6b");
    }

    [Fact]
    public async Task Clients_vanishing_mid_request_do_not_hurt_the_daemon()
    {
        var vdisk = await fixture.CreateVirtualDiskAsync("vanish", "16MiB");
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["write -P 0x4d 0 1M"]), fixture.Host);

        // A write whose payload never fully arrives.
        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await raw.HandshakeAsync(vdisk.Name);
            await raw.WriteAsync([.. RawNbdClient.Request(Write, 1, 4 << 20, 1 << 20), .. new byte[100_000]]);
            raw.Abort();
        }

        // A big read whose reply nobody reads, then a reset.
        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await raw.HandshakeAsync(vdisk.Name);
            for (ulong cookie = 1; cookie <= 16; cookie++)
            {
                await raw.WriteAsync(RawNbdClient.Request(Read, cookie, 0, 1 << 20));
            }

            raw.Abort();
        }

        // Half a request header, then a clean close.
        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await raw.HandshakeAsync(vdisk.Name);
            await raw.WriteAsync(RawNbdClient.Request(Read, 1, 0, 4096)[..10]);
        }

        // A bad request magic in the transmission phase: the server hangs up.
        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await raw.HandshakeAsync(vdisk.Name);
            await SendIgnoringResetAsync(raw, RawNbdClient.Request(Read, 1, 0, 4096, magic: 0xdeadbeef));
            Assert.True(await raw.ServerClosesAsync(TimeSpan.FromSeconds(15)), "server should drop a client with a bad request magic");
        }

        // A write claiming more than the maximum payload: refused or dropped, never buffered forever.
        await using (var raw = await RawNbdClient.ConnectAsync(fixture.Host.NbdPort))
        {
            await raw.HandshakeAsync(vdisk.Name);
            await SendIgnoringResetAsync(raw, RawNbdClient.Request(Write, 1, 0, 1u << 30));
            raw.Abort();
        }

        await AssertStillServingAsync(vdisk.NbdUri, "0x4d");
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["read -P 0 4M 1M"]), fixture.Host);
    }

    private async Task AssertStillServingAsync(string uri, string pattern)
    {
        Assert.Equal("ready", (await fixture.Host.Api.GetHealthAsync()).Status);
        Assert.True(fixture.Host.IsRunning, fixture.Host.LogTail());
        Check.Succeeded(await NbdClients.QemuIoAsync(uri, [$"read -P {pattern} 0 1M", "write -P 0x01 2M 64k", "read -P 0x01 2M 64k"]), fixture.Host);
    }

    private static byte[] OptionHeader(uint option, uint length)
    {
        var header = new byte[16];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(header, RawNbdClient.IHaveOpt);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), length);
        return header;
    }

    private static async Task SendIgnoringResetAsync(RawNbdClient raw, byte[] data)
    {
        try
        {
            await raw.WriteAsync(data);
        }
        catch (IOException)
        {
            // The server may hang up before it read everything: that is an acceptable answer.
        }
    }
}
