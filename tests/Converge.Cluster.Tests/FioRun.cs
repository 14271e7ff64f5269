using System.Globalization;
using System.Text.Json;

namespace Converge.Cluster.Tests;

/// <summary>What a finished fio run reported.</summary>
public sealed record FioSummary(long WriteBytes, long ReadBytes, long WriteIos, double MaxWriteLatencyMs, string Json);

/// <summary>
/// fio with the nbd engine writing 4 KiB random blocks with <c>verify=crc32c</c> (every block written once, then read
/// back and checked: checksum and the block's own offset in its header), running in the background so faults can be
/// injected meanwhile. <c>--status-interval=1</c> prints a JSON status every second, which gives the progress.
/// </summary>
public sealed class FioRun : IAsyncDisposable
{
    private readonly StreamingProcess process;

    private FioRun(StreamingProcess process, string uri)
    {
        this.process = process;
        Uri = uri;
    }

    public string Uri { get; }

    /// <param name="writeIops">Write rate limit (0: none); keeps the write phase running across a fault window.</param>
    public static FioRun Start(string uri, long offset, long size, int seed, int writeIops = 0, int iodepth = 16)
    {
        var args = new List<string>
        {
            "--name=faults", "--ioengine=nbd", $"--uri={uri}", "--rw=randwrite", "--bs=4k",
            $"--iodepth={iodepth.ToString(CultureInfo.InvariantCulture)}",
            $"--offset={offset.ToString(CultureInfo.InvariantCulture)}", $"--size={size.ToString(CultureInfo.InvariantCulture)}",
            $"--randseed={seed.ToString(CultureInfo.InvariantCulture)}",
            "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_dump=0",
            "--status-interval=1", "--output-format=json",
        };
        if (writeIops > 0)
        {
            args.Add($"--rate_iops=,{writeIops.ToString(CultureInfo.InvariantCulture)}");
        }

        return new FioRun(Tool.Start("fio", args, NbdClients.SystemPath), uri);
    }

    public bool HasExited => process.HasExited;

    /// <summary>Bytes written so far, from the last complete status document (0 before the first).</summary>
    public long WrittenBytes => LastDocument(process.Lines) is { } json ? Job(json).GetProperty("write").GetProperty("io_bytes").GetInt64() : 0;

    /// <summary>Waits until fio reports at least <paramref name="bytes"/> written.</summary>
    public async Task WaitWrittenAsync(long bytes, TimeSpan timeout)
    {
        await process.WaitForAsync(lines => LastDocument(lines) is { } json && Job(json).GetProperty("write").GetProperty("io_bytes").GetInt64() >= bytes, timeout);
    }

    /// <summary>Waits for fio to finish and asserts it reported no error and no verify failure.</summary>
    public async Task<FioSummary> FinishAsync(TimeSpan timeout, Func<string>? context = null)
    {
        var code = await process.WaitForExitAsync(timeout);
        var json = LastDocument(process.Lines);
        var stderr = process.Stderr;
        var where = context?.Invoke() ?? string.Empty;
        Assert.True(code == 0, $"fio through {Uri} exited with {code}:\n{process.Describe()}\n{where}");
        Assert.True(json is not null, $"fio through {Uri} printed no JSON summary:\n{process.Describe()}");
        Assert.DoesNotContain("verify", stderr, StringComparison.OrdinalIgnoreCase);
        var job = Job(json!);
        Assert.True(job.GetProperty("error").GetInt32() == 0, $"fio job error {job.GetProperty("error")}:\n{json}\n{where}");
        var write = job.GetProperty("write");
        var maxNs = write.GetProperty("clat_ns").GetProperty("max").GetDouble();
        return new FioSummary(
            write.GetProperty("io_bytes").GetInt64(),
            job.GetProperty("read").GetProperty("io_bytes").GetInt64(),
            write.GetProperty("total_ios").GetInt64(),
            maxNs / 1e6,
            json!);
    }

    public string Describe() => process.Describe();

    public ValueTask DisposeAsync() => process.DisposeAsync();

    private static JsonElement Job(string json)
    {
        using var document = JsonDocument.Parse(json);
        return document.RootElement.GetProperty("jobs")[0].Clone();
    }

    /// <summary>The last complete top-level JSON document in fio's output (a <c>{</c> line through a <c>}</c> line).</summary>
    private static string? LastDocument(IReadOnlyList<string> lines)
    {
        var end = -1;
        for (var i = lines.Count - 1; i >= 0; i--)
        {
            if (lines[i] == "}")
            {
                end = i;
                break;
            }
        }

        if (end < 0)
        {
            return null;
        }

        for (var i = end; i >= 0; i--)
        {
            if (lines[i] == "{")
            {
                return string.Join('\n', lines.Skip(i).Take(end - i + 1));
            }
        }

        return null;
    }
}
