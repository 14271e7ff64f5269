namespace Converge.TestKit;

/// <summary>
/// The real NBD client tools the end-to-end tests drive. Python scripts run with Debian's <c>/usr/bin/python3</c>
/// (python3-libnbd provides <c>import nbd</c>; a pyenv python on PATH would not have it).
/// </summary>
public static class NbdClients
{
    public const string SystemPython = "/usr/bin/python3";
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(3);

    /// <summary>PATH with <c>/usr/bin</c> first, so nbdsh's <c>python3</c> is the system one.</summary>
    public static IReadOnlyDictionary<string, string> SystemPath { get; } = new Dictionary<string, string>
    {
        ["PATH"] = "/usr/bin:/bin:" + (Environment.GetEnvironmentVariable("PATH") ?? string.Empty),
        ["PYTHONUNBUFFERED"] = "1",
        ["LC_ALL"] = "C",
    };

    public static Task<ToolResult> NbdInfoAsync(IEnumerable<string> args, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        Tool.RunAsync("nbdinfo", args, timeout ?? DefaultTimeout, SystemPath, cancellationToken: cancellationToken);

    public static Task<ToolResult> QemuImgAsync(IEnumerable<string> args, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        Tool.RunAsync("qemu-img", args, timeout ?? DefaultTimeout, SystemPath, cancellationToken: cancellationToken);

    /// <summary><c>qemu-io -f raw URI -c cmd1 -c cmd2 ...</c>.</summary>
    public static Task<ToolResult> QemuIoAsync(string uri, IEnumerable<string> commands, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var args = new List<string> { "-f", "raw" };
        foreach (var command in commands)
        {
            args.Add("-c");
            args.Add(command);
        }

        args.Add(uri);
        return Tool.RunAsync("qemu-io", args, timeout ?? DefaultTimeout, SystemPath, cancellationToken: cancellationToken);
    }

    /// <summary><c>nbdsh -u URI -c CODE</c>: <c>h</c> is the connected handle; an uncaught exception exits non-zero.</summary>
    public static Task<ToolResult> NbdShAsync(string uri, string code, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        Tool.RunAsync("nbdsh", ["-u", uri, "-c", code], timeout ?? DefaultTimeout, SystemPath, cancellationToken: cancellationToken);

    /// <summary>Runs a script shipped in the test output's <c>scripts/</c> folder with the system python.</summary>
    public static Task<ToolResult> PythonAsync(string script, IEnumerable<string> args, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        Tool.RunAsync(SystemPython, [ScriptPath(script), .. args], timeout ?? DefaultTimeout, SystemPath, cancellationToken: cancellationToken);

    public static StreamingProcess StartPython(string script, IEnumerable<string> args) =>
        Tool.Start(SystemPython, [ScriptPath(script), .. args], SystemPath);

    public static Task<ToolResult> FioAsync(IEnumerable<string> args, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        Tool.RunAsync("fio", args, timeout ?? DefaultTimeout, SystemPath, cancellationToken: cancellationToken);

    /// <summary>Runs the <c>converge</c> CLI binary (exit codes are the point of most callers).</summary>
    public static Task<ToolResult> ConvergeAsync(IEnumerable<string> args, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var env = new Dictionary<string, string>(SystemPath) { ["NO_COLOR"] = "1" };
        var processPath = Environment.ProcessPath;
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_ROOT"))
            && processPath is not null && Path.GetFileNameWithoutExtension(processPath) == "dotnet")
        {
            env["DOTNET_ROOT"] = Path.GetDirectoryName(processPath)!;
        }

        return Tool.RunAsync(RepoPaths.ConvergeBinary, args, timeout ?? TimeSpan.FromMinutes(1), env, cancellationToken: cancellationToken);
    }

    public static string ScriptPath(string script) => RepoPaths.TestAsset("scripts", script);

    /// <summary>Writes <paramref name="bytes"/> bytes from a seeded RNG to <paramref name="path"/> (the same seed gives the same file).</summary>
    public static void WriteRandomFile(string path, long bytes, int seed)
    {
        var random = new Random(seed);
        var buffer = new byte[1 << 20];
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        for (long written = 0; written < bytes; written += buffer.Length)
        {
            random.NextBytes(buffer);
            stream.Write(buffer, 0, (int)Math.Min(buffer.Length, bytes - written));
        }
    }
}
