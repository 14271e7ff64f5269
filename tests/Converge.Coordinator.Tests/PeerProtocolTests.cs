using System.Net;
using System.Net.Sockets;
using Converge.Common;
using Converge.Coordinator.Peer;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Coordinator.Tests;

/// <summary>The peer protocol over real loopback TCP: the peer listener and the multiplexing client.</summary>
public sealed class PeerProtocolTests : IAsyncLifetime
{
    private readonly MemoryComponents _components = new();
    private PeerListener? _server;
    private IPEndPoint _endPoint = new(IPAddress.Loopback, 0);

    public async Task InitializeAsync()
    {
        _server = new PeerListener(new IPEndPoint(IPAddress.Loopback, 0), _components, NullLogger<PeerListener>.Instance);
        await _server.StartAsync(CancellationToken.None);
        _endPoint = (IPEndPoint)_server.LocalEndPoint;
    }

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }

    [Fact]
    public async Task Writes_and_reads_round_trip_with_many_requests_in_flight()
    {
        await using var client = new PeerClient(_endPoint);
        var component = Guid.NewGuid();
        var writes = Enumerable.Range(0, 64).Select(async i =>
        {
            var data = Enumerable.Repeat((byte)i, 4096).ToArray();
            await client.SendAsync(Request(PeerOp.Write, component, i * 4096L, data.Length), data, Memory<byte>.Empty, CancellationToken.None);
        });
        await Task.WhenAll(writes);

        var reads = Enumerable.Range(0, 64).Select(async i =>
        {
            var buffer = new byte[4096];
            var length = await client.SendAsync(Request(PeerOp.Read, component, i * 4096L, buffer.Length), ReadOnlyMemory<byte>.Empty, buffer, CancellationToken.None);
            Assert.Equal(4096, length);
            Assert.All(buffer, b => Assert.Equal((byte)i, b));
        });
        await Task.WhenAll(reads);
    }

    [Fact]
    public async Task A_large_write_and_read_cross_many_segments()
    {
        await using var client = new PeerClient(_endPoint);
        var component = Guid.NewGuid();
        var data = new byte[BlockGeometry.MaxRequestBytes];
        new Random(7).NextBytes(data);

        await client.SendAsync(Request(PeerOp.Write, component, 0, data.Length), data, Memory<byte>.Empty, CancellationToken.None);
        var back = new byte[data.Length];
        await client.SendAsync(Request(PeerOp.Read, component, 0, back.Length), ReadOnlyMemory<byte>.Empty, back, CancellationToken.None);

        Assert.True(data.AsSpan().SequenceEqual(back));
    }

    [Fact]
    public async Task Refusals_arrive_as_volume_errors_and_the_connection_keeps_working()
    {
        await using var client = new PeerClient(_endPoint);
        var stale = Request(PeerOp.Write, Guid.NewGuid(), 0, 4096) with { Generation = -1 };

        var error = await Assert.ThrowsAsync<VolumeException>(async () =>
            await client.SendAsync(stale, new byte[4096], Memory<byte>.Empty, CancellationToken.None));
        Assert.Equal(VolumeError.ReadOnly, error.Error);

        await client.SendAsync(Request(PeerOp.Ping, Guid.Empty, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None);
    }

    [Fact]
    public async Task Malformed_frames_close_only_that_connection()
    {
        using (var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await raw.ConnectAsync(_endPoint);
            await raw.SendAsync(new byte[PeerRequestHeader.Size].Select((_, i) => (byte)i).ToArray());
            var buffer = new byte[16];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            Assert.Equal(0, await raw.ReceiveAsync(buffer, timeout.Token));
        }

        await using var client = new PeerClient(_endPoint);
        await client.SendAsync(Request(PeerOp.Ping, Guid.Empty, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None);
    }

    [Fact]
    public async Task A_write_damaged_on_the_wire_is_refused_and_nothing_is_stored()
    {
        var component = Guid.NewGuid();
        var data = new byte[16384];
        new Random(3).NextBytes(data);
        var header = Request(PeerOp.Write, component, 0, data.Length) with { RequestId = 1, PayloadCrc = Checksums.Crc32C(data) };
        var frame = new byte[PeerRequestHeader.Size + data.Length];
        header.Write(frame);
        data.CopyTo(frame, PeerRequestHeader.Size);
        frame[PeerRequestHeader.Size + 5000] ^= 0x10;   // one bit flipped in flight, past TCP's checksum

        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await raw.ConnectAsync(_endPoint);
        await raw.SendAsync(frame);
        var reply = await ReceiveReplyAsync(raw);
        Assert.Equal(1UL, reply.RequestId);
        Assert.Equal((int)VolumeError.ChecksumMismatch + 1, reply.Status);
        Assert.Equal(0, _components.Writes);

        // The same connection goes on: the intact frame is taken.
        frame[PeerRequestHeader.Size + 5000] ^= 0x10;
        await raw.SendAsync(frame);
        reply = await ReceiveReplyAsync(raw);
        Assert.Equal(0, reply.Status);
        Assert.Equal(1, _components.Writes);
    }

    [Fact]
    public async Task A_request_whose_header_was_damaged_closes_the_connection_without_being_served()
    {
        var header = Request(PeerOp.Write, Guid.NewGuid(), 0, 4096) with { RequestId = 1, PayloadCrc = Checksums.Crc32C(new byte[4096]) };
        var frame = new byte[PeerRequestHeader.Size + 4096];
        header.Write(frame);
        frame[50] ^= 0x01;   // the offset: served, it would land in the wrong place

        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await raw.ConnectAsync(_endPoint);
        await raw.SendAsync(frame);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        Assert.Equal(0, await raw.ReceiveAsync(new byte[64], timeout.Token));
        Assert.Equal(0, _components.Writes);
    }

    [Fact]
    public async Task A_write_of_whole_blocks_hands_the_checked_block_checksums_to_the_handler()
    {
        await using var client = new PeerClient(_endPoint);
        var data = new byte[3 * 4096];
        new Random(5).NextBytes(data);
        await client.SendAsync(Request(PeerOp.Write, Guid.NewGuid(), 8192, data.Length), data, Memory<byte>.Empty, CancellationToken.None);

        var expected = new uint[3];
        Checksums.Crc32CBlocks(data, expected);
        Assert.Equal(expected, _components.LastBlockCrcs);

        // Not block-aligned: checked as one buffer, no block checksums to hand over.
        await client.SendAsync(Request(PeerOp.Write, Guid.NewGuid(), 512, 4096), data.AsMemory(0, 4096), Memory<byte>.Empty, CancellationToken.None);
        Assert.Empty(_components.LastBlockCrcs);
    }

    [Theory]
    [InlineData(1, true)]    // damaged once: the read is asked again and succeeds
    [InlineData(3, false)]   // damaged every time: an I/O error after 3 attempts, not a checksum error
    public async Task A_read_reply_damaged_on_the_wire_is_asked_again(int damagedReplies, bool succeeds)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var data = new byte[8192];
        new Random(13).NextBytes(data);
        var requests = 0;
        var fakePeer = Task.Run(async () =>
        {
            using var connection = await listener.AcceptAsync();
            var header = new byte[PeerRequestHeader.Size];
            while (true)
            {
                for (var got = 0; got < header.Length;)
                {
                    var n = await connection.ReceiveAsync(header.AsMemory(got));
                    if (n == 0)
                    {
                        return;
                    }

                    got += n;
                }

                Assert.True(PeerRequestHeader.TryRead(header, out var request));
                requests++;
                var reply = new byte[PeerReplyHeader.Size + data.Length];
                data.CopyTo(reply, PeerReplyHeader.Size);
                new PeerReplyHeader(request.RequestId, 0, data.Length) { PayloadCrc = Checksums.Crc32C(data) }.Write(reply);
                if (requests <= damagedReplies)
                {
                    reply[PeerReplyHeader.Size + 100] ^= 0x04;
                }

                await connection.SendAsync(reply);
            }
        });

        await using (var client = new PeerClient(listener.LocalEndPoint!))
        {
            var remote = new RemoteComponent(Guid.NewGuid(), "c", 1 << 20, client, () => new Fence(1, 1));
            var back = new byte[data.Length];
            if (succeeds)
            {
                await remote.ReadAsync(0, back, CancellationToken.None);
                Assert.Equal(data, back);
                Assert.Equal(2, requests);
            }
            else
            {
                var error = await Assert.ThrowsAsync<VolumeException>(async () => await remote.ReadAsync(0, back, CancellationToken.None));
                Assert.Equal(VolumeError.IO, error.Error);
                Assert.Equal(3, requests);
            }
        }

        await fakePeer.WaitAsync(TimeSpan.FromSeconds(10));
    }

    private static async Task<PeerReplyHeader> ReceiveReplyAsync(Socket raw)
    {
        var buffer = new byte[PeerReplyHeader.Size];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        for (var got = 0; got < buffer.Length;)
        {
            var n = await raw.ReceiveAsync(buffer.AsMemory(got), timeout.Token);
            Assert.NotEqual(0, n);
            got += n;
        }

        Assert.True(PeerReplyHeader.TryRead(buffer, out var reply));
        return reply;
    }

    [Fact]
    public async Task A_vanished_peer_fails_pending_requests_as_unavailable_and_the_client_reconnects()
    {
        await using var client = new PeerClient(_endPoint);
        var component = Guid.NewGuid();
        _components.Hold = new TaskCompletionSource();
        var pending = client.SendAsync(Request(PeerOp.Read, component, 0, 4096), ReadOnlyMemory<byte>.Empty, new byte[4096], CancellationToken.None).AsTask();
        await _components.Held.Task.WaitAsync(TimeSpan.FromSeconds(10));

        await _server!.StopAsync(CancellationToken.None);
        var error = await Assert.ThrowsAsync<VolumeException>(() => pending.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(VolumeError.Unavailable, error.Error);
        _components.Hold.TrySetResult();

        var refused = await Assert.ThrowsAsync<VolumeException>(async () =>
            await client.SendAsync(Request(PeerOp.Ping, Guid.Empty, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None));
        Assert.Equal(VolumeError.Unavailable, refused.Error);
    }

    [Fact]
    public async Task Replies_overtake_a_slow_request_and_a_cancelled_request_leaves_the_connection_usable()
    {
        await using var client = new PeerClient(_endPoint);
        var component = Guid.NewGuid();
        await client.SendAsync(Request(PeerOp.Write, component, 0, 4096), Enumerable.Repeat((byte)7, 4096).ToArray(), Memory<byte>.Empty, CancellationToken.None);

        _components.Hold = new TaskCompletionSource();
        using var cancel = new CancellationTokenSource();
        var destination = new byte[4096];
        var slow = client.SendAsync(Request(PeerOp.Read, component, 0, 4096), ReadOnlyMemory<byte>.Empty, destination, cancel.Token).AsTask();
        await _components.Held.Task.WaitAsync(TimeSpan.FromSeconds(10));
        _components.Hold = null;

        // Served while the first request is still running: replies are not held back behind it.
        for (var i = 0; i < 20; i++)
        {
            await client.SendAsync(Request(PeerOp.Ping, Guid.Empty, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None)
                .AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        }

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => slow);
        Array.Clear(destination);
        _components.Release();

        // The late reply to the cancelled request is dropped without touching its buffer; the connection goes on.
        var back = new byte[4096];
        await client.SendAsync(Request(PeerOp.Read, component, 0, 4096), ReadOnlyMemory<byte>.Empty, back, CancellationToken.None);
        Assert.All(back, b => Assert.Equal(7, b));
        Assert.All(destination, b => Assert.Equal(0, b));
    }

    private static PeerRequestHeader Request(PeerOp op, Guid target, long offset, int length) =>
        new(op, PeerFlags.None, 0, target, 1, 1, offset, length);

    /// <summary>Components held in memory: enough to exercise the wire protocol, which is what this suite tests.</summary>
    private sealed class MemoryComponents : IPeerRequestHandler
    {
        private readonly Dictionary<(Guid, long), byte[]> _blocks = [];

        private TaskCompletionSource? _held;

        public TaskCompletionSource? Hold
        {
            get => _held;
            set
            {
                if (value is not null)
                {
                    _held = value;
                }

                HoldNext = value is not null;
            }
        }

        private bool HoldNext { get; set; }

        public void Release() => _held?.TrySetResult();

        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int ReplyCapacity(in PeerRequestHeader header) => header.Op == PeerOp.Read ? header.Length : 0;

        /// <summary>The block checksums the listener handed over with the last write (empty when it had none).</summary>
        public uint[] LastBlockCrcs { get; private set; } = [];

        public int Writes { get; private set; }

        public async ValueTask<PeerResult> HandleAsync(
            PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken)
        {
            if (header.Generation < 0)
            {
                return PeerResult.Error(VolumeError.ReadOnly);
            }

            if (HoldNext && _held is { } hold)
            {
                Held.TrySetResult();
                await hold.Task.WaitAsync(cancellationToken);
            }

            lock (_blocks)
            {
                switch (header.Op)
                {
                    case PeerOp.Write:
                        Writes++;
                        LastBlockCrcs = blockCrcs.ToArray();
                        for (var i = 0; i < payload.Length; i += 4096)
                        {
                            _blocks[(header.Target, header.Offset + i)] = payload.Slice(i, 4096).ToArray();
                        }

                        return PeerResult.Ok;
                    case PeerOp.Read:
                        for (var i = 0; i < header.Length; i += 4096)
                        {
                            var block = _blocks.GetValueOrDefault((header.Target, header.Offset + i)) ?? new byte[4096];
                            block.CopyTo(reply.Span[i..]);
                        }

                        return new PeerResult(0, header.Length);
                    default:
                        return PeerResult.Ok;
                }
            }
        }
    }
}
