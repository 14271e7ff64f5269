using System.Buffers;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Converge.Common.Transport;

namespace Converge.Nbd.Protocol;

/// <summary>
/// One client socket with its receive buffer, shared by the handshake and the transmission phase, so bytes a client
/// sends right behind its last option are not lost between the phases. Only the session's reader touches the receive
/// side; the handshake's replies go through <see cref="Output"/> and <see cref="FlushAsync"/>.
/// </summary>
internal sealed class NbdConnection : IDisposable
{
    /// <summary>Receive buffer size: many small requests per receive; a WRITE payload beyond what is buffered is received straight into its own buffer.</summary>
    public const int ReceiveBufferSize = 256 * 1024;

    /// <summary>
    /// Most bytes the receive after a payload received straight from the socket may take: a client streaming large
    /// writes sends the next header with the next payload behind it, and whatever part of that payload lands in the
    /// buffer is copied out again (a 256 KiB receive copied a quarter of every 1 MiB write twice).
    /// </summary>
    private const int ReceiveAfterLargePayload = 4096;

    private byte[]? _receive = ArrayPool<byte>.Shared.Rent(ReceiveBufferSize);
    private bool _lastPayloadLarge;
    private int _receives;
    private ArrayBufferWriter<byte>? _output;

    public NbdConnection(Socket socket)
    {
        Transport = new SocketTransport(socket);
    }

    /// <summary>The socket, or TLS over it after NBD_OPT_STARTTLS.</summary>
    public SocketTransport Transport { get; }

    /// <summary>Receives completed so far (the idle watch compares counts instead of reading a clock per receive).</summary>
    public int Receives => Volatile.Read(ref _receives);

    /// <summary>The receive buffer; unparsed bytes are <c>[Start, End)</c>.</summary>
    public byte[] Buffer => _receive ?? throw new ObjectDisposedException(nameof(NbdConnection));

    public int Start { get; set; }

    public int End { get; set; }

    public int Buffered => End - Start;

    /// <summary>Handshake output, sent by <see cref="FlushAsync"/> (the handshake is not hot: clarity first).</summary>
    public IBufferWriter<byte> Output => _output ??= new ArrayBufferWriter<byte>(1024);

    /// <summary>Sends everything written to <see cref="Output"/>.</summary>
    public async ValueTask FlushAsync(CancellationToken cancellationToken)
    {
        if (_output is null || _output.WrittenCount == 0)
        {
            return;
        }

        await SendAllAsync(_output.WrittenMemory, cancellationToken);
        _output.ResetWrittenCount();
    }

    /// <summary>
    /// Receives more bytes into the buffer, first moving the unparsed bytes to its front when fewer than
    /// <paramref name="needed"/> bytes of room are left after them. Returns the count received (0: end of stream).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> ReceiveMoreAsync(int needed, CancellationToken cancellationToken)
    {
        var buffer = Buffer;
        if (Start == End)
        {
            Start = End = 0;
        }
        else if (buffer.Length - Start < needed || End == buffer.Length)
        {
            buffer.AsSpan(Start, End - Start).CopyTo(buffer);
            End -= Start;
            Start = 0;
        }

        var room = buffer.Length - End;
        if (_lastPayloadLarge)
        {
            _lastPayloadLarge = false;
            room = Math.Min(room, Math.Max(needed, ReceiveAfterLargePayload));
        }

        var n = await Transport.ReceiveAsync(buffer.AsMemory(End, room), cancellationToken);
        _receives++;
        End += n;
        return n;
    }

    /// <summary>Fills <paramref name="destination"/> from the buffer, then straight from the socket. False when the stream ended first.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<bool> ReadExactAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        var take = Math.Min(Buffered, destination.Length);
        Buffer.AsSpan(Start, take).CopyTo(destination.Span);
        Start += take;
        destination = destination[take..];
        if (destination.IsEmpty)
        {
            return true;
        }

        if (destination.Length < Buffer.Length / 2)
        {
            // Small: receive into the buffer (it may bring the next message too).
            while (Buffered < destination.Length)
            {
                if (await ReceiveMoreAsync(destination.Length, cancellationToken) == 0)
                {
                    return false;
                }
            }

            Buffer.AsSpan(Start, destination.Length).CopyTo(destination.Span);
            Start += destination.Length;
            return true;
        }

        _lastPayloadLarge = true;
        while (!destination.IsEmpty)
        {
            var n = await Transport.ReceiveAsync(destination, cancellationToken);
            _receives++;
            if (n == 0)
            {
                return false;
            }

            destination = destination[n..];
        }

        return true;
    }

    /// <summary>Consumes and discards <paramref name="count"/> bytes; false when the stream ended first.</summary>
    public async ValueTask<bool> SkipAsync(long count, CancellationToken cancellationToken)
    {
        while (true)
        {
            var take = (int)Math.Min(Buffered, count);
            Start += take;
            count -= take;
            if (count == 0)
            {
                return true;
            }

            if (await ReceiveMoreAsync(1, cancellationToken) == 0)
            {
                return false;
            }
        }
    }

    public ValueTask SendAllAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) => Transport.SendAllAsync(data, cancellationToken);

    /// <summary>Shuts both directions down (FIN after whatever was sent; a blocked receive returns 0). Never throws.</summary>
    public void Shutdown() => Transport.Shutdown();

    /// <summary>Closes the socket and returns the receive buffer; call once, after every reader and sender has stopped.</summary>
    public void Dispose()
    {
        Shutdown();
        Transport.Dispose();
        var buffer = _receive;
        _receive = null;
        if (buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
