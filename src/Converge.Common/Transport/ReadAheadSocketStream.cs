using System.Net.Sockets;

namespace Converge.Common.Transport;

/// <summary>
/// The stream under <see cref="System.Net.Security.SslStream"/>: reads from the socket in large receives (up to 128 KiB) and hands them
/// out as the TLS stream asks, a TLS record (at most ~16 KiB) at a time; writes go straight to the socket.
/// Over a bare <see cref="NetworkStream"/> every record cost its own receive syscall (64 per MiB), most of the TLS
/// cost of a 1 MiB write on a loaded host. The socket belongs to the <see cref="SocketTransport"/>.
/// </summary>
internal sealed class ReadAheadSocketStream : Stream
{
    private const int ReadAheadBytes = 128 * 1024;

    private readonly Socket _socket;
    // Not pooled: a connection can be disposed while its reader still receives into this buffer.
    private readonly byte[] _buffer = GC.AllocateUninitializedArray<byte>(ReadAheadBytes);
    private int _start;
    private int _end;

    public ReadAheadSocketStream(Socket socket)
    {
        _socket = socket;
    }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var own = _buffer;
        if (_start == _end)
        {
            if (buffer.Length >= own.Length)
            {
                return await _socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            }

            _start = 0;
            _end = await _socket.ReceiveAsync(own.AsMemory(), SocketFlags.None, cancellationToken);
            if (_end == 0)
            {
                return 0;
            }
        }

        var take = Math.Min(buffer.Length, _end - _start);
        own.AsSpan(_start, take).CopyTo(buffer.Span);
        _start += take;
        return take;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty)
        {
            var n = await _socket.SendAsync(buffer, SocketFlags.None, cancellationToken);
            buffer = buffer[n..];
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("asynchronous use only");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("asynchronous use only");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();
}
