using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Converge.Metadata;
using Converge.Metadata.Raft;
using Converge.Placement;

// Durability probe: a three-member metadata cluster with one member per process.
//
//   probe run <root> <proposals> [--no-follower-flush] [--strace <dir>]
//       Cold-starts the leader in this process, starts two follower processes (each under strace when --strace is
//       given: one trace file per follower), adds them as voters, proposes <proposals> commands one at a time and
//       prints the commit latency. Each proposal is logged on stdout with a CLOCK_REALTIME timestamp so the traces
//       can be matched against it.
//   probe node <dir> <port> [--no-follower-flush]
//       One joining member; runs until its standard input closes.
//
// --no-follower-flush runs DotNext's plain WriteAheadLog (a follower flushes at commit, not before acknowledging).
if (args.Length >= 3 && args[0] == "node")
{
    return await NodeAsync(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), FollowerFlush(args));
}

if (args.Length >= 3 && args[0] == "run")
{
    var traceIndex = Array.IndexOf(args, "--strace");
    var traceDirectory = traceIndex > 0 && traceIndex + 1 < args.Length ? args[traceIndex + 1] : null;
    return await RunAsync(args[1], int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), FollowerFlush(args), traceDirectory);
}

Console.Error.WriteLine("usage: probe run <root> <proposals> [--no-follower-flush] [--strace <dir>] | probe node <dir> <port> [--no-follower-flush]");
return 2;

static bool FollowerFlush(string[] args) => !args.Contains("--no-follower-flush");

static MetadataOptions Options(string directory, int port, bool coldStart, bool followerFlush) => new()
{
    DataDirectory = directory,
    RaftEndPoint = new IPEndPoint(IPAddress.Loopback, port),
    ColdStart = coldStart,
    FlushFollowerAppends = followerFlush,
};

static async Task<int> NodeAsync(string directory, int port, bool followerFlush)
{
    await using var service = new RaftMetadataService(Options(directory, port, coldStart: false, followerFlush));
    await service.StartAsync(CancellationToken.None);
    Console.WriteLine($"ready pid={Environment.ProcessId} endpoint={service.RaftEndpoint}");
    await Console.In.ReadToEndAsync();
    return 0;
}

static async Task<int> RunAsync(string root, int proposals, bool followerFlush, string? traceDirectory)
{
    Directory.CreateDirectory(root);
    if (traceDirectory is not null)
    {
        Directory.CreateDirectory(traceDirectory);
    }

    var followers = new List<Process>();
    try
    {
        await using var leader = new RaftMetadataService(Options(Path.Combine(root, "node0"), FreePort(), coldStart: true, followerFlush));
        await leader.StartAsync(CancellationToken.None);
        await Until(() => leader.IsLeader, "the cold-started member to lead");
        Console.WriteLine($"leader pid={Environment.ProcessId} endpoint={leader.RaftEndpoint} follower-flush={followerFlush}");
        for (var i = 1; i <= 2; i++)
        {
            var port = FreePort();
            var follower = StartFollower(Path.Combine(root, $"node{i}"), port, followerFlush, traceDirectory, i);
            followers.Add(follower);
            var ready = await follower.StandardOutput.ReadLineAsync();
            Console.WriteLine($"follower{i}: {ready}");
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await leader.AddVoterAsync($"127.0.0.1:{port}", cts.Token);
        }

        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await leader.ProposeAsync(new InitializeCluster(Guid.NewGuid(), "cluster-1", "probe", DateTimeOffset.UnixEpoch, StoragePolicy.Default, 3), deadline.Token);
        await Task.Delay(500);
        var samples = new List<double>(proposals);
        for (var i = 0; i < proposals; i++)
        {
            var command = new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = $"probe{i}" });
            var before = DateTimeOffset.UtcNow;
            var started = Stopwatch.GetTimestamp();
            var result = await leader.ProposeAsync(command, deadline.Token);
            var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            samples.Add(elapsed);
            Console.WriteLine($"proposal index={result.Index} start={before.ToUnixTimeMilliseconds() / 1000.0:F3} ms={elapsed:F3}");
        }

        samples.Sort();
        Console.WriteLine(
            $"commit latency over {samples.Count} sequential proposals (follower-flush={followerFlush}, one process per member): " +
            $"median {samples[samples.Count / 2]:F2} ms, p99 {samples[(int)(samples.Count * 0.99)]:F2} ms, max {samples[^1]:F2} ms");
        await Task.Delay(500);
        return 0;
    }
    finally
    {
        foreach (var follower in followers)
        {
            follower.StandardInput.Close();
            if (!follower.WaitForExit(TimeSpan.FromSeconds(10)))
            {
                follower.Kill(entireProcessTree: true);
            }

            follower.Dispose();
        }
    }
}

static Process StartFollower(string directory, int port, bool followerFlush, string? traceDirectory, int number)
{
    var self = Path.Combine(AppContext.BaseDirectory, "Converge.Metadata.DurabilityProbe.dll");
    string[] node = ["node", directory, port.ToString(System.Globalization.CultureInfo.InvariantCulture)];
    if (!followerFlush)
    {
        node = [.. node, "--no-follower-flush"];
    }

    var info = traceDirectory is null
        ? new ProcessStartInfo("dotnet")
        : new ProcessStartInfo("strace");
    if (traceDirectory is not null)
    {
        // -f: every thread; -tt: wall-clock microseconds; msync/fsync/fdatasync: flushes; pwrite64: the write-through
        // checkpoint; sendto/sendmsg/write: the reply to the leader.
        foreach (var arg in new[]
        {
            "-f", "-tt", "-e", "trace=msync,fsync,fdatasync,sync_file_range,pwrite64,pwritev,sendto,sendmsg,write,recvfrom,recvmsg,read",
            "-o", Path.Combine(traceDirectory, $"follower{number}.strace"), "--", "dotnet",
        })
        {
            info.ArgumentList.Add(arg);
        }
    }

    info.ArgumentList.Add(self);
    foreach (var arg in node)
    {
        info.ArgumentList.Add(arg);
    }

    info.RedirectStandardInput = true;
    info.RedirectStandardOutput = true;
    info.UseShellExecute = false;
    return Process.Start(info) ?? throw new InvalidOperationException("could not start a follower");
}

static async Task Until(Func<bool> condition, string what)
{
    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
    while (!condition())
    {
        if (DateTime.UtcNow > deadline)
        {
            throw new TimeoutException($"timed out waiting for {what}");
        }

        await Task.Delay(20);
    }
}

static int FreePort()
{
    using var listener = new TcpListener(IPAddress.Loopback, 0);
    listener.Start();
    return ((IPEndPoint)listener.LocalEndpoint).Port;
}
