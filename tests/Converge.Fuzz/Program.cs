using SharpFuzz;

namespace Converge.Fuzz;

/// <summary>
/// <c>Converge.Fuzz HARNESS</c>: runs one harness under AFL++ (SharpFuzz's out-of-process protocol). An exception that
/// is not a clean rejection escapes, which AFL++ records as a crash. <c>Converge.Fuzz HARNESS FILE...</c> runs the
/// files once each instead (to replay a crash).
/// </summary>
internal static class Program
{
    public const string SelfCheck = "self-check";

    public static int Main(string[] args)
    {
        if (args.Length > 0 && args[0] == SelfCheck)
        {
            // Proves the AFL++ setup reports a crash: an input starting with "boom" throws an unexpected exception.
            Fuzzer.OutOfProcess.Run(stream =>
            {
                if (stream.ReadByte() == 'b' && stream.ReadByte() == 'o' && stream.ReadByte() == 'o' && stream.ReadByte() == 'm')
                {
                    throw new InvalidOperationException("self-check crash");
                }
            });
            return 0;
        }

        if (args.Length == 0 || !Harnesses.All.TryGetValue(args[0], out var harness))
        {
            Console.Error.WriteLine($"usage: Converge.Fuzz HARNESS [FILE...]; harnesses: {string.Join(", ", Harnesses.All.Keys)}");
            return 2;
        }

        if (args.Length > 1)
        {
            var crashes = 0;
            foreach (var file in args[1..])
            {
                if (MutationFuzzer.Execute(harness, File.ReadAllBytes(file)) is { } error)
                {
                    Console.Error.WriteLine($"{file}: {error}");
                    crashes++;
                }
            }

            return crashes == 0 ? 0 : 1;
        }

        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var buffer = new MemoryStream();
            stream.CopyTo(buffer);
            try
            {
                harness(buffer.ToArray());
            }
            catch (Exception e) when (FuzzRejection.IsClean(e))
            {
                // The documented rejection of bad input.
            }
        });
        return 0;
    }
}
