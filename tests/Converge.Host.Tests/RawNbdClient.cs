using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace Converge.Host.Tests;

/// <summary>
/// A deliberately minimal NBD client over a raw socket (fixed newstyle, NBD_OPT_GO, simple replies), so tests can
/// misbehave at precise points of the protocol.
/// </summary>
internal sealed class RawNbdClient : IAsyncDisposable
{
    public const ulong NbdMagic = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptReplyMagic = 0x0003e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public static readonly TimeSpan IoTimeout = TimeSpan.FromSeconds(15);

    private readonly TcpClient client;

    private RawNbdClient(TcpClient client)
    {
        this.client = client;
        Stream = client.GetStream();
    }

    public NetworkStream Stream { get; }

    public ulong ExportSize { get; private set; }

    public static async Task<RawNbdClient> ConnectAsync(int port)
    {
        var tcp = new TcpClient { NoDelay = true };
        using var cts = new CancellationTokenSource(IoTimeout);
        await tcp.ConnectAsync("127.0.0.1", port, cts.Token);
        return new RawNbdClient(tcp);
    }

    /// <summary>Reads the server greeting and returns its handshake flags.</summary>
    public async Task<ushort> ReadGreetingAsync()
    {
        var greeting = await ReadExactAsync(18);
        Assert.Equal(NbdMagic, BinaryPrimitives.ReadUInt64BigEndian(greeting));
        Assert.Equal(IHaveOpt, BinaryPrimitives.ReadUInt64BigEndian(greeting.AsSpan(8)));
        return BinaryPrimitives.ReadUInt16BigEndian(greeting.AsSpan(16));
    }

    /// <summary>Full handshake to the transmission phase on <paramref name="export"/> (NBD_OPT_GO).</summary>
    public async Task HandshakeAsync(string export)
    {
        var flags = await ReadGreetingAsync();
        Assert.True((flags & 1) != 0, "server must offer fixed newstyle");
        await WriteAsync(Be32(3)); // FIXED_NEWSTYLE | NO_ZEROES
        var name = Encoding.UTF8.GetBytes(export);
        var data = new byte[4 + name.Length + 2];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)name.Length);
        name.CopyTo(data, 4);
        await SendOptionAsync(7, data);
        while (true)
        {
            var header = await ReadExactAsync(20);
            Assert.Equal(OptReplyMagic, BinaryPrimitives.ReadUInt64BigEndian(header));
            var type = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(16));
            var payload = await ReadExactAsync((int)length);
            if (type == 1)
            {
                return; // NBD_REP_ACK
            }

            if ((type & 0x80000000) != 0)
            {
                throw new InvalidOperationException($"NBD_OPT_GO refused: reply type 0x{type:x} {Encoding.UTF8.GetString(payload)}");
            }

            if (type == 3 && payload.Length >= 12 && BinaryPrimitives.ReadUInt16BigEndian(payload) == 0)
            {
                ExportSize = BinaryPrimitives.ReadUInt64BigEndian(payload.AsSpan(2));
            }
        }
    }

    public async Task SendOptionAsync(uint option, byte[] data)
    {
        var header = new byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(header, IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(12), (uint)data.Length);
        await WriteAsync([.. header, .. data]);
    }

    public static byte[] Request(ushort type, ulong cookie, ulong offset, uint length, ushort flags = 0, uint magic = RequestMagic)
    {
        var r = new byte[28];
        BinaryPrimitives.WriteUInt32BigEndian(r, magic);
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(r.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(8), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(r.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(r.AsSpan(24), length);
        return r;
    }

    /// <summary>Reads a simple reply; returns (error, cookie).</summary>
    public async Task<(uint Error, ulong Cookie)> ReadSimpleReplyAsync()
    {
        var reply = await ReadExactAsync(16);
        Assert.Equal(SimpleReplyMagic, BinaryPrimitives.ReadUInt32BigEndian(reply));
        return (BinaryPrimitives.ReadUInt32BigEndian(reply.AsSpan(4)), BinaryPrimitives.ReadUInt64BigEndian(reply.AsSpan(8)));
    }

    public async Task WriteAsync(byte[] data)
    {
        using var cts = new CancellationTokenSource(IoTimeout);
        await Stream.WriteAsync(data, cts.Token);
    }

    public async Task<byte[]> ReadExactAsync(int count)
    {
        var buffer = new byte[count];
        using var cts = new CancellationTokenSource(IoTimeout);
        await Stream.ReadExactlyAsync(buffer, cts.Token);
        return buffer;
    }

    /// <summary>True when the server closes the connection (EOF or reset) within the timeout, reading and discarding anything it sends first.</summary>
    public async Task<bool> ServerClosesAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var buffer = new byte[4096];
        try
        {
            while (await Stream.ReadAsync(buffer, cts.Token) > 0)
            {
            }

            return true;
        }
        catch (IOException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>Closes with a TCP reset instead of a FIN, like a client that died.</summary>
    public void Abort()
    {
        client.Client.LingerState = new LingerOption(true, 0);
        client.Client.Close();
    }

    public ValueTask DisposeAsync()
    {
        client.Dispose();
        return ValueTask.CompletedTask;
    }

    private static byte[] Be32(uint value)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, value);
        return b;
    }
}
