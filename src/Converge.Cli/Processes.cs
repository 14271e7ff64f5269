using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Converge.Cli;

/// <summary>Detached host processes: start, recognise, signal (Linux).</summary>
internal static partial class Processes
{
    public const int SigTerm = 15;
    public const int SigKill = 9;

    /// <summary>
    /// Starts <paramref name="executable"/> in its own session (setsid), stdin from /dev/null, stdout and stderr
    /// appended to <paramref name="logPath"/>, so it outlives this process and the terminal. Returns its PID.
    /// </summary>
    public static int StartDetached(string executable, IReadOnlyList<string> arguments, string logPath)
    {
        var start = new ProcessStartInfo("/bin/sh")
        {
            RedirectStandardOutput = true,
            RedirectStandardInput = false,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("log=\"$1\"; shift; setsid \"$@\" </dev/null >>\"$log\" 2>&1 & echo $!");
        start.ArgumentList.Add("converge-launch");
        start.ArgumentList.Add(logPath);
        start.ArgumentList.Add(executable);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var shell = Process.Start(start) ?? throw new CliFailureException("cannot start /bin/sh to launch the host");
        var output = shell.StandardOutput.ReadToEnd().Trim();
        shell.WaitForExit();
        if (shell.ExitCode != 0 || !int.TryParse(output, NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
        {
            throw new CliFailureException($"launching the host failed (sh exit code {shell.ExitCode}, output '{output}'); see {logPath}");
        }

        return pid;
    }

    /// <summary>True when <paramref name="pid"/> runs and is not a zombie (a detached host is not our child; nobody may reap it).</summary>
    public static bool IsAlive(int pid)
    {
        if (pid <= 0)
        {
            return false;
        }

        var stat = $"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat";
        if (Directory.Exists("/proc/self"))
        {
            try
            {
                var text = File.ReadAllText(stat);
                var afterName = text.LastIndexOf(')');
                return afterName > 0 && afterName + 2 < text.Length && text[afterName + 2] is not ('Z' or 'X');
            }
            catch (IOException)
            {
                return false;
            }
        }

        return Kill(pid, 0) == 0;
    }

    /// <summary>True when <paramref name="pid"/> is a running <c>converge host run</c> for <paramref name="dataDirectory"/> (not a recycled PID).</summary>
    public static bool IsHost(int pid, string dataDirectory)
    {
        if (!IsAlive(pid))
        {
            return false;
        }

        try
        {
            var cmdline = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/cmdline").Split('\0');
            return cmdline.Contains("run") && cmdline.Contains("host") && cmdline.Contains(dataDirectory);
        }
        catch (IOException)
        {
            return !Directory.Exists("/proc/self");
        }
    }

    public static void Signal(int pid, int signal)
    {
        if (Kill(pid, signal) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno != 3)
            {
                throw new CliFailureException($"cannot signal process {pid}: errno {errno}");
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
