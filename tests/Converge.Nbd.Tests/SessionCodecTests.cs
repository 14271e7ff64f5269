using System.Buffers.Binary;
using System.Text;
using Converge.Common;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Nbd.Tests;

/// <summary>Protocol tests over a loopback socket pair against <see cref="NbdSession.RunAsync"/> directly.</summary>
public sealed class SessionCodecTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private readonly TestCatalog _catalog = new();
    private readonly List<TestVolume> _volumes = [];

    public void Dispose()
    {
        foreach (var v in _volumes)
        {
            v.Dispose();
        }
    }

    private TestVolume AddVolume(string name, long size = 1 << 20, VolumeCapabilities caps = TestVolume.AllCapabilities, string description = "")
    {
        var v = _catalog.Add(name, size, caps, description);
        _volumes.Add(v);
        return v;
    }

    private async Task<(RawNbdClient Client, Task Server)> StartAsync(NbdServerOptions? options = null)
    {
        var (client, socket) = await RawNbdClient.LoopbackAsync();
        var server = NbdSession.RunAsync(socket, _catalog, options ?? new NbdServerOptions(), NullLogger.Instance, CancellationToken.None);
        return (client, server);
    }

    [Fact]
    public async Task Greeting_advertises_fixed_newstyle_and_no_zeroes()
    {
        AddVolume("a");
        var (client, server) = await StartAsync();
        await using (client)
        {
            Assert.Equal(3, await client.ReadGreetingAsync());
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Unknown_client_flags_close_the_connection()
    {
        AddVolume("a");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(0x10);
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task List_returns_every_export_with_description_then_ack()
    {
        AddVolume("one", description: "first disk");
        AddVolume("two");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(3);
            await client.SendOptionAsync(3, []);
            var replies = await client.ReadOptionRepliesAsync();
            Assert.Equal(1u, replies[^1].Type);
            var servers = replies.Where(r => r.Type == 2).Select(r =>
            {
                var len = (int)BinaryPrimitives.ReadUInt32BigEndian(r.Data);
                return (Encoding.UTF8.GetString(r.Data, 4, len), Encoding.UTF8.GetString(r.Data, 4 + len, r.Data.Length - 4 - len));
            }).OrderBy(s => s.Item1).ToList();
            Assert.Equal([("one", "first disk"), ("two", "")], servers);

            // LIST with data is invalid, and haggling continues.
            await client.SendOptionAsync(3, [1]);
            Assert.Equal(0x8000_0003u, (await client.ReadOptionReplyAsync()).Type);
            await client.SendOptionAsync(2, []);
            Assert.Equal(1u, (await client.ReadOptionReplyAsync()).Type);
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Info_reports_export_name_description_and_block_size()
    {
        AddVolume("disk", 8 << 20, description: "the disk");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(3);
            await client.SendOptionAsync(6, RawNbdClient.InfoRequest("", 1, 2, 3));
            var replies = await client.ReadOptionRepliesAsync();
            Assert.Equal(1u, replies[^1].Type);
            var infos = replies.Where(r => r.Type == 3).ToDictionary(r => BinaryPrimitives.ReadUInt16BigEndian(r.Data), r => r.Data[2..]);
            Assert.Equal(8L << 20, BinaryPrimitives.ReadInt64BigEndian(infos[0]));
            var flags = BinaryPrimitives.ReadUInt16BigEndian(infos[0].AsSpan(8));
            Assert.Equal(0x0d6d, flags); // HAS_FLAGS|FLUSH|FUA|TRIM|WRITE_ZEROES|MULTI_CONN|CACHE|FAST_ZERO
            Assert.Equal("disk", Encoding.UTF8.GetString(infos[1]));
            Assert.Equal("the disk", Encoding.UTF8.GetString(infos[2]));
            Assert.Equal(1u, BinaryPrimitives.ReadUInt32BigEndian(infos[3]));
            Assert.Equal(4096u, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(4)));
            Assert.Equal(32u << 20, BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(8)));

            // Unknown export, then a malformed request: errors, and haggling continues.
            await client.SendOptionAsync(7, RawNbdClient.InfoRequest("nope"));
            Assert.Equal(0x8000_0006u, (await client.ReadOptionReplyAsync()).Type);
            await client.SendOptionAsync(7, [0, 0, 0, 9, 1]);
            Assert.Equal(0x8000_0003u, (await client.ReadOptionReplyAsync()).Type);
        }

        await server.WaitAsync(Deadline);
    }

    [Theory]
    [InlineData(3u, 10)]
    [InlineData(1u, 134)]
    public async Task Export_name_replies_with_size_flags_and_zeroes_unless_no_zeroes(uint clientFlags, int expectedLength)
    {
        AddVolume("disk", 1 << 20, VolumeCapabilities.ReadOnly);
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(clientFlags);
            await client.SendOptionAsync(1, Encoding.UTF8.GetBytes("disk"));
            var reply = await client.ReadExactAsync(expectedLength);
            Assert.Equal(1L << 20, BinaryPrimitives.ReadInt64BigEndian(reply));
            Assert.Equal(0x0403, BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8))); // HAS_FLAGS|READ_ONLY|CACHE

            // Simple replies: a write is refused with EPERM, a read works.
            await client.SendRequestAsync(0, 1, 7, 0, 4, [1, 2, 3, 4]);
            var w = await client.ReadReplyAsync();
            Assert.Equal((7ul, 1u), (w.Handle, w.Error));
            await client.SendRequestAsync(0, 0, 8, 0, 16);
            var r = await client.ReadReplyAsync(16);
            Assert.Equal((8ul, 0u), (r.Handle, r.Error));
            Assert.Equal(new byte[16], r.Payload);
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Export_name_for_unknown_export_closes_the_connection()
    {
        AddVolume("disk");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(3);
            await client.SendOptionAsync(1, Encoding.UTF8.GetBytes("missing"));
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Meta_context_rules()
    {
        AddVolume("disk");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.ReadGreetingAsync();
            await client.SendClientFlagsAsync(3);

            // SET before structured replies is invalid.
            await client.SendOptionAsync(10, RawNbdClient.MetaContextRequest("disk", "base:allocation"));
            Assert.Equal(0x8000_0003u, (await client.ReadOptionReplyAsync()).Type);

            await client.SendOptionAsync(8, []);
            Assert.Equal(1u, (await client.ReadOptionReplyAsync()).Type);

            // LIST with no query and with the "base:" wildcard both list base:allocation with id 0.
            foreach (var queries in new[] { Array.Empty<string>(), ["base:"], ["qemu:dirty-bitmap:x", "base:allocation"] })
            {
                await client.SendOptionAsync(9, RawNbdClient.MetaContextRequest("disk", queries));
                var list = await client.ReadOptionRepliesAsync();
                Assert.Equal(2, list.Count);
                Assert.Equal(4u, list[0].Type);
                Assert.Equal(0u, BinaryPrimitives.ReadUInt32BigEndian(list[0].Data));
                Assert.Equal("base:allocation", Encoding.UTF8.GetString(list[0].Data, 4, list[0].Data.Length - 4));
            }

            // SET with an unknown context selects nothing; with base:allocation selects it with a nonzero id.
            await client.SendOptionAsync(10, RawNbdClient.MetaContextRequest("disk", "x-foo:bar"));
            Assert.Single(await client.ReadOptionRepliesAsync());
            await client.SendOptionAsync(10, RawNbdClient.MetaContextRequest("disk", "base:allocation"));
            var set = await client.ReadOptionRepliesAsync();
            Assert.Equal(4u, set[0].Type);
            Assert.NotEqual(0u, BinaryPrimitives.ReadUInt32BigEndian(set[0].Data));

            // Malformed (query length beyond the option) and query without a namespace are invalid.
            var bad = RawNbdClient.MetaContextRequest("disk", "base:allocation");
            BinaryPrimitives.WriteUInt32BigEndian(bad.AsSpan(12), 1000);
            await client.SendOptionAsync(10, bad);
            Assert.Equal(0x8000_0003u, (await client.ReadOptionReplyAsync()).Type);
            await client.SendOptionAsync(9, RawNbdClient.MetaContextRequest("disk", "nonamespace"));
            Assert.Equal(0x8000_0003u, (await client.ReadOptionReplyAsync()).Type);
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Block_status_without_meta_context_is_einval()
    {
        AddVolume("disk");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.HandshakeAsync("disk", structured: true, baseAllocation: false);
            await client.SendRequestAsync(0, 7, 1, 0, 4096);
            var reply = await client.ReadReplyAsync();
            Assert.Equal(22u, reply.Error);
            Assert.True(reply.Done);
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Structured_transmission_validation_and_error_mapping()
    {
        var volume = AddVolume("disk", 1 << 20);
        var (client, server) = await StartAsync();
        await using (client)
        {
            var (size, flags) = await client.HandshakeAsync("disk");
            Assert.Equal(1L << 20, size);
            Assert.NotEqual(0, flags & 0x80); // SEND_DF once structured replies are on

            async Task<RawNbdClient.Reply> Call(ushort f, ushort cmd, ulong off, uint len, byte[]? payload = null)
            {
                await client.SendRequestAsync(f, cmd, 42, off, len, payload);
                var reply = await client.ReadReplyAsync();
                Assert.Equal(42ul, reply.Handle);
                return reply;
            }

            Assert.Equal(22u, (await Call(0, 0, (1 << 20) - 4096, 8192)).Error);      // read past end: EINVAL
            Assert.Equal(28u, (await Call(0, 1, 1 << 20, 4, [1, 2, 3, 4])).Error);    // write past end: ENOSPC
            Assert.Equal(22u, (await Call(0, 4, ulong.MaxValue - 1, 4096)).Error);    // trim with wrapping offset
            Assert.Equal(22u, (await Call(0, 0, 0, 0)).Error);                        // zero-length read
            Assert.Equal(22u, (await Call(0, 99, 0, 0)).Error);                       // unknown command
            Assert.Equal(22u, (await Call(0x8, 0, 0, 4096)).Error);                   // REQ_ONE on read
            Assert.Equal(22u, (await Call(0, 3, 0, 1)).Error);                        // flush with a length
            Assert.Equal(22u, (await Call(0, 0, 0, (32u << 20) + 1)).Error);          // read above max payload

            var ok = await Call(0x1, 1, 0, 4, [9, 9, 9, 9]);                           // FUA write
            Assert.Equal(0u, ok.Error);
            Assert.Equal(1, volume.FuaWrites);

            var read = await Call(0x4, 0, 0, 4);                                       // DF read: one OFFSET_DATA chunk
            Assert.Equal((1, true), (read.Type, read.Done));
            Assert.Equal(0ul, BinaryPrimitives.ReadUInt64BigEndian(read.Payload));
            Assert.Equal(new byte[] { 9, 9, 9, 9 }, read.Payload[8..]);

            volume.FailAt = 8192;
            var failed = await Call(0, 0, 4096, 8192);
            Assert.Equal((0x8001, 5u, true), (failed.Type, failed.Error, failed.Done)); // EIO as an ERROR chunk
            volume.FailWith = VolumeError.NoSpace;
            Assert.Equal(28u, (await Call(0, 1, 8192, 1, [1])).Error);
            volume.FailWith = VolumeError.ReadOnly;
            Assert.Equal(1u, (await Call(0, 4, 8192, 4096)).Error);
            volume.FailAt = null;

            // FAST_ZERO that the volume cannot do quickly: ENOTSUP.
            Assert.Equal(95u, (await Call(0x10 | 0x2, 6, 0, 4096)).Error);

            // Block status: hole after the written block, REQ_ONE limits to one descriptor within the length.
            var status = await Call(0, 7, 0, 1 << 20);
            Assert.Equal((5, true), (status.Type, status.Done));
            Assert.Equal(4 + 16, status.Payload.Length);
            Assert.Equal((4096u, 0u), (BinaryPrimitives.ReadUInt32BigEndian(status.Payload.AsSpan(4)), BinaryPrimitives.ReadUInt32BigEndian(status.Payload.AsSpan(8))));
            Assert.Equal(3u, BinaryPrimitives.ReadUInt32BigEndian(status.Payload.AsSpan(16)));
            var one = await Call(0x8, 7, 4096, 512);
            Assert.Equal(12, one.Payload.Length);
            Assert.Equal((512u, 3u), (BinaryPrimitives.ReadUInt32BigEndian(one.Payload.AsSpan(4)), BinaryPrimitives.ReadUInt32BigEndian(one.Payload.AsSpan(8))));
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Disc_completes_outstanding_requests_before_closing_and_replies_may_be_out_of_order()
    {
        var volume = AddVolume("disk");
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        volume.WriteGate = gate.Task;
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.HandshakeAsync("disk", structured: false);
            await client.SendRequestAsync(0, 1, 1, 0, 4096, new byte[4096]); // held by the gate
            await client.SendRequestAsync(0, 0, 2, 0, 512);                 // completes first
            var first = await client.ReadReplyAsync(512);
            Assert.Equal(2ul, first.Handle);

            await client.SendRequestAsync(0, 2, 3, 0, 0);                   // DISC while the write is in flight
            Assert.False(server.IsCompleted);
            gate.SetResult();
            var second = await client.ReadReplyAsync();
            Assert.Equal((1ul, 0u), (second.Handle, second.Error));
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Handshake_timeout_drops_a_silent_client()
    {
        AddVolume("disk");
        var (client, server) = await StartAsync(new NbdServerOptions { HandshakeTimeout = TimeSpan.FromMilliseconds(200) });
        await using (client)
        {
            await client.ReadGreetingAsync();
            Assert.True(await client.WaitForCloseAsync(Deadline));
        }

        await server.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Payload_split_across_many_small_segments_is_reassembled()
    {
        AddVolume("disk");
        var (client, server) = await StartAsync();
        await using (client)
        {
            await client.HandshakeAsync("disk", structured: false);
            var data = Enumerable.Range(0, 10000).Select(i => (byte)(i * 7)).ToArray();
            var request = new byte[28 + data.Length];
            BinaryPrimitives.WriteUInt32BigEndian(request, RawNbdClient.RequestMagic);
            BinaryPrimitives.WriteUInt16BigEndian(request.AsSpan(6), 1);
            BinaryPrimitives.WriteUInt64BigEndian(request.AsSpan(8), 5);
            BinaryPrimitives.WriteUInt64BigEndian(request.AsSpan(16), 100);
            BinaryPrimitives.WriteUInt32BigEndian(request.AsSpan(24), (uint)data.Length);
            data.CopyTo(request, 28);
            for (var i = 0; i < request.Length; i += 13)
            {
                await client.WriteAsync(request[i..Math.Min(i + 13, request.Length)]);
            }

            Assert.Equal(0u, (await client.ReadReplyAsync()).Error);
            await client.SendRequestAsync(0, 0, 6, 100, (uint)data.Length);
            Assert.Equal(data, (await client.ReadReplyAsync(data.Length)).Payload);
        }

        await server.WaitAsync(Deadline);
    }
}
