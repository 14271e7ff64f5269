using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Converge.Common;

namespace Converge.Bench;

/// <summary>Micro-benchmarks: <c>dotnet run -c Release --project bench/Converge.Bench -- --filter '*'</c>.</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
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
