using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Converge.Management.Contracts;

namespace Converge.Cluster.Tests;

/// <summary>
/// One real <c>converge host run</c> in cluster mode with fixed ports for its whole life (Raft endpoints are recorded
/// in the member list, so a restart must reuse them). Disposing stops it by PID (SIGTERM, then SIGKILL).
/// </summary>
public sealed class ClusterHost : IAsyncDisposable
{
    public static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    private HttpClient http;
    private HttpClient? rpc;
    private Process? process;
    private int starts;
    private string address = "127.0.0.1";

    public ClusterHost(string root, string name, string diskSize)
    {
        Name = name;
        DataDir = Path.Combine(root, name);
        Directory.CreateDirectory(DataDir);
        DiskSize = diskSize;
        NbdPort = FreePort.Allocate();   // distinct: FreePort never hands a port out twice
        ApiPort = FreePort.Allocate();
        PeerPort = FreePort.Allocate();
        RaftPort = FreePort.Allocate();
        RpcPort = FreePort.Allocate();
        http = NewApiClient();
        Api = new ConvergeApiClient(http);
    }

    /// <summary>
    /// The IP address every listener binds to and peers reach (default <c>127.0.0.1</c>). Set before the first
    /// <see cref="Launch"/> (e.g. an address inside a test network namespace).
    /// </summary>
    public string Address
    {
        get => address;
        set
        {
            if (starts > 0)
            {
                throw new InvalidOperationException($"host {Name}: the address is recorded at the first start");
            }

            address = value;
            var token = Api.Token;
            http.Dispose();
            http = NewApiClient();
            Api = new ConvergeApiClient(http) { Token = token };
        }
    }

    /// <summary>Network namespace to run the process in (<c>ip netns exec NS</c>); null: the test's own.</summary>
    public string? NetworkNamespace { get; set; }

    /// <summary>PID of the running process (converge itself).</summary>
    public int Pid => process?.Id ?? throw new InvalidOperationException($"host {Name} was never started");

    /// <summary>SIGSTOPped by <see cref="PauseAsync"/> and not resumed yet.</summary>
    public bool IsPaused { get; private set; }

    /// <summary>Running and not paused: its API answers.</summary>
    public bool IsServing => IsRunning && !IsPaused;

    /// <summary>Where the two disk files are created at the first start (default: the data directory).</summary>
    public string? DiskDirectory { get; set; }

    /// <summary>The disk files given at the first start.</summary>
    public IReadOnlyList<string> DiskPaths =>
        [Path.Combine(DiskDirectory ?? DataDir, "d1.img"), Path.Combine(DiskDirectory ?? DataDir, "d2.img")];

    public string Name { get; }

    /// <summary>More <c>host run</c> arguments for every start (e.g. <c>--repair-delay 5s</c>).</summary>
    public List<string> ExtraArgs { get; } = [];

    public string DataDir { get; }

    public string DiskSize { get; }

    public int NbdPort { get; }

    public int ApiPort { get; }

    public int PeerPort { get; }

    public int RaftPort { get; }

    /// <summary>Host-to-host RPC (<c>/internal/v1</c>, mutual TLS).</summary>
    public int RpcPort { get; }

    public string RpcUrl => $"https://{Address}:{RpcPort.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>
    /// A client of this host's RPC port that presents the host's own certificate (DATA/tls, made at its first start)
    /// and accepts only a server certificate signed by the cluster CA: for the tests' <c>/internal/v1</c> calls.
    /// </summary>
    public HttpClient RpcHttp => rpc ??= NewRpcClient(DataDir, new Uri(RpcUrl));

    /// <summary>The API client's calls, sent to the RPC port with this host's certificate (the internal digest endpoint).</summary>
    public ConvergeApiClient RpcApi => new(RpcHttp);

    /// <summary>Beyond loopback a cluster host serves its API over HTTPS with its cluster certificate.</summary>
    public string ApiUrl => $"{(IPAddress.IsLoopback(IPAddress.Parse(Address)) ? "http" : "https")}://{Address}:{ApiPort.ToString(CultureInfo.InvariantCulture)}";

    public ConvergeApiClient Api { get; private set; }

    public HttpClient Http => http;

    public bool IsRunning => process is { HasExited: false };

    /// <summary>The exit code once the process has exited; null while it runs.</summary>
    public int? ExitCode => process is { HasExited: true } p ? p.ExitCode : null;

    /// <summary>Waits until the process exits by itself (a refused start), with a deadline; returns its exit code.</summary>
    public async Task<int> WaitExitAsync(TimeSpan timeout)
    {
        var stopwatch = Stopwatch.StartNew();
        while (IsRunning)
        {
            if (stopwatch.Elapsed > timeout)
            {
                throw new TimeoutException($"host {Name} did not exit within {timeout.TotalSeconds:0} s.\n{LogTail()}");
            }

            await Task.Delay(100);
        }

        return ExitCode ?? throw new InvalidOperationException($"host {Name} was never started");
    }

    public string LogPath => Path.Combine(DataDir, "host.test.log");

    public string NbdUri(string export) => $"nbd://{Address}:{NbdPort.ToString(CultureInfo.InvariantCulture)}/{export}";

    /// <summary>
    /// Launches the process (first start: with two disks of <see cref="DiskSize"/> and optionally
    /// <c>--join RPCURL --join-token TOKEN</c>).
    /// </summary>
    public void Launch(string? joinRpc = null, string? joinToken = null)
    {
        process?.Dispose();
        var args = new List<string>
        {
            "host", "run", "--data", DataDir, "--name", Name,
            "--nbd-listen", $"{Address}:{NbdPort}", "--api-listen", $"{Address}:{ApiPort}",
            "--peer-listen", $"{Address}:{PeerPort}", "--raft-listen", $"{Address}:{RaftPort}",
            "--rpc-listen", $"{Address}:{RpcPort}",
        };
        if (starts == 0)
        {
            args.AddRange(["--disk", DiskPaths[0] + ":" + DiskSize, "--disk", DiskPaths[1] + ":" + DiskSize]);
        }

        if (joinRpc is not null)
        {
            args.AddRange(["--join", joinRpc]);
        }

        if (joinToken is not null)
        {
            args.AddRange(["--join-token", joinToken]);
        }

        args.AddRange(ExtraArgs);

        starts++;
        IsPaused = false;
        process = ConvergeLauncher.Start(
            DataDir, LogPath, args, starts, NetworkNamespace is null ? [] : ["ip", "netns", "exec", NetworkNamespace]);
    }

    /// <summary>Starts the stopped or killed host again with the same data directory and ports and waits until ready.</summary>
    public async Task RestartAsync()
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"host {Name} is still running");
        }

        Launch();
        await WaitReadyAsync();
    }

    /// <summary>SIGSTOP: the process keeps its sockets (the kernel still accepts connections) but answers nothing.</summary>
    public async Task PauseAsync()
    {
        File.AppendAllText(LogPath, $"=== SIGSTOP at {DateTimeOffset.UtcNow:O}\n");
        (await Tool.RunAsync("kill", ["-STOP", Pid.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(10))).EnsureSuccess();
        IsPaused = true;
    }

    /// <summary>SIGCONT after <see cref="PauseAsync"/>.</summary>
    public async Task ResumeAsync()
    {
        (await Tool.RunAsync("kill", ["-CONT", Pid.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromSeconds(10))).EnsureSuccess();
        IsPaused = false;
        File.AppendAllText(LogPath, $"=== SIGCONT at {DateTimeOffset.UtcNow:O}\n");
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
        IsPaused = false;
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
            if (IsPaused && IsRunning)
            {
                // A stopped process would only act on SIGTERM after a SIGCONT.
                await ResumeAsync();
            }

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
        rpc?.Dispose();
    }

    /// <summary>The API client: over HTTPS it trusts only this host's cluster CA (<c>DATA/tls/ca.crt</c>, read at each handshake).</summary>
    private HttpClient NewApiClient() => new(new SocketsHttpHandler
    {
        SslOptions = new System.Net.Security.SslClientAuthenticationOptions
        {
            RemoteCertificateValidationCallback = (_, server, _, _) =>
            {
                var caFile = Path.Combine(DataDir, "tls", "ca.crt");
                if (server is null || !File.Exists(caFile))
                {
                    return false;
                }

                using var ca = X509CertificateLoader.LoadCertificateFromFile(caFile);
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(X509CertificateLoader.LoadCertificate(server.GetRawCertData()));
            },
        },
    })
    {
        BaseAddress = new Uri(ApiUrl),
        Timeout = TimeSpan.FromSeconds(30),
    };

    /// <summary>An HTTPS client with the certificate in <paramref name="dataDir"/>/tls, trusting only that cluster's CA.</summary>
    public static HttpClient NewRpcClient(string dataDir, Uri baseAddress)
    {
        var tls = Path.Combine(dataDir, "tls");
        using var pem = X509Certificate2.CreateFromPemFile(Path.Combine(tls, "host.crt"), Path.Combine(tls, "host.key"));
        var certificate = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        var ca = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(tls, "ca.crt"));
        return new HttpClient(new SocketsHttpHandler
        {
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                ClientCertificates = [certificate],
                RemoteCertificateValidationCallback = (_, server, _, _) =>
                {
                    if (server is null)
                    {
                        return false;
                    }

                    using var chain = new X509Chain();
                    chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.CustomTrustStore.Add(ca);
                    chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                    return chain.Build(X509CertificateLoader.LoadCertificate(server.GetRawCertData()));
                },
            },
        })
        {
            BaseAddress = baseAddress,
            Timeout = TimeSpan.FromSeconds(30),
        };
    }
}
