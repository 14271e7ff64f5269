using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Nbd.Tests;

/// <summary>An in-process <see cref="NbdListener"/> on 127.0.0.1:0, shared per test class.</summary>
public sealed class NbdTestServer : IAsyncLifetime
{
    private NbdListener? _listener;

    internal TestCatalog Catalog { get; } = new();

    public int Port { get; private set; }

    public string Uri(string export) => $"nbd://127.0.0.1:{Port}/{export}";

    public async Task InitializeAsync()
    {
        _listener = new NbdListener(new IPEndPoint(IPAddress.Loopback, 0), Catalog, new NbdServerOptions(), NullLogger<NbdListener>.Instance);
        await _listener.StartAsync(CancellationToken.None);
        Port = ((IPEndPoint)_listener.LocalEndPoint).Port;
    }

    public async Task DisposeAsync()
    {
        if (_listener is not null)
        {
            await _listener.DisposeAsync();
        }
    }
}

internal static class Tools
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
    }

    /// <summary>Runs a tool with a deadline; PATH puts /usr/bin first so nbdsh and python find the Debian libnbd bindings.</summary>
    public static async Task<Result> RunAsync(string file, IEnumerable<string> args, TimeSpan? timeout = null, string? stdin = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["PATH"] = "/usr/bin:/bin:" + Environment.GetEnvironmentVariable("PATH");
        psi.Environment["LIBNBD_DEBUG"] = "0";
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
            process.StandardInput.Close();
        }

        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in time; stderr so far: {(stderr.IsCompleted ? await stderr : "")}");
        }

        return new Result(process.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs a Python script with the system interpreter (which has <c>import nbd</c>); the script gets the URI as argv[1].</summary>
    public static Task<Result> PythonAsync(string script, string uri, TimeSpan? timeout = null) =>
        RunAsync("/usr/bin/python3", ["-c", Prelude + script, uri], timeout);

    private const string Prelude = """
        import sys, errno, nbd
        uri = sys.argv[1]
        def expect_errno(code, fn, *args):
            try:
                fn(*args)
            except nbd.Error as e:
                assert e.errno in (code, errno.errorcode.get(code)), f"expected errno {code}, got {e.errno}: {e}"
                return
            raise AssertionError(f"expected errno {code}, call succeeded")

        """;
}
