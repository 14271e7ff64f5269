using System.Diagnostics;
using System.Net;
using Converge.Coordinator.Peer;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Bench;

/// <summary>
/// Peer protocol round trips between two processes on loopback, with a handler that does no I/O, so only the protocol,
/// sockets and thread hops are measured:
/// <c>Converge.Bench peer-server PORT</c> in one process, <c>Converge.Bench peer-client PORT QD SECONDS BYTES read|write SERVERPID</c>
/// in another. Prints requests per second, mean latency and CPU time per request of the client and of the server.
/// </summary>
internal static class PeerBench
{
    public static async Task ServeAsync(int port)
    {
        await using var listener = new PeerListener(new IPEndPoint(IPAddress.Loopback, port), new NullHandler(), NullLogger<PeerListener>.Instance);
        await listener.StartAsync(CancellationToken.None);
        await Task.Delay(Timeout.Infinite);
    }

    public static async Task RunClientAsync(int port, int depth, double seconds, int bytes, bool write, int serverPid)
    {
        await using var client = new PeerClient(new IPEndPoint(IPAddress.Loopback, port));
        var payload = new byte[bytes];
        var target = Guid.NewGuid();
        var op = write ? PeerOp.Write : PeerOp.Read;
        async Task<(long Count, double LatencySum)> Worker(double duration)
        {
            var buffer = new byte[bytes];
            var stopAt = Stopwatch.GetTimestamp() + (long)(duration * Stopwatch.Frequency);
            long count = 0;
            double sum = 0;
            while (Stopwatch.GetTimestamp() < stopAt)
            {
                var start = Stopwatch.GetTimestamp();
                await client.SendAsync(new PeerRequestHeader(op, PeerFlags.None, 0, target, 1, 1, 0, bytes), write ? payload : ReadOnlyMemory<byte>.Empty, write ? Memory<byte>.Empty : buffer, CancellationToken.None);
                sum += Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                count++;
            }

            return (count, sum);
        }

        await Task.WhenAll(Enumerable.Range(0, depth).Select(_ => Worker(1)));   // warm-up (JIT tiers, connection)
        var clientCpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var serverCpu0 = ServerCpu(serverPid);
        var clock = Stopwatch.StartNew();
        var results = await Task.WhenAll(Enumerable.Range(0, depth).Select(_ => Worker(seconds)));
        var elapsed = clock.Elapsed.TotalSeconds;
        var clientCpu = (Process.GetCurrentProcess().TotalProcessorTime - clientCpu0).TotalMicroseconds;
        var serverCpu = (ServerCpu(serverPid) - serverCpu0) * 1e6;
        var count = results.Sum(r => r.Count);
        Console.WriteLine(
            $"{(write ? "write" : "read")} {bytes} B QD{depth}: {count / elapsed:F0} req/s, mean {results.Sum(r => r.LatencySum) / count:F1} µs, " +
            $"CPU per request: client {clientCpu / count:F1} µs, server {serverCpu / count:F1} µs");
    }

    private static double ServerCpu(int pid)
    {
        var fields = File.ReadAllText($"/proc/{pid}/stat").Split(')')[1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return (long.Parse(fields[11], System.Globalization.CultureInfo.InvariantCulture) + long.Parse(fields[12], System.Globalization.CultureInfo.InvariantCulture)) / 100.0;
    }

    private sealed class NullHandler : IPeerRequestHandler
    {
        public int ReplyCapacity(in PeerRequestHeader header) => header.Op == PeerOp.Read ? header.Length : 0;

        public ValueTask<PeerResult> HandleAsync(
            PeerRequestHeader header, ReadOnlyMemory<byte> payload, ReadOnlyMemory<uint> blockCrcs, Memory<byte> reply, CancellationToken cancellationToken) =>
            ValueTask.FromResult(header.Op == PeerOp.Read ? new PeerResult(0, header.Length) : PeerResult.Ok);
    }
}
