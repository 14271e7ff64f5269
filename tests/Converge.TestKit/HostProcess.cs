using System.Diagnostics;
using System.Globalization;
using Converge.Management.Contracts;

namespace Converge.TestKit;

/// <summary>A disk to give a host at its first start: <c>--disk PATH:SIZE</c> (or <c>--disk PATH</c> to adopt).</summary>
public sealed record DiskSpec(string Path, string? Size)
{
    public string Argument => Size is null ? Path : $"{Path}:{Size}";
}

/// <summary>
/// A real <c>converge host run</c> process on loopback with its own data directory and free ports. Output goes to
/// <see cref="LogPath"/>. Disposing stops it (SIGTERM, then SIGKILL) — also when the test failed.
/// </summary>
public sealed class HostProcess : IAsyncDisposable
{
    public static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    private HttpClient http;
    private Process? process;
    private int starts;

    private HostProcess(string dataDir, IReadOnlyList<DiskSpec> disks, string? name, IReadOnlyList<string>? extraArgs = null)
    {
        ExtraArgs = extraArgs ?? [];
        DataDir = dataDir;
        InitialDisks = disks;
        Name = name;
        http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        Api = new ConvergeApiClient(http);
    }

    public string DataDir { get; }

    /// <summary>Further <c>host run</c> options given at every start (e.g. <c>--max-connections 100</c>).</summary>
    public IReadOnlyList<string> ExtraArgs { get; }

    public IReadOnlyList<DiskSpec> InitialDisks { get; }

    public string? Name { get; }

    public int NbdPort { get; private set; }

    public int ApiPort { get; private set; }

    public string ApiUrl => $"http://127.0.0.1:{ApiPort}";

    public string NbdEndpoint => $"127.0.0.1:{NbdPort}";

    /// <summary>The admin token the host wrote to <c>DATA/admin-token</c> at its first start (null before).</summary>
    public string? AdminToken => File.Exists(System.IO.Path.Combine(DataDir, "admin-token"))
        ? File.ReadAllText(System.IO.Path.Combine(DataDir, "admin-token")).Trim()
        : null;

    /// <summary>Stdout and stderr of every start, appended.</summary>
    public string LogPath => System.IO.Path.Combine(DataDir, "host.test.log");

    public int Pid => process?.Id ?? throw new InvalidOperationException("The host is not started.");

    public bool IsRunning => process is { HasExited: false };

    /// <summary>Typed client for this host's management API (replaced at every start: the port changes).</summary>
    public ConvergeApiClient Api { get; private set; }

    public string NbdUri(string export) => $"nbd://127.0.0.1:{NbdPort}/{export}";

    /// <summary>Starts a host with one disk file <c>DATA/d1.img</c> of <paramref name="diskSize"/> and waits until it is ready.</summary>
    public static Task<HostProcess> StartAsync(string dataDir, string diskSize = "1GiB", CancellationToken cancellationToken = default) =>
        StartAsync(dataDir, [new DiskSpec(System.IO.Path.Combine(dataDir, "d1.img"), diskSize)], name: null, cancellationToken);

    public static Task<HostProcess> StartAsync(
        string dataDir, IReadOnlyList<DiskSpec> disks, string? name = null, CancellationToken cancellationToken = default) =>
        StartWithArgsAsync(dataDir, disks, [], name, cancellationToken);

    /// <summary>As <see cref="StartAsync(string, IReadOnlyList{DiskSpec}, string?, CancellationToken)"/>, with further <c>host run</c> options.</summary>
    public static async Task<HostProcess> StartWithArgsAsync(
        string dataDir, IReadOnlyList<DiskSpec> disks, IReadOnlyList<string> extraArgs, string? name = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(dataDir);
        var host = new HostProcess(dataDir, disks, name, extraArgs);
        try
        {
            host.Launch(includeDisks: true);
            await host.WaitReadyAsync(ReadyTimeout, cancellationToken);
            return host;
        }
        catch
        {
            await host.DisposeAsync();
            throw;
        }
    }

    /// <summary>Polls <c>GET /api/v1/health</c> until it answers <c>ready</c>; throws with the log tail on timeout or exit.</summary>
    public async Task WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var stopwatch = Stopwatch.StartNew();
        string lastError = "no answer yet";
        while (stopwatch.Elapsed < timeout)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (process is null || process.HasExited)
            {
                throw new InvalidOperationException(
                    $"converge host exited with {process?.ExitCode} before it was ready.\n{LogTail()}");
            }

            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                attempt.CancelAfter(TimeSpan.FromSeconds(2));
                var health = await Api.GetHealthAsync(attempt.Token);
                if (health.Status == "ready")
                {
                    // The host made its admin token at its first start; mutating calls need it.
                    Api.Token = AdminToken;
                    return;
                }

                lastError = $"status {health.Status}";
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or OperationCanceledException or TaskCanceledException)
            {
                cancellationToken.ThrowIfCancellationRequested();
                lastError = e.Message;
            }

            await Task.Delay(100, cancellationToken);
        }

        throw new TimeoutException($"converge host was not ready within {timeout.TotalSeconds:0} s ({lastError}).\n{LogTail()}");
    }

    /// <summary>SIGKILL: no flush, no checkpoint — a crash.</summary>
    public async Task Kill9Async()
    {
        var p = process ?? throw new InvalidOperationException("The host is not started.");
        if (!p.HasExited)
        {
            p.Kill();
        }

        await WaitExitAsync(p, StopTimeout);
    }

    /// <summary>SIGTERM and wait for a clean exit; SIGKILL after <paramref name="timeout"/>. Returns the exit code (137-ish when killed).</summary>
    public async Task<int> StopAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var p = process;
        if (p is null || p.HasExited)
        {
            return p?.ExitCode ?? 0;
        }

        await SignalAsync("TERM", p.Id);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout ?? StopTimeout);
        try
        {
            await p.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            Tool.KillQuietly(p);
            await WaitExitAsync(p, StopTimeout);
        }

        return p.ExitCode;
    }

    /// <summary>SIGSTOP: the process keeps its sockets but answers nothing.</summary>
    public Task PauseAsync() => SignalAsync("STOP", Pid);

    /// <summary>SIGCONT after <see cref="PauseAsync"/>.</summary>
    public Task ResumeAsync() => SignalAsync("CONT", Pid);

    /// <summary>
    /// Stops the host (SIGTERM, or SIGKILL when <paramref name="crash"/>) and starts it again on the same data
    /// directory without <c>--disk</c> arguments (disks come from host.json), on fresh ports; waits until ready.
    /// </summary>
    public async Task RestartAsync(bool crash = false, CancellationToken cancellationToken = default)
    {
        if (IsRunning)
        {
            if (crash)
            {
                await Kill9Async();
            }
            else
            {
                var code = await StopAsync(cancellationToken: cancellationToken);
                if (code != 0)
                {
                    throw new InvalidOperationException($"converge host exited with {code} on SIGTERM (expected 0).\n{LogTail()}");
                }
            }
        }

        await StartAgainAsync(cancellationToken);
    }

    /// <summary>Starts a stopped host again (disks from host.json), on fresh ports, and waits until ready.</summary>
    public async Task StartAgainAsync(CancellationToken cancellationToken = default)
    {
        if (IsRunning)
        {
            throw new InvalidOperationException("The host is still running.");
        }

        Launch(includeDisks: false);
        await WaitReadyAsync(ReadyTimeout, cancellationToken);
    }

    public string ReadLog()
    {
        try
        {
            using var stream = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (FileNotFoundException)
        {
            return string.Empty;
        }
    }

    public string LogTail(int lines = 40) =>
        $"--- host log {LogPath} (last {lines} lines) ---\n" +
        string.Join('\n', ReadLog().Split('\n').TakeLast(lines));

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync(TimeSpan.FromSeconds(15));
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or System.ComponentModel.Win32Exception)
        {
            if (process is not null)
            {
                Tool.KillQuietly(process);
            }
        }

        process?.Dispose();
        process = null;
        http.Dispose();
    }

    private void Launch(bool includeDisks)
    {
        process?.Dispose();
        NbdPort = FreePort.Allocate();   // distinct: FreePort never hands a port out twice
        ApiPort = FreePort.Allocate();

        http.Dispose();
        http = new HttpClient { Timeout = TimeSpan.FromSeconds(30), BaseAddress = new Uri(ApiUrl) };
        Api = new ConvergeApiClient(http);
        var args = new List<string> { "host", "run", "--data", DataDir };
        if (includeDisks)
        {
            foreach (var disk in InitialDisks)
            {
                args.Add("--disk");
                args.Add(disk.Argument);
            }

            if (Name is not null)
            {
                args.Add("--name");
                args.Add(Name);
            }
        }

        args.AddRange(["--nbd-listen", NbdEndpoint, "--api-listen", $"127.0.0.1:{ApiPort}"]);
        args.AddRange(ExtraArgs);

        starts++;
        process = ConvergeLauncher.Start(DataDir, LogPath, args, starts);
    }

    private static async Task WaitExitAsync(Process p, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await p.WaitForExitAsync(cts.Token);
    }

    private static async Task SignalAsync(string signal, int pid)
    {
        var result = await Tool.RunAsync("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(10));
        result.EnsureSuccess();
    }
}

/// <summary>Environment every child process gets: the apphost must find the runtime the tests run on.</summary>
public static class ProcessEnvironment
{
    public static void Apply(ProcessStartInfo startInfo)
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_ROOT")))
        {
            var processPath = Environment.ProcessPath;
            if (processPath is not null && System.IO.Path.GetFileNameWithoutExtension(processPath) == "dotnet")
            {
                startInfo.Environment["DOTNET_ROOT"] = System.IO.Path.GetDirectoryName(processPath);
            }
        }

        startInfo.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        startInfo.Environment["DOTNET_NOLOGO"] = "1";
    }
}

/// <summary>Starts the real <c>converge</c> binary the way every test harness does.</summary>
public static class ConvergeLauncher
{
    /// <summary>
    /// Starts <c>converge ARGS</c> in <paramref name="workingDirectory"/>, its output appended to <paramref name="logPath"/>
    /// after a line naming start number <paramref name="start"/>. The shell <c>exec</c>s converge, so the returned
    /// process (and its PID, which tests signal) is converge itself.
    /// </summary>
    public static Process Start(string workingDirectory, string logPath, IReadOnlyList<string> args, int start) =>
        Start(workingDirectory, logPath, args, start, prefix: []);

    /// <summary>
    /// As <see cref="Start(string, string, IReadOnlyList{string}, int)"/>, run through <paramref name="prefix"/> (a command
    /// that execs its arguments in place, e.g. <c>ip netns exec NS</c>), so the PID is still converge's.
    /// </summary>
    public static Process Start(string workingDirectory, string logPath, IReadOnlyList<string> args, int start, IReadOnlyList<string> prefix)
    {
        var startInfo = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, WorkingDirectory = workingDirectory };
        startInfo.ArgumentList.Add("-c");
        startInfo.ArgumentList.Add("exec \"$0\" \"$@\" >>\"$CONVERGE_TEST_LOG\" 2>&1 </dev/null");
        foreach (var part in prefix)
        {
            startInfo.ArgumentList.Add(part);
        }

        startInfo.ArgumentList.Add(RepoPaths.ConvergeBinary);

        foreach (var arg in args)
        {
            startInfo.ArgumentList.Add(arg);
        }

        startInfo.Environment["CONVERGE_TEST_LOG"] = logPath;
        ProcessEnvironment.Apply(startInfo);
        File.AppendAllText(
            logPath,
            $"=== start {start.ToString(CultureInfo.InvariantCulture)} at {DateTimeOffset.UtcNow:O}: {string.Join(' ', prefix)}{(prefix.Count > 0 ? " " : string.Empty)}converge {string.Join(' ', args)}\n");
        return Process.Start(startInfo) ?? throw new InvalidOperationException("Could not start converge.");
    }
}
