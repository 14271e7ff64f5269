using System.Globalization;

namespace Converge.Host.Tests;

/// <summary>
/// A client that pipelines large READs and never reads a reply: the host stops reading from it (back-pressure) instead
/// of holding every reply in memory, and other clients' I/O goes on.
/// </summary>
public sealed class SlowReaderTests
{
    private const int Read = 0;
    private const uint ReadBytes = 32 << 20;
    private const int Requests = 96;

    /// <summary>
    /// Growth of the host's resident memory allowed while the slow reader holds its requests: the per-connection
    /// in-flight budget (256 MiB) and some slack. Without back-pressure it grows by the whole 3 GiB asked for.
    /// </summary>
    private const long MaxGrowthBytes = 768L << 20;

    [Fact]
    public async Task Slow_reader_stays_bounded_and_others_keep_working()
    {
        using var dir = new TempDir("converge-slow");
        await using var host = await HostProcess.StartAsync(dir.Path, "4GiB");
        var slowDisk = await host.Api.CreateVirtualDiskAsync("slow", "1GiB");
        var otherDisk = await host.Api.CreateVirtualDiskAsync("other", "16MiB");
        var baseline = ResidentBytes(host.Pid);

        await using var slow = await RawNbdClient.ConnectAsync(host.NbdPort);
        await slow.HandshakeAsync(slowDisk.Name);

        // 96 reads of 32 MiB (3 GiB of replies) sent at once; the replies are never read.
        var requests = new byte[Requests * 28];
        for (var i = 0; i < Requests; i++)
        {
            RawNbdClient.Request(Read, (ulong)i, (ulong)(i % 32) * ReadBytes, ReadBytes).CopyTo(requests, i * 28);
        }

        await slow.WriteAsync(requests);

        // Another client writes and reads while the slow one sits on its replies.
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri(otherDisk.Name), ["write -P 0x3c 0 4M", "read -P 0x3c 0 4M"]), host);

        // Give the host time to do all it would do with the slow reader's requests, watching its memory.
        var peak = 0L;
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            peak = Math.Max(peak, ResidentBytes(host.Pid));
            Assert.True(peak - baseline < MaxGrowthBytes, $"host RSS grew by {(peak - baseline) >> 20} MiB (baseline {baseline >> 20} MiB)");
            await Task.Delay(250);
        }

        Assert.True(host.IsRunning);
        Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri(otherDisk.Name), ["read -P 0x3c 0 4M"]), host);

        // The slow reader dies without reading; the host lets its requests go and stays up.
        slow.Abort();
        Check.Succeeded(await NbdClients.NbdInfoAsync([host.NbdUri(otherDisk.Name)]), host);
        Assert.True(host.IsRunning);
    }

    private static long ResidentBytes(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new InvalidOperationException($"no VmRSS for pid {pid}");
    }
}
