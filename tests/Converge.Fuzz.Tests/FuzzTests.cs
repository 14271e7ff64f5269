using System.Globalization;
using Xunit.Abstractions;

namespace Converge.Fuzz.Tests;

/// <summary>
/// Every harness: the seed corpus replays without a crash, and a short fixed-seed mutation pass finds none.
/// <c>CONVERGE_FUZZ_SECONDS</c> sets the pass length (default 2 s a harness, besides AFL++ in AflFuzzTests; bench/fuzz.sh runs longer).
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output)
{
    public static TheoryData<string> Names => [.. Harnesses.All.Keys];

    [Theory]
    [MemberData(nameof(Names))]
    public void Corpus_replays_without_a_crash(string harness)
    {
        var seeds = Corpus(harness);
        Assert.NotEmpty(seeds);
        foreach (var (path, input) in seeds)
        {
            var error = MutationFuzzer.Execute(Harnesses.All[harness], input);
            Assert.True(error is null, $"{path}: {error}");
        }
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Mutation_pass_finds_no_crash(string harness)
    {
        var seconds = double.TryParse(Environment.GetEnvironmentVariable("CONVERGE_FUZZ_SECONDS"), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) ? s : 2;
        var randomSeed = int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_FUZZ_SEED"), out var r) ? r : 17;
        var fuzzer = new MutationFuzzer(Harnesses.All[harness], [.. Corpus(harness).Select(c => c.Input)], randomSeed);
        var crash = fuzzer.Run(TimeSpan.FromSeconds(seconds));
        output.WriteLine($"fuzz {harness}: {fuzzer.Executions} executions in {seconds:0.#} s (seed {randomSeed}), {(crash is null ? 0 : 1)} crash(es)");
        Console.WriteLine($"fuzz {harness}: {fuzzer.Executions} executions, {(crash is null ? 0 : 1)} crash(es)");
        if (crash is { } found)
        {
            var saved = Path.Combine(Path.GetTempPath(), $"converge-fuzz-crash-{harness}-{Environment.ProcessId}.bin");
            File.WriteAllBytes(saved, found.Input);
            Assert.Fail($"{harness} crashed on {Convert.ToHexString(found.Input)} (saved to {saved}): {found.Error}");
        }
    }

    private static List<(string Path, byte[] Input)> Corpus(string harness)
    {
        var directory = Path.Combine(AppContext.BaseDirectory, "corpus", harness);
        return Directory.Exists(directory)
            ? [.. Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal).Select(p => (p, File.ReadAllBytes(p)))]
            : [];
    }
}
