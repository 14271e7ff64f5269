using System.Diagnostics;

namespace Converge.Fuzz;

/// <summary>
/// A small in-process mutation fuzzer (AFL-style havoc on the seed corpus: bit flips, interesting values, byte
/// insertions and deletions, splices, JSON tokens), deterministic for a given seed: it needs no instrumentation and
/// runs wherever the tests do, next to AFL++ (AflFuzzTests), which is coverage-guided.
/// </summary>
public sealed class MutationFuzzer(Action<byte[]> harness, IReadOnlyList<byte[]> seeds, int randomSeed)
{
    private static readonly long[] Interesting = [0, 1, -1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, int.MaxValue, int.MinValue, uint.MaxValue, long.MaxValue, long.MinValue];

    private readonly Random _random = new(randomSeed);

    public long Executions { get; private set; }

    /// <summary>Runs until <paramref name="duration"/> is over; returns the first crashing input and its exception, if any.</summary>
    public (byte[] Input, Exception Error)? Run(TimeSpan duration)
    {
        var stopwatch = Stopwatch.StartNew();
        while (stopwatch.Elapsed < duration)
        {
            for (var i = 0; i < 256; i++)
            {
                var input = Mutate();
                Executions++;
                if (Execute(harness, input) is { } error)
                {
                    return (input, error);
                }
            }
        }

        return null;
    }

    /// <summary>Runs one input; returns the exception when it is a crash (not a clean rejection).</summary>
    public static Exception? Execute(Action<byte[]> harness, byte[] input)
    {
        try
        {
            harness(input);
            return null;
        }
#pragma warning disable CA1031 // Every exception is inspected: the fuzzer's job is to find the unexpected ones.
        catch (Exception e)
#pragma warning restore CA1031
        {
            return FuzzRejection.IsClean(e) ? null : e;
        }
    }

    private byte[] Mutate()
    {
        var data = new List<byte>(seeds.Count == 0 ? [] : seeds[_random.Next(seeds.Count)]);
        var rounds = 1 << _random.Next(0, 5);
        for (var r = 0; r < rounds; r++)
        {
            switch (_random.Next(7))
            {
                case 0 when data.Count > 0:
                    var bit = _random.Next(data.Count * 8);
                    data[bit / 8] ^= (byte)(1 << (bit % 8));
                    break;
                case 1 when data.Count > 0:
                    data[_random.Next(data.Count)] = (byte)_random.Next(256);
                    break;
                case 2 when data.Count >= 8:
                    var value = Interesting[_random.Next(Interesting.Length)];
                    var width = 1 << _random.Next(4);
                    var at = _random.Next(data.Count - width + 1);
                    for (var b = 0; b < width; b++)
                    {
                        data[at + b] = (byte)(value >> (8 * (_random.Next(2) == 0 ? b : width - 1 - b)));
                    }

                    break;
                case 3:
                    data.Insert(_random.Next(data.Count + 1), (byte)_random.Next(256));
                    break;
                case 4 when data.Count > 0:
                    var start = _random.Next(data.Count);
                    data.RemoveRange(start, _random.Next(1, Math.Min(16, data.Count - start) + 1));
                    break;
                case 5 when seeds.Count > 0:
                    var other = seeds[_random.Next(seeds.Count)];
                    var cut = _random.Next(data.Count + 1);
                    data.RemoveRange(cut, data.Count - cut);
                    data.AddRange(other.Skip(_random.Next(other.Length + 1)));
                    break;
                case 6 when data.Count > 0:
                    // Text inputs (JSON): swap in a token that changes types or nesting.
                    string[] tokens = ["null", "\"\"", "-1", "1e308", "[]", "{}", "\"$type\"", "9223372036854775807", "\"\\u0000\""];
                    var token = System.Text.Encoding.UTF8.GetBytes(tokens[_random.Next(tokens.Length)]);
                    data.InsertRange(_random.Next(data.Count + 1), token);
                    break;
            }
        }

        return [.. data];
    }
}
