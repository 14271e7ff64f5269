using System.Globalization;
using Xunit.Abstractions;

namespace Converge.Fuzz.Tests;

/// <summary>
/// AFL++ on each SharpFuzz-instrumented harness for a short pass (<c>CONVERGE_AFL_SECONDS</c>, default 12 s), from
/// the seed corpus: fails on any crash or hang (an input that runs over 5 s) and prints the executions done.
/// </summary>
public sealed class AflFuzzTests(InstrumentedFuzzer fuzzer, ITestOutputHelper output) : IClassFixture<InstrumentedFuzzer>
{
    public static TheoryData<string> Names => [.. Harnesses.All.Keys];

    private static readonly Dictionary<string, string> AflEnvironment = new()
    {
        ["AFL_SKIP_BIN_CHECK"] = "1",       // the target is dotnet, not an afl-instrumented binary
        ["AFL_NO_UI"] = "1",
        ["AFL_SKIP_CPUFREQ"] = "1",
        ["AFL_NO_AFFINITY"] = "1",          // a shared machine: no core of its own
        ["AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES"] = "1", // core_pattern is the system's business
        ["AFL_NO_CRASH_README"] = "1",
    };

    /// <summary>The setup can fail: a seed that crashes the self-check target is reported as a crash.</summary>
    [Fact]
    public async Task Afl_reports_a_crashing_input()
    {
        var seeds = Path.Combine(fuzzer.Work, "self-check-seeds");
        Directory.CreateDirectory(seeds);
        await File.WriteAllTextAsync(Path.Combine(seeds, "boom"), "boom");
        var result = await Tool.RunAsync(
            "afl-fuzz",
            ["-i", seeds, "-o", Path.Combine(fuzzer.Work, "out-self-check"), "-t", "5000", "-V", "5", "--", "dotnet", fuzzer.Entry, "self-check"],
            TimeSpan.FromMinutes(2),
            AflEnvironment);
        Assert.True((result.Stdout + result.Stderr).Contains("results in a crash", StringComparison.Ordinal), $"afl-fuzz did not report the crashing seed\n{result}");
    }

    [Theory]
    [MemberData(nameof(Names))]
    public async Task Afl_pass_finds_no_crash_or_hang(string harness)
    {
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("CONVERGE_AFL_SECONDS"), out var s) ? s : 12;
        var findings = Path.Combine(fuzzer.Work, "out-" + harness);
        var result = await Tool.RunAsync(
            "afl-fuzz",
            ["-i", Path.Combine(fuzzer.Directory, "corpus", harness), "-o", findings, "-t", "5000", "-V", seconds.ToString(CultureInfo.InvariantCulture), "--", "dotnet", fuzzer.Entry, harness],
            TimeSpan.FromSeconds(seconds + 120),
            AflEnvironment);
        var statsPath = Path.Combine(findings, "default", "fuzzer_stats");
        Assert.True(File.Exists(statsPath), $"afl-fuzz did not run (is afl++ installed?)\n{result}");
        var stats = File.ReadLines(statsPath)
            .Select(line => line.Split(':', 2))
            .Where(parts => parts.Length == 2)
            .ToDictionary(parts => parts[0].Trim(), parts => parts[1].Trim(), StringComparer.Ordinal);
        var line = $"afl {harness}: {stats["execs_done"]} executions in {seconds} s, {stats["saved_crashes"]} crash(es), {stats["saved_hangs"]} hang(s), coverage {stats["bitmap_cvg"]}";
        output.WriteLine(line);
        Console.WriteLine(line);
        var crashes = Directory.Exists(Path.Combine(findings, "default", "crashes"))
            ? Directory.EnumerateFiles(Path.Combine(findings, "default", "crashes"), "id:*").ToList()
            : [];
        Assert.True(stats["saved_crashes"] == "0" && stats["saved_hangs"] == "0", $"{line}; inputs: {string.Join(", ", crashes)} (replay: dotnet tests/Converge.Fuzz/bin/Release/net10.0/Converge.Fuzz.dll {harness} FILE)");
        Assert.True(long.Parse(stats["execs_done"], CultureInfo.InvariantCulture) > 0, line);
    }
}
