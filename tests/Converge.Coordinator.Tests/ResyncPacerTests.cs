using Microsoft.Extensions.Time.Testing;

namespace Converge.Coordinator.Tests;

/// <summary>Copy pacing: the contended rate while clients are busy, the idle rate on a quiet host, no burst on a switch.</summary>
public class ResyncPacerTests
{
    private const long MiB = 1L << 20;
    private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(5);

    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 0, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task A_busy_host_paces_copies_to_the_contended_rate()
    {
        var activity = new ClientActivity(time);
        var pacer = new ResyncPacer(activity, contendedBytesPerSecond: 10 * MiB, idleBytesPerSecond: 0);

        // 20 chunks of 1 MiB at 10 MiB/s with a client busy all along: about 2 s, less the 100 ms catch-up allowance.
        var elapsed = await CopyAsync(pacer, chunks: 20, chunk: MiB, busy: activity);
        Assert.InRange(elapsed, TimeSpan.FromMilliseconds(1850), TimeSpan.FromMilliseconds(1950));
        Assert.Equal(20 * MiB, pacer.ContendedBytes);
    }

    [Fact]
    public async Task A_quiet_host_copies_at_the_idle_rate_or_unpaced()
    {
        var unlimited = new ResyncPacer(new ClientActivity(time), contendedBytesPerSecond: 10 * MiB, idleBytesPerSecond: 0);
        Assert.Equal(TimeSpan.Zero, await CopyAsync(unlimited, chunks: 100, chunk: MiB, busy: null));
        Assert.Equal(0, unlimited.ContendedBytes);

        var idle = new ResyncPacer(new ClientActivity(time), contendedBytesPerSecond: 10 * MiB, idleBytesPerSecond: 100 * MiB);
        var elapsed = await CopyAsync(idle, chunks: 100, chunk: MiB, busy: null);
        Assert.InRange(elapsed, TimeSpan.FromMilliseconds(850), TimeSpan.FromMilliseconds(950));
    }

    [Fact]
    public async Task Clients_that_went_quiet_a_second_ago_no_longer_slow_the_copy()
    {
        var activity = new ClientActivity(time);
        activity.Note();
        time.Advance(ResyncPacer.QuietPeriod + TimeSpan.FromMilliseconds(50));
        var pacer = new ResyncPacer(activity, contendedBytesPerSecond: MiB, idleBytesPerSecond: 0);
        Assert.Equal(TimeSpan.Zero, await CopyAsync(pacer, chunks: 10, chunk: MiB, busy: null));

        // A request within the quiet period makes the host busy again.
        activity.Note();
        time.Advance(TimeSpan.FromMilliseconds(500));
        Assert.False(pacer.PaceAsync(MiB, CancellationToken.None).IsCompleted);
    }

    [Fact]
    public async Task A_client_arriving_mid_copy_is_not_met_by_a_burst()
    {
        var activity = new ClientActivity(time);
        var pacer = new ResyncPacer(activity, contendedBytesPerSecond: 10 * MiB, idleBytesPerSecond: 0);

        // 500 MiB copied unpaced while the host was quiet...
        Assert.Equal(TimeSpan.Zero, await CopyAsync(pacer, chunks: 500, chunk: MiB, busy: null));

        // ...earn no credit: once a client is busy, 10 chunks take the whole contended second.
        var elapsed = await CopyAsync(pacer, chunks: 10, chunk: MiB, busy: activity);
        Assert.InRange(elapsed, TimeSpan.FromMilliseconds(950), TimeSpan.FromMilliseconds(1050));
    }

    [Fact]
    public void Negative_rates_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new ResyncPacer(new ClientActivity(time), -1, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ResyncPacer(new ClientActivity(time), 0, -1));
    }

    /// <summary>Copies <paramref name="chunks"/> chunks, advancing the fake clock while the pacer holds the copy back.</summary>
    private async Task<TimeSpan> CopyAsync(ResyncPacer pacer, int chunks, long chunk, ClientActivity? busy)
    {
        var start = time.GetUtcNow();
        for (var i = 0; i < chunks; i++)
        {
            busy?.Note();
            var wait = pacer.PaceAsync(chunk, CancellationToken.None);
            while (!wait.IsCompleted)
            {
                time.Advance(Step);
                busy?.Note();
            }

            await wait;
        }

        return time.GetUtcNow() - start;
    }
}
