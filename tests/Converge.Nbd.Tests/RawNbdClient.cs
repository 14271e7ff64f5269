using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Converge.Nbd.Tests;

/// <summary>A deliberately low-level NBD client for codec and misbehaviour tests. Talks over a stream.</summary>
internal sealed class RawNbdClient : IAsyncDisposable
{
    public const ulong NbdMagic = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    private readonly Stream _stream;
    private readonly IDisposable? _owner;

    public RawNbdClient(Stream stream, IDisposable? owner = null)
    {
        _stream = stream;
        _owner = owner;
    }

    public static async Task<RawNbdClient> ConnectAsync(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return new RawNbdClient(new NetworkStream(socket, ownsSocket: true));
    }

    /// <summary>A connected loopback socket pair for an in-process session; returns the client and the server's socket.</summary>
    public static async Task<(RawNbdClient Client, Socket ServerSocket)> LoopbackAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var accepting = listener.AcceptAsync();
        await client.ConnectAsync(listener.LocalEndPoint!);
        var server = await accepting;
        server.NoDelay = true;
        return (new RawNbdClient(new NetworkStream(client, ownsSocket: true)), server);
    }

    public Stream Stream => _stream;

    public async Task<ushort> ReadGreetingAsync()
    {
        var g = await ReadExactAsync(18);
        Assert.Equal(NbdMagic, BinaryPrimitives.ReadUInt64BigEndian(g));
        Assert.Equal(IHaveOpt, BinaryPrimitives.ReadUInt64BigEndian(g.AsSpan(8)));
        return BinaryPrimitives.ReadUInt16BigEndian(g.AsSpan(16));
    }

    public Task SendClientFlagsAsync(uint flags)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, flags);
        return WriteAsync(b);
    }

    public Task SendOptionAsync(uint option, byte[] data, uint? lengthOverride = null)
    {
        var b = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), lengthOverride ?? (uint)data.Length);
        data.CopyTo(b, 16);
        return WriteAsync(b);
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync()
    {
        var h = await ReadExactAsync(20);
        Assert.Equal(OptionReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(h));
        var length = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        var data = await ReadExactAsync((int)length);
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), data);
    }

    /// <summary>Reads option replies until a final one (ACK or error); returns all of them.</summary>
    public async Task<List<(uint Option, uint Type, byte[] Data)>> ReadOptionRepliesAsync()
    {
        var replies = new List<(uint, uint, byte[])>();
        while (true)
        {
            var reply = await ReadOptionReplyAsync();
            replies.Add(reply);
            if (reply.Type == 1 || (reply.Type & 0x8000_0000) != 0)
            {
                return replies;
            }
        }
    }

    public static byte[] InfoRequest(string name, params ushort[] infos)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var b = new byte[4 + n.Length + 2 + (2 * infos.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)n.Length);
        n.CopyTo(b, 4);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + n.Length), (ushort)infos.Length);
        for (var i = 0; i < infos.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6 + n.Length + (2 * i)), infos[i]);
        }

        return b;
    }

    public static byte[] MetaContextRequest(string name, params string[] queries)
    {
        var ms = new MemoryStream();
        void U32(uint v)
        {
            Span<byte> t = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(t, v);
            ms.Write(t);
        }

        var n = Encoding.UTF8.GetBytes(name);
        U32((uint)n.Length);
        ms.Write(n);
        U32((uint)queries.Length);
        foreach (var q in queries)
        {
            var qb = Encoding.UTF8.GetBytes(q);
            U32((uint)qb.Length);
            ms.Write(qb);
        }

        return ms.ToArray();
    }

    /// <summary>Greeting, flags, optional structured replies and base:allocation, then GO. Returns size and transmission flags.</summary>
    public async Task<(long Size, ushort Flags)> HandshakeAsync(string export, bool structured = true, bool baseAllocation = true)
    {
        await ReadGreetingAsync();
        await SendClientFlagsAsync(3);
        if (structured)
        {
            await SendOptionAsync(8, []);
            Assert.Equal(1u, (await ReadOptionReplyAsync()).Type);
            if (baseAllocation)
            {
                await SendOptionAsync(10, MetaContextRequest(export, "base:allocation"));
                var replies = await ReadOptionRepliesAsync();
                Assert.Equal(1u, replies[^1].Type);
            }
        }

        await SendOptionAsync(7, InfoRequest(export));
        long size = -1;
        ushort flags = 0;
        foreach (var (_, type, data) in await ReadOptionRepliesAsync())
        {
            Assert.True(type is 1 or 3, $"GO failed with reply type 0x{type:x8}: {Encoding.UTF8.GetString(data)}");
            if (type == 3 && BinaryPrimitives.ReadUInt16BigEndian(data) == 0)
            {
                size = BinaryPrimitives.ReadInt64BigEndian(data.AsSpan(2));
                flags = BinaryPrimitives.ReadUInt16BigEndian(data.AsSpan(10));
            }
        }

        return (size, flags);
    }

    public Task SendRequestAsync(ushort flags, ushort command, ulong handle, ulong offset, uint length, byte[]? payload = null, uint magic = RequestMagic)
    {
        var b = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), command);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), handle);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), length);
        payload?.CopyTo(b, 28);
        return WriteAsync(b);
    }

    /// <summary>One reply message: a simple reply (data read only when <paramref name="simpleReadLength"/> and no error) or one structured chunk.</summary>
    public async Task<Reply> ReadReplyAsync(int simpleReadLength = 0)
    {
        var magicBytes = await ReadExactAsync(4);
        var magic = BinaryPrimitives.ReadUInt32BigEndian(magicBytes);
        if (magic == SimpleReplyMagic)
        {
            var h = await ReadExactAsync(12);
            var error = BinaryPrimitives.ReadUInt32BigEndian(h);
            var handle = BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4));
            var data = error == 0 && simpleReadLength > 0 ? await ReadExactAsync(simpleReadLength) : [];
            return new Reply(false, handle, error, 1, 0, data);
        }

        Assert.Equal(StructuredReplyMagic, magic);
        var sh = await ReadExactAsync(16);
        var flags = BinaryPrimitives.ReadUInt16BigEndian(sh);
        var type = BinaryPrimitives.ReadUInt16BigEndian(sh.AsSpan(2));
        var h2 = BinaryPrimitives.ReadUInt64BigEndian(sh.AsSpan(4));
        var length = BinaryPrimitives.ReadUInt32BigEndian(sh.AsSpan(12));
        var payload = await ReadExactAsync((int)length);
        var err = (type & 0x8000) != 0 ? BinaryPrimitives.ReadUInt32BigEndian(payload) : 0;
        return new Reply(true, h2, err, flags, type, payload);
    }

    /// <summary>True if the server closes the connection (EOF or reset) within the deadline.</summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan deadline)
    {
        using var cts = new CancellationTokenSource(deadline);
        var buffer = new byte[65536];
        try
        {
            while (true)
            {
                var n = await _stream.ReadAsync(buffer, cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    public async Task WriteAsync(byte[] bytes)
    {
        await _stream.WriteAsync(bytes);
        await _stream.FlushAsync();
    }

    public async Task<byte[]> ReadExactAsync(int count)
    {
        var b = new byte[count];
        await _stream.ReadExactlyAsync(b);
        return b;
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _owner?.Dispose();
    }

    public readonly record struct Reply(bool Structured, ulong Handle, uint Error, ushort Flags, ushort Type, byte[] Payload)
    {
        public bool Done => (Flags & 1) != 0;
    }
}
