using System.Diagnostics;
using System.Text;

namespace Converge.TestKit;

/// <summary>What a finished tool run printed and returned.</summary>
public sealed record ToolResult(string Command, int ExitCode, string Stdout, string Stderr)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>Throws with the command line and both outputs unless the exit code was 0.</summary>
    public ToolResult EnsureSuccess()
    {
        if (ExitCode != 0)
        {
            throw new ToolFailedException(this);
        }

        return this;
    }

    public override string ToString() =>
        $"$ {Command}\nexit code {ExitCode}\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

public sealed class ToolFailedException(ToolResult result) : Exception(result.ToString())
{
    public ToolResult Result { get; } = result;
}

/// <summary>Runs external programs with a deadline; a run that overstays is killed (whole tree) and reported.</summary>
public static class Tool
{
    /// <summary>Runs <paramref name="file"/> to completion; throws <see cref="TimeoutException"/> after killing it when it overstays.</summary>
    public static async Task<ToolResult> RunAsync(
        string file,
        IEnumerable<string> args,
        TimeSpan timeout,
        IReadOnlyDictionary<string, string>? environment = null,
        string? workingDirectory = null,
        CancellationToken cancellationToken = default)
    {
        var startInfo = CreateStartInfo(file, args, environment, workingDirectory);
        var command = Describe(startInfo);
        using var process = new Process { StartInfo = startInfo };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => Append(stdout, e.Data);
        process.ErrorDataReceived += (_, e) => Append(stderr, e.Data);
        if (!process.Start())
        {
            throw new InvalidOperationException($"Could not start {command}");
        }

        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            KillQuietly(process);
            await WaitQuietlyAsync(process);
            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }

            throw new TimeoutException(
                $"{command} did not finish within {timeout.TotalSeconds:0} s and was killed.\n--- stdout ---\n{Read(stdout)}\n--- stderr ---\n{Read(stderr)}");
        }

        // WaitForExitAsync returns after the redirected streams reached EOF.
        return new ToolResult(command, process.ExitCode, Read(stdout), Read(stderr));
    }

    /// <summary>Starts a program whose stdout is read line by line while it runs.</summary>
    public static StreamingProcess Start(
        string file,
        IEnumerable<string> args,
        IReadOnlyDictionary<string, string>? environment = null,
        string? workingDirectory = null) =>
        new(CreateStartInfo(file, args, environment, workingDirectory));

    internal static ProcessStartInfo CreateStartInfo(
        string file, IEnumerable<string> args, IReadOnlyDictionary<string, string>? environment, string? workingDirectory)
    {
        var startInfo = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var arg in args)
        {
            startInfo.ArgumentList.Add(arg);
        }

        if (environment is not null)
        {
            foreach (var (key, value) in environment)
            {
                startInfo.Environment[key] = value;
            }
        }

        return startInfo;
    }

    internal static string Describe(ProcessStartInfo startInfo) =>
        string.Join(' ', new[] { startInfo.FileName }.Concat(startInfo.ArgumentList).Select(Quote));

    internal static void KillQuietly(Process process)
    {
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }
        catch (System.ComponentModel.Win32Exception)
        {
        }
    }

    internal static async Task WaitQuietlyAsync(Process process)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
        }
        catch (InvalidOperationException)
        {
        }
    }

    private static void Append(StringBuilder sb, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (sb)
        {
            sb.Append(line).Append('\n');
        }
    }

    private static string Read(StringBuilder sb)
    {
        lock (sb)
        {
            return sb.ToString();
        }
    }

    private static string Quote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@+%".Contains(c, StringComparison.Ordinal))
            ? s
            : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}

/// <summary>A running program whose output lines are collected as they arrive; killed on dispose if still running.</summary>
public sealed class StreamingProcess : IAsyncDisposable
{
    private readonly Process process;
    private readonly List<string> lines = [];
    private readonly StringBuilder stderr = new();
    private readonly SemaphoreSlim lineArrived = new(0);

    internal StreamingProcess(ProcessStartInfo startInfo)
    {
        Command = Tool.Describe(startInfo);
        process = new Process { StartInfo = startInfo };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            lock (lines)
            {
                lines.Add(e.Data);
            }

            lineArrived.Release();
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (stderr)
                {
                    stderr.Append(e.Data).Append('\n');
                }
            }
        };
        if (!process.Start())
        {
            throw new InvalidOperationException($"Could not start {Command}");
        }

        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public string Command { get; }

    public int Pid => process.Id;

    public bool HasExited => process.HasExited;

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (lines)
            {
                return [.. lines];
            }
        }
    }

    public string Stderr
    {
        get
        {
            lock (stderr)
            {
                return stderr.ToString();
            }
        }
    }

    /// <summary>Waits until <paramref name="predicate"/> holds for the collected lines; throws on timeout or early exit.</summary>
    public async Task WaitForAsync(Func<IReadOnlyList<string>, bool> predicate, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        while (!predicate(Lines))
        {
            if (process.HasExited)
            {
                // Let the output readers drain, then look once more.
                await process.WaitForExitAsync(deadline.Token);
                if (predicate(Lines))
                {
                    return;
                }

                throw new InvalidOperationException($"{Command} exited with {process.ExitCode} before the expected output.\n{Describe()}");
            }

            try
            {
                await lineArrived.WaitAsync(TimeSpan.FromMilliseconds(200), deadline.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"{Command}: expected output did not appear within {timeout.TotalSeconds:0} s.\n{Describe()}");
            }
        }
    }

    /// <summary>Waits for the exit; kills and throws on timeout.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
            return process.ExitCode;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Tool.KillQuietly(process);
            throw new TimeoutException($"{Command} did not exit within {timeout.TotalSeconds:0} s and was killed.\n{Describe()}");
        }
    }

    public string Describe() =>
        $"--- stdout ({Lines.Count} lines, last 20) ---\n{string.Join('\n', Lines.TakeLast(20))}\n--- stderr ---\n{Stderr}";

    public async ValueTask DisposeAsync()
    {
        Tool.KillQuietly(process);
        await Tool.WaitQuietlyAsync(process);
        process.Dispose();
        lineArrived.Dispose();
    }
}
