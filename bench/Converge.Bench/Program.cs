using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Converge.Common;

namespace Converge.Bench;

/// <summary>Micro-benchmarks: <c>dotnet run -c Release --project bench/Converge.Bench -- --filter '*'</c>.</summary>
public static class Program
{
    public static async Task Main(string[] args)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        switch (args.FirstOrDefault())
        {
            case "peer-server":
                await PeerBench.ServeAsync(int.Parse(args[1], inv));
                break;
            case "peer-client":
                await PeerBench.RunClientAsync(
                    int.Parse(args[1], inv), int.Parse(args[2], inv), double.Parse(args[3], inv), int.Parse(args[4], inv), args[5] == "write", int.Parse(args[6], inv));
                break;
            default:
                BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
                break;
        }
    }
}

/// <summary>CRC-32C of one stored block: paid on every 4 KiB written and read.</summary>
public class ChecksumBenchmarks
{
    private readonly byte[] block = new byte[4096];
    private readonly byte[] run = new byte[1 << 20];

    [GlobalSetup]
    public void Setup()
    {
        new Random(42).NextBytes(block);
        new Random(43).NextBytes(run);
    }

    [Benchmark(Baseline = true)]
    public uint Crc32COneBlock() => Checksums.Crc32C(block);

    [Benchmark(OperationsPerInvoke = 256)]
    public uint Crc32C256BlocksOf1MiB()
    {
        uint x = 0;
        for (var i = 0; i < run.Length; i += 4096)
        {
            x ^= Checksums.Crc32C(run.AsSpan(i, 4096));
        }

        return x;
    }
}
