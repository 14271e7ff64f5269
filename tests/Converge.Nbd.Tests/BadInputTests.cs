using System.Text;

namespace Converge.Nbd.Tests;

/// <summary>Misbehaving clients over real TCP sockets; after each, the server must still serve a well-behaved client.</summary>
public sealed class BadInputTests : IClassFixture<NbdTestServer>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private readonly NbdTestServer _server;

    public BadInputTests(NbdTestServer server)
    {
        _server = server;
    }

    private string NewExport(long size = 64 << 20)
    {
        var name = "b" + Guid.NewGuid().ToString("N")[..12];
        _server.Catalog.Add(name, size);
        return name;
    }

    private async Task AssertServerStillWorksAsync(string export)
    {
        await using var client = await RawNbdClient.ConnectAsync(_server.Port);
        await client.HandshakeAsync(export);
        await client.SendRequestAsync(0, 1, 1, 0, 3, [1, 2, 3]);
        Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
        await client.SendRequestAsync(0, 0, 2, 0, 3);
        var read = await client.ReadReplyAsync();
        Assert.Equal(new byte[] { 1, 2, 3 }, read.Payload[8..]);
    }

    [Fact]
    public async Task Garbage_instead_of_handshake_disconnects()
    {
        var export = NewExport(1 << 20);
        await using (var client = await RawNbdClient.ConnectAsync(_server.Port))
        {
            await client.ReadGreetingAsync();
            await client.WriteAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await using (var client = await RawNbdClient.ConnectAsync(_server.Port))
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(3);
            await client.WriteAsync(new byte[64]); // wrong option magic
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await AssertServerStillWorksAsync(export);
    }

    [Fact]
    public async Task Unknown_option_gets_err_unsup_then_go_works()
    {
        var export = NewExport(1 << 20);
        await using var client = await RawNbdClient.ConnectAsync(_server.Port);
        await client.ReadGreetingAsync();
        await client.SendClientFlagsAsync(3);
        await client.SendOptionAsync(0x1234, [1, 2, 3]);
        var reply = await client.ReadOptionReplyAsync();
        Assert.Equal((0x1234u, 0x8000_0001u), (reply.Option, reply.Type));
        await client.SendOptionAsync(5, []); // STARTTLS: TLS is off on this server, so refused by policy (spec, NOTLS)
        Assert.Equal(0x8000_0002u, (await client.ReadOptionReplyAsync()).Type);
        await client.SendOptionAsync(7, RawNbdClient.InfoRequest(export));
        Assert.Equal(1u, (await client.ReadOptionRepliesAsync())[^1].Type);
        await client.SendRequestAsync(0, 0, 9, 0, 16);
        Assert.Equal((9ul, 0u), ((await client.ReadReplyAsync(16)).Handle, 0u));
    }

    [Fact]
    public async Task Oversized_option_length_disconnects()
    {
        var export = NewExport(1 << 20);
        await using (var client = await RawNbdClient.ConnectAsync(_server.Port))
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(3);
            await client.SendOptionAsync(7, [], lengthOverride: 0xFFFF_FFF0);
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await AssertServerStillWorksAsync(export);
    }

    [Fact]
    public async Task Bad_request_magic_disconnects()
    {
        var export = NewExport(1 << 20);
        await using (var client = await RawNbdClient.ConnectAsync(_server.Port))
        {
            await client.HandshakeAsync(export);
            await client.SendRequestAsync(0, 0, 1, 0, 512, magic: 0xdeadbeef);
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await AssertServerStillWorksAsync(export);
    }

    [Fact]
    public async Task Write_above_max_payload_is_drained_and_refused_with_einval()
    {
        var export = NewExport();
        await using var client = await RawNbdClient.ConnectAsync(_server.Port);
        await client.HandshakeAsync(export);
        var length = (32 << 20) + 4096;
        var payload = new byte[length];
        payload.AsSpan().Fill(0x77);
        await client.SendRequestAsync(0, 1, 1, 0, (uint)length, payload);
        var reply = await client.ReadReplyAsync();
        Assert.Equal((1ul, 22u), (reply.Handle, reply.Error));

        // Framing survived: the connection keeps working, and nothing was written.
        await client.SendRequestAsync(0, 0, 2, 0, 4096);
        var read = await client.ReadReplyAsync();
        Assert.Equal((2ul, 0u), (read.Handle, read.Error));
        Assert.Equal(new byte[4096], read.Payload[8..]);
    }

    [Fact]
    public async Task Client_vanishing_mid_write_payload_leaves_the_server_serving_others()
    {
        var export = NewExport();
        for (var i = 0; i < 3; i++)
        {
            await using var client = await RawNbdClient.ConnectAsync(_server.Port);
            await client.HandshakeAsync(export);

            // A 16 MiB write of which only 1 MiB arrives, plus a read in flight just before.
            await client.SendRequestAsync(0, 0, 7, 0, 1 << 20);
            var header = new byte[28 + (1 << 20)];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header, RawNbdClient.RequestMagic);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(6), 1);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(24), 16 << 20);
            await client.WriteAsync(header);
        }

        await AssertServerStillWorksAsync(export);
    }
}
