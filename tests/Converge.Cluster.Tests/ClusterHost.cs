using System.Diagnostics;
using System.Globalization;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// One real <c>converge host run</c> in cluster mode with fixed ports for its whole life (Raft endpoints are recorded
/// in the member list, so a restart must reuse them). Disposing stops it by PID (SIGTERM, then SIGKILL).
/// </summary>
public sealed class ClusterHost : IAsyncDisposable
{
    public static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    private readonly HttpClient http;
    private Process? process;
    private int starts;

    public ClusterHost(string root, string name, string diskSize)
    {
        Name = name;
        DataDir = Path.Combine(root, name);
        Directory.CreateDirectory(DataDir);
        DiskSize = diskSize;
        var used = new HashSet<int>();
        int Next()
        {
            int port;
            do
            {
                port = FreePort.Allocate();
            }
            while (!used.Add(port));
            return port;
        }

        NbdPort = Next();
        ApiPort = Next();
        PeerPort = Next();
        RaftPort = Next();
        http = new HttpClient { BaseAddress = new Uri(ApiUrl), Timeout = TimeSpan.FromSeconds(30) };
        Api = new ConvergeApiClient(http);
    }

    public string Name { get; }

    /// <summary>More <c>host run</c> arguments for every start (e.g. <c>--repair-delay 5s</c>).</summary>
    public List<string> ExtraArgs { get; } = [];

    public string DataDir { get; }

    public string DiskSize { get; }

    public int NbdPort { get; }

    public int ApiPort { get; }

    public int PeerPort { get; }

    public int RaftPort { get; }

    public string ApiUrl => $"http://127.0.0.1:{ApiPort.ToString(CultureInfo.InvariantCulture)}";

    public ConvergeApiClient Api { get; }

    public HttpClient Http => http;

    public bool IsRunning => process is { HasExited: false };

    public string LogPath => Path.Combine(DataDir, "host.test.log");

    public string NbdUri(string export) => $"nbd://127.0.0.1:{NbdPort.ToString(CultureInfo.InvariantCulture)}/{export}";

    /// <summary>Launches the process (first start: with two disks of <see cref="DiskSize"/> and optionally --join).</summary>
    public void Launch(string? joinApi = null)
    {
        process?.Dispose();
        var args = new List<string>
        {
            "host", "run", "--data", DataDir, "--name", Name,
            "--nbd-listen", $"127.0.0.1:{NbdPort}", "--api-listen", $"127.0.0.1:{ApiPort}",
            "--peer-listen", $"127.0.0.1:{PeerPort}", "--raft-listen", $"127.0.0.1:{RaftPort}",
        };
        if (starts == 0)
        {
            args.AddRange(["--disk", Path.Combine(DataDir, "d1.img") + ":" + DiskSize, "--disk", Path.Combine(DataDir, "d2.img") + ":" + DiskSize]);
        }

        if (joinApi is not null)
        {
            args.AddRange(["--join", joinApi]);
        }

        args.AddRange(ExtraArgs);

        starts++;
        process = ConvergeLauncher.Start(DataDir, LogPath, args, starts);
    }

    /// <summary>Polls <c>/api/v1/health</c> until ready (cluster mode: registered in the cluster).</summary>
    public async Task WaitReadyAsync()
    {
        var stopwatch = Stopwatch.StartNew();
        var last = "no answer yet";
        while (stopwatch.Elapsed < ReadyTimeout)
        {
            if (process is null || process.HasExited)
            {
                throw new InvalidOperationException($"host {Name} exited with {process?.ExitCode} before it was ready.\n{LogTail()}");
            }

            try
            {
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                var health = await Api.GetHealthAsync(attempt.Token);
                if (health.Status == "ready")
                {
                    // The founder wrote the cluster's admin token into its data directory; the others get it from TestCluster.
                    var tokenFile = Path.Combine(DataDir, "admin-token");
                    if (Api.Token is null && File.Exists(tokenFile))
                    {
                        Api.Token = File.ReadAllText(tokenFile).Trim();
                    }

                    return;
                }

                last = health.Status;
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or OperationCanceledException)
            {
                last = e.Message;
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"host {Name} was not ready within {ReadyTimeout.TotalSeconds:0} s ({last}).\n{LogTail()}");
    }

    /// <summary>SIGTERM and wait for exit 0 (SIGKILL after 30 s).</summary>
    public async Task<int> StopAsync()
    {
        var p = process;
        if (p is null || p.HasExited)
        {
            return p?.ExitCode ?? 0;
        }

        (await Tool.RunAsync("kill", ["-TERM", p.Id.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(10))).EnsureSuccess();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await p.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            KillQuietly(p);
            await p.WaitForExitAsync();
        }

        return p.ExitCode;
    }

    /// <summary>SIGKILL (no clean shutdown: leases and Raft state stay as they were) and wait for the exit.</summary>
    public async Task KillAsync()
    {
        var p = process ?? throw new InvalidOperationException($"host {Name} was never started");
        if (p.HasExited)
        {
            return;
        }

        File.AppendAllText(LogPath, $"=== SIGKILL at {DateTimeOffset.UtcNow:O}\n");
        (await Tool.RunAsync("kill", ["-KILL", p.Id.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(10))).EnsureSuccess();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(deadline.Token);
    }

    public string LogTail(int lines = 40)
    {
        try
        {
            using var stream = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            return $"--- {Name} log (last {lines} lines) ---\n" + string.Join('\n', reader.ReadToEnd().Split('\n').TakeLast(lines));
        }
        catch (IOException e)
        {
            return $"(no log: {e.Message})";
        }
    }

    private static void KillQuietly(Process p)
    {
        try
        {
            p.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or System.ComponentModel.Win32Exception or ToolFailedException)
        {
            if (process is not null)
            {
                KillQuietly(process);
            }
        }

        process?.Dispose();
        process = null;
        http.Dispose();
    }
}
