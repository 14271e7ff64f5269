using System.Net;
using Converge.Common;
using Converge.Coordinator.Peer;
using Converge.Coordinator.Tracking;
using Converge.Placement;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Coordinator.Tests;

/// <summary>
/// A replica whose host hangs (SIGSTOP, a frozen link) costs a read latency, never an error or wrong data: the read
/// is served by another replica once the hung one's deadline passes, and the hung one's late answer lands nowhere.
/// The hung replica is a real peer listener whose handler holds READs until released, reached by a real PeerClient.
/// </summary>
public sealed class HungReplicaTests
{
    private const int ObjectSize = 1 << 20;

    [Fact]
    public async Task A_read_from_a_hung_replica_is_served_by_another_and_its_late_reply_does_not_reach_the_buffer()
    {
        var hung = new HoldingHandler();
        await using var listener = new PeerListener(new IPEndPoint(IPAddress.Loopback, 0), hung, NullLogger<PeerListener>.Instance);
        await listener.StartAsync(CancellationToken.None);
        await using var client = new PeerClient(listener.LocalEndPoint);

        var r0 = Data(0, "h1");
        var r1 = Data(1, "h2");
        var witness = new ComponentPlacement(Guid.NewGuid(), ComponentRole.Witness, -1, -1, 0, 0, "h3", "h3", "d3", 1, 0);
        var layout = new ObjectLayout(Guid.NewGuid(), ObjectSize, 2, 1, 1 << 20, ObjectSize, [r0, r1, witness]);
        var good = new MemoryReplica(r1.ComponentId, ObjectSize, isLocal: false);
        Array.Fill(good.Bytes, (byte)0x5A);
        var remote = new RemoteComponent(r0.ComponentId, "r0", ObjectSize, client, () => new Fence(1, 1));
        var observer = new RecordingObserver();
        var volume = new ReplicatedVolume(
            "v", ObjectSize, 1, new StripeMap(layout),
            new Dictionary<Guid, IReplicaComponent> { [r0.ComponentId] = remote, [r1.ComponentId] = good },
            new HashSet<Guid> { r0.ComponentId, r1.ComponentId, witness.ComponentId }, new WriteIntents(), new RangeLock(), observer,
            replicaTimeout: TimeSpan.FromMilliseconds(300));

        // Reads rotate over the replicas: several of them meet the hung one, and every one returns the good bytes.
        var buffers = new List<byte[]>();
        for (var i = 0; i < 4; i++)
        {
            var buffer = new byte[64 * 1024];
            await volume.ReadAsync(i * buffer.Length, buffer, CancellationToken.None);
            Assert.All(buffer, b => Assert.Equal(0x5A, b));
            buffers.Add(buffer);
        }

        Assert.True(hung.Held > 0, "no read went to the hung replica");
        Assert.NotEmpty(observer.Failed);
        Assert.All(observer.Failed, f => Assert.Equal(r0.ComponentId, f));

        // The host wakes up and answers every held READ with other bytes: none may land in a buffer already returned.
        hung.Release();
        await hung.WaitAnsweredAsync(TimeSpan.FromSeconds(10));
        await client.SendAsync(new PeerRequestHeader(PeerOp.Ping, PeerFlags.None, 0, Guid.Empty, 0, 0, 0, 0), ReadOnlyMemory<byte>.Empty, Memory<byte>.Empty, CancellationToken.None);
        Assert.All(buffers, buffer => Assert.All(buffer, b => Assert.Equal(0x5A, b)));
    }

    private static ComponentPlacement Data(int replica, string host) =>
        new(Guid.NewGuid(), ComponentRole.Data, replica, 0, 0, ObjectSize, host, host, "d-" + host, 1, 0);

    private sealed class RecordingObserver : IReplicaObserver
    {
        public System.Collections.Concurrent.ConcurrentBag<Guid> Failed { get; } = [];

        public void ReadFailed(Guid componentId, VolumeException error) => Failed.Add(componentId);

        public void Repaired(Guid componentId, long bytes)
        {
        }
    }

    /// <summary>Holds every READ until released, then answers it with 0xEE bytes (what a stale or reused buffer would show).</summary>
    private sealed class HoldingHandler : IPeerRequestHandler
    {
        private readonly TaskCompletionSource released = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int held;
        private int answered;

        public int Held => Volatile.Read(ref held);

        public int ReplyCapacity(in PeerRequestHeader header) => header.Op == PeerOp.Read ? header.Length : 0;

        public void Release() => released.TrySetResult();

        public async Task WaitAnsweredAsync(TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (Volatile.Read(ref answered) < Held && DateTime.UtcNow < deadline)
            {
                await Task.Delay(10);
            }
        }

        public async ValueTask<PeerResult> HandleAsync(
            PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken)
        {
            if (header.Op != PeerOp.Read)
            {
                return PeerResult.Ok;
            }

            Interlocked.Increment(ref held);
            await released.Task;
            reply.Span[..header.Length].Fill(0xEE);
            Interlocked.Increment(ref answered);
            return new PeerResult(0, header.Length);
        }
    }
}
