using System.Globalization;
using Xunit.Abstractions;

namespace Converge.Host.Tests;

/// <summary>
/// kill -9 in the middle of a write stream, restart, and check every 4 KiB block: internally consistent (never a mix
/// of two writes), never older than its last durable write, no read or checksum errors. Iterations:
/// <c>CONVERGE_CRASH_ITERATIONS</c> (default 10); seed: <c>CONVERGE_CRASH_SEED</c> (default random, printed).
/// </summary>
public sealed class CrashTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir dir = new("converge-crash");

    public void Dispose() => dir.Dispose();

    [Fact]
    public async Task Kill9_during_writes_loses_nothing_durable_and_tears_no_block()
    {
        var iterations = EnvInt("CONVERGE_CRASH_ITERATIONS", 10);
        var seed = EnvInt("CONVERGE_CRASH_SEED", Random.Shared.Next(1, 1_000_000));
        output.WriteLine($"crash test: {iterations} iterations, seed {seed} (CONVERGE_CRASH_SEED to repeat)");
        var random = new Random(seed);
        await using var host = await HostProcess.StartAsync(dir.File("host"), "1GiB");
        long totalWrites = 0, totalDurable = 0;

        for (var i = 0; i < iterations; i++)
        {
            var name = $"crash-{i}";
            var vdisk = await host.Api.CreateVirtualDiskAsync(name, "64MiB");
            var writerSeed = random.Next(1, int.MaxValue);
            var flushEvery = random.Next(8, 128);
            var durableLinesBeforeKill = random.Next(1, 6);
            var delayMs = random.Next(0, 800);
            var depth = new[] { 1, 4, 16 }[random.Next(3)];
            var writerLog = dir.File($"writer-{i}.log");

            await using (var writer = NbdClients.StartPython("crash_io.py", ["write", vdisk.NbdUri, Str(writerSeed), Str(flushEvery), "5", Str(depth)]))
            {
                await writer.WaitForAsync(
                    lines => lines.Count(l => l.StartsWith("FLUSHED ", StringComparison.Ordinal)) >= durableLinesBeforeKill,
                    TimeSpan.FromSeconds(60));
                await Task.Delay(delayMs);
                await host.Kill9Async();
                var exit = await writer.WaitForExitAsync(TimeSpan.FromSeconds(60));
                Assert.True(exit == 0, $"writer exited with {exit}\n{writer.Describe()}");
                await File.WriteAllLinesAsync(writerLog, writer.Lines);
                Assert.Contains(writer.Lines, l => l.StartsWith("STOPPED ", StringComparison.Ordinal));
            }

            await host.StartAgainAsync();
            var verify = await NbdClients.PythonAsync("crash_io.py", ["verify", host.NbdUri(name), Str(writerSeed), writerLog], TimeSpan.FromMinutes(2));
            Assert.True(
                verify.ExitCode == 0,
                $"iteration {i} (seed {seed}, writer seed {writerSeed}, depth {depth}, flush every {flushEvery}, kill after {durableLinesBeforeKill} flushes + {delayMs} ms) failed:\n{verify}\n{host.LogTail()}");
            var verified = verify.Stdout.Split('\n').Single(l => l.StartsWith("VERIFIED ", StringComparison.Ordinal));
            output.WriteLine($"iteration {i}: {verified} (depth {depth}, flush every {flushEvery}, killed {delayMs} ms after {durableLinesBeforeKill} flushes)");
            totalWrites += Field(verified, "written");
            totalDurable += Field(verified, "durable");

            var info = await host.Api.GetVirtualDiskAsync(name);
            Assert.Equal(0, info.ChecksumErrors);
            await host.Api.DeleteVirtualDiskAsync(name);
        }

        var disks = await host.Api.ListDisksAsync();
        Assert.All(disks, d => Assert.Equal(0, d.ChecksumErrors));
        output.WriteLine($"crash test: {iterations} iterations, {totalWrites} writes verified ({totalDurable} blocks with a durable write)");
    }

    private static string Str(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static long Field(string line, string key) =>
        long.Parse(line.Split(' ').Single(p => p.StartsWith(key + "=", StringComparison.Ordinal))[(key.Length + 1)..], CultureInfo.InvariantCulture);

    private static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) && value > 0
            ? value
            : fallback;
}
