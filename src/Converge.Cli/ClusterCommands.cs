using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Converge.Common;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary><c>converge up</c> / <c>converge down</c>: detached local hosts recorded in <c>DIR/cluster.json</c>.</summary>
internal static class ClusterCommands
{
    public const string DefaultDataDirectory = ".converge";
    public const string ClusterFileName = "cluster.json";
    public const string DemoName = "demo";
    private const int DisksPerHost = 2;
    private static readonly TimeSpan ReadyDeadline = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StopDeadline = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(100);

    public static Command BuildUp()
    {
        var data = DataOption();
        var hosts = new Option<int>("--hosts") { Description = "Number of hosts (one cluster; h1 founds it, the others join it)", DefaultValueFactory = _ => 3 };
        var standalone = new Option<bool>("--standalone") { Description = "Independent single hosts without cluster mode (the pre-cluster behaviour)" };
        var nbdPort = new Option<int>("--nbd-port") { Description = "NBD port of the first host (next hosts: +1 each)", DefaultValueFactory = _ => 10809 };
        var apiPort = new Option<int>("--api-port") { Description = "API port of the first host (next hosts: +1 each)", DefaultValueFactory = _ => 7480 };
        var peerPort = new Option<int>("--peer-port") { Description = "Cluster mode: peer port of the first host (next hosts: +1 each)", DefaultValueFactory = _ => 7500 };
        var raftPort = new Option<int>("--raft-port") { Description = "Cluster mode: Raft port of the first host (next hosts: +1 each)", DefaultValueFactory = _ => 7600 };
        var rpcPort = new Option<int>("--rpc-port") { Description = "Cluster mode: host RPC port (mutual TLS) of the first host (next hosts: +1 each)", DefaultValueFactory = _ => 7700 };
        var diskSize = new Option<string>("--disk-size") { Description = $"Size of each of the {DisksPerHost} disk files per host (thin: sparse files)", DefaultValueFactory = _ => "8GiB" };
        var demoSize = new Option<string>("--demo-size") { Description = $"Size of the '{DemoName}' virtual disk created if absent", DefaultValueFactory = _ => "1GiB" };
        var up = new Command("up", "Start a local Converge (detached), create virtual disk 'demo' and print how to use it")
        {
            data, hosts, standalone, nbdPort, apiPort, peerPort, raftPort, rpcPort, diskSize, demoSize,
        };
        up.SetAction((pr, ct) => Guarded.RunAsync(() => UpAsync(
            Path.GetFullPath(pr.GetRequiredValue(data)),
            pr.GetValue(hosts),
            pr.GetValue(standalone),
            new Ports(pr.GetValue(nbdPort), pr.GetValue(apiPort), pr.GetValue(peerPort), pr.GetValue(raftPort), pr.GetValue(rpcPort)),
            pr.GetRequiredValue(diskSize),
            pr.GetRequiredValue(demoSize),
            ct)));
        return up;
    }

    public static Command BuildDown()
    {
        var data = DataOption();
        var down = new Command("down", "Stop the hosts started by 'converge up' (SIGTERM, then SIGKILL after 30 s)") { data };
        down.SetAction((pr, ct) => Guarded.RunAsync(() => DownAsync(Path.GetFullPath(pr.GetRequiredValue(data)), ct)));
        return down;
    }

    public static ClusterFile? TryLoadCluster(string dataDirectory)
    {
        try
        {
            return LoadCluster(dataDirectory);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException or CliFailureException)
        {
            return null;
        }
    }

    private static Option<string> DataOption() => new("--data")
    {
        Description = "Data directory of the local cluster",
        DefaultValueFactory = _ => DefaultDataDirectory,
    };

    private static ClusterFile? LoadCluster(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, ClusterFileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(File.ReadAllText(path), ContractsJsonContext.Default.ClusterFile);
        }
        catch (JsonException e)
        {
            throw new CliFailureException($"{path} is not valid ({e.Message}); stop any hosts by hand and remove it");
        }
    }

    private static void SaveCluster(string dataDirectory, ClusterFile cluster)
    {
        var path = Path.Combine(dataDirectory, ClusterFileName);
        var temp = path + ".tmp";
        using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            JsonSerializer.Serialize(stream, cluster, ContractsJsonContext.Indented.ClusterFile);
            stream.Flush(flushToDisk: true);
        }

        File.Move(temp, path, overwrite: true);
    }

    private sealed record Ports(int Nbd, int Api, int Peer, int Raft, int Rpc);

    private static async Task<int> UpAsync(
        string dataDirectory, int hostCount, bool standalone, Ports ports, string diskSizeText, string demoSizeText, CancellationToken cancellationToken)
    {
        var (nbdPort, apiPort) = (ports.Nbd, ports.Api);
        if (hostCount is < 1 or > 16)
        {
            throw new UsageException($"--hosts {hostCount}: give 1 to 16");
        }

        var portOptions = standalone
            ? new[] { (nbdPort, "--nbd-port"), (apiPort, "--api-port") }
            : [(nbdPort, "--nbd-port"), (apiPort, "--api-port"), (ports.Peer, "--peer-port"), (ports.Raft, "--raft-port"), (ports.Rpc, "--rpc-port")];
        foreach (var (port, option) in portOptions)
        {
            if (port < 1 || port + hostCount - 1 > 65535)
            {
                throw new UsageException($"{option} {port}: ports must be between 1 and 65535");
            }
        }

        for (var a = 0; a < portOptions.Length; a++)
        {
            for (var b = a + 1; b < portOptions.Length; b++)
            {
                if (Math.Abs(portOptions[a].Item1 - portOptions[b].Item1) < hostCount)
                {
                    throw new UsageException($"{portOptions[a].Item2} {portOptions[a].Item1} and {portOptions[b].Item2} {portOptions[b].Item1} overlap for {hostCount} host(s)");
                }
            }
        }

        var diskSize = CliCommands.CheckSize(diskSizeText, "--disk-size");
        var demoSize = CliCommands.CheckSize(demoSizeText, "--demo-size");
        if (demoSize > diskSize)
        {
            throw new UsageException($"--demo-size {demoSizeText} is larger than a disk (--disk-size {diskSizeText})");
        }

        Directory.CreateDirectory(dataDirectory);
        var existing = LoadCluster(dataDirectory);
        var entries = new List<ClusterHostEntry>();
        var toStart = new List<ClusterHostEntry>();
        for (var i = 1; i <= hostCount; i++)
        {
            var name = "h" + i.ToString(CultureInfo.InvariantCulture);
            var previous = existing?.Hosts.FirstOrDefault(h => h.Name == name);
            var entry = previous ?? new ClusterHostEntry
            {
                Name = name,
                Pid = 0,
                Api = $"http://127.0.0.1:{(apiPort + i - 1).ToString(CultureInfo.InvariantCulture)}",
                Nbd = $"127.0.0.1:{(nbdPort + i - 1).ToString(CultureInfo.InvariantCulture)}",
                Data = Path.Combine(dataDirectory, "hosts", name),
            };
            entries.Add(entry);
            if (!Processes.IsHost(entry.Pid, entry.Data))
            {
                toStart.Add(entry);
            }
        }

        // Hosts beyond --hosts that are still running stay recorded, so that 'down' stops them.
        entries.AddRange(existing?.Hosts.Where(h => entries.All(e => e.Name != h.Name) && Processes.IsHost(h.Pid, h.Data)) ?? []);

        if (toStart.Count == 0)
        {
            Output.Line($"Converge is already running ({dataDirectory}).");
            await PrintSummaryAsync(dataDirectory, entries, cancellationToken).ConfigureAwait(false);
            return ExitCodes.Ok;
        }

        foreach (var entry in toStart)
        {
            CheckPortFree(entry.Nbd, $"NBD port of {entry.Name}", "--nbd-port");
            CheckPortFree(new Uri(entry.Api).Authority, $"API port of {entry.Name}", "--api-port");
        }

        if (!standalone)
        {
            foreach (var entry in toStart)
            {
                var index = HostIndex(entry);
                CheckPortFree($"127.0.0.1:{(ports.Peer + index).ToString(CultureInfo.InvariantCulture)}", $"peer port of {entry.Name}", "--peer-port");
                CheckPortFree($"127.0.0.1:{(ports.Raft + index).ToString(CultureInfo.InvariantCulture)}", $"Raft port of {entry.Name}", "--raft-port");
                CheckPortFree($"127.0.0.1:{(ports.Rpc + index).ToString(CultureInfo.InvariantCulture)}", $"RPC port of {entry.Name}", "--rpc-port");
            }
        }

        // The admin token: made once, shown once, kept (0600) in DIR/admin-token and in every host's data directory, where
        // the founder (or a standalone host) adopts it and the CLI on this machine finds it.
        var tokenPath = Path.Combine(dataDirectory, Tokens.FileName);
        var token = Tokens.TryRead(tokenPath);
        string? newToken = null;
        if (token is null)
        {
            token = newToken = Host.Management.AdminToken.Create();
            Host.Management.AdminToken.WritePrivate(tokenPath, token + "\n");
        }

        foreach (var entry in toStart)
        {
            Directory.CreateDirectory(entry.Data);
            var hostToken = Path.Combine(entry.Data, Tokens.FileName);
            if (!File.Exists(hostToken))
            {
                Host.Management.AdminToken.WritePrivate(hostToken, token + "\n");
            }
        }

        var (executable, prefix) = PrepareBinaries(dataDirectory, anyRunning: toStart.Count < entries.Count);
        var started = new Dictionary<string, (int Pid, string Log, long LogOffset)>();

        // Cluster mode: a new cluster is founded by h1 alone; the others join it once it is ready.
        var founding = !standalone && toStart.Any(e => e.Name == entries[0].Name) && !File.Exists(Path.Combine(entries[0].Data, "membership.json"));
        foreach (var entry in toStart)
        {
            if (founding && entry.Name != entries[0].Name && !started.ContainsKey("founded"))
            {
                var founder = started[entries[0].Name];
                await WaitReadyAsync(entries[0], founder.Pid, founder.Log, founder.LogOffset, cancellationToken).ConfigureAwait(false);
                started["founded"] = (0, string.Empty, 0);
            }

            Directory.CreateDirectory(entry.Data);
            var log = Path.Combine(entry.Data, "host.log");
            var offset = File.Exists(log) ? new FileInfo(log).Length : 0;
            List<string> arguments =
            [
                .. prefix, "host", "run", "--data", entry.Data, "--name", entry.Name,
                "--nbd-listen", entry.Nbd, "--api-listen", new Uri(entry.Api).Authority,
            ];
            if (!standalone)
            {
                var index = HostIndex(entry);
                arguments.AddRange(
                [
                    "--peer-listen", $"127.0.0.1:{(ports.Peer + index).ToString(CultureInfo.InvariantCulture)}",
                    "--raft-listen", $"127.0.0.1:{(ports.Raft + index).ToString(CultureInfo.InvariantCulture)}",
                    "--rpc-listen", $"127.0.0.1:{(ports.Rpc + index).ToString(CultureInfo.InvariantCulture)}",
                ]);
                if (entry.Name != entries[0].Name && !File.Exists(Path.Combine(entry.Data, "membership.json")))
                {
                    // A host joins only with a join token: made here through h1's API with the admin token, one per host.
                    if (started.TryGetValue(entries[0].Name, out var h1) && !started.ContainsKey("founded"))
                    {
                        await WaitReadyAsync(entries[0], h1.Pid, h1.Log, h1.LogOffset, cancellationToken).ConfigureAwait(false);
                        started["founded"] = (0, string.Empty, 0);
                    }

                    using var http = CliCommands.NewHttpClient(new Uri(entries[0].Api));
                    var joinToken = await new ConvergeApiClient(http, Tokens.TryRead(Path.Combine(entries[0].Data, Tokens.FileName)) ?? token)
                        .CreateJoinTokenAsync("10m", cancellationToken).ConfigureAwait(false);
                    arguments.AddRange(
                    [
                        "--join", $"https://127.0.0.1:{(ports.Rpc + HostIndex(entries[0])).ToString(CultureInfo.InvariantCulture)}",
                        "--join-token", joinToken.Token,
                    ]);
                }
            }

            var sizeText = diskSize.ToString(CultureInfo.InvariantCulture);
            for (var d = 1; d <= DisksPerHost; d++)
            {
                arguments.Add("--disk");
                arguments.Add($"{Path.Combine(entry.Data, $"disk{d.ToString(CultureInfo.InvariantCulture)}.img")}:{sizeText}");
            }

            var pid = Processes.StartDetached(executable, arguments, log);
            started[entry.Name] = (pid, log, offset);
            Output.Line($"starting host {entry.Name} (pid {pid}), log {log}");
            if (founding && entry.Name != entries[0].Name)
            {
                // Joins one at a time: each new voter is added (and caught up) before the next asks.
                await WaitReadyAsync(entry, pid, log, offset, cancellationToken).ConfigureAwait(false);
            }
        }

        started.Remove("founded");
        entries = [.. entries.Select(e => started.TryGetValue(e.Name, out var s) ? e with { Pid = s.Pid } : e)];
        SaveCluster(dataDirectory, new ClusterFile { Hosts = entries });

        for (var i = 0; i < entries.Count; i++)
        {
            if (started.TryGetValue(entries[i].Name, out var s))
            {
                await WaitReadyAsync(entries[i], s.Pid, s.Log, s.LogOffset, cancellationToken).ConfigureAwait(false);
            }
        }

        var first = entries[0];
        using (var http = CliCommands.NewHttpClient(new Uri(first.Api)))
        {
            var client = new ConvergeApiClient(http, Tokens.TryRead(Path.Combine(first.Data, Tokens.FileName)) ?? token);
            if (await client.TryGetVirtualDiskAsync(DemoName, cancellationToken).ConfigureAwait(false) is null)
            {
                var request = CreateVirtualDiskRequest.Create(DemoName, demoSize);
                if (!standalone && hostCount < 3)
                {
                    // The default policy (FTT=1) needs 3 fault domains: smaller clusters get an unmirrored demo.
                    await client.PutPolicyAsync("ftt0", new PolicyInfo { Name = "ftt0", FailuresToTolerate = 0 }, cancellationToken).ConfigureAwait(false);
                    request = request with { Policy = "ftt0" };
                }

                var created = await client.CreateVirtualDiskAsync(request, cancellationToken).ConfigureAwait(false);
                Output.Line(created.Policy is null
                    ? $"created virtual disk '{DemoName}' ({ByteSize.Format(demoSize)}) on {first.Name}"
                    : $"created virtual disk '{DemoName}' ({ByteSize.Format(demoSize)}, policy {created.Policy}) across {string.Join(", ", (created.Layout ?? []).Select(c => c.HostName).Distinct())}");
            }
        }

        if (newToken is not null)
        {
            Output.Line(string.Empty);
            Output.Line($"admin token (shown once; kept in {tokenPath}, mode 0600, where the CLI finds it):");
            Output.Line("  " + newToken);
        }

        Output.Line(string.Empty);
        Output.Line($"Converge is up ({dataDirectory}).");
        await PrintSummaryAsync(dataDirectory, entries, cancellationToken).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    private static async Task WaitReadyAsync(ClusterHostEntry entry, int pid, string log, long logOffset, CancellationToken cancellationToken)
    {
        using var http = CliCommands.NewHttpClient(new Uri(entry.Api));
        http.Timeout = TimeSpan.FromSeconds(5);
        var client = new ConvergeApiClient(http);
        var deadline = DateTimeOffset.UtcNow + ReadyDeadline;
        string last = "no answer yet";
        while (true)
        {
            if (!Processes.IsAlive(pid))
            {
                throw new CliFailureException($"host {entry.Name} exited while starting. Its log ({log}) says:\n{Tail(log, logOffset)}");
            }

            try
            {
                var health = await client.GetHealthAsync(cancellationToken).ConfigureAwait(false);
                if (health.Status == "ready")
                {
                    return;
                }

                last = $"health is '{health.Status}'";
            }
            catch (Exception e) when (e is HttpRequestException or ConvergeApiException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = e.Message;
            }

            if (DateTimeOffset.UtcNow > deadline)
            {
                throw new CliFailureException(
                    $"host {entry.Name} (pid {pid}) was not ready within {ReadyDeadline.TotalSeconds:0} s ({last}); it is left running, see {log} and stop it with 'converge down'");
            }

            await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task PrintSummaryAsync(string dataDirectory, IReadOnlyList<ClusterHostEntry> entries, CancellationToken cancellationToken)
    {
        foreach (var e in entries)
        {
            Output.Line($"  {e.Name}: pid {e.Pid}, API {e.Api}, NBD {e.Nbd}, log {Path.Combine(e.Data, "host.log")}");
        }

        Output.Line($"Web UI: {entries[0].Api}/   (every host serves it; Prometheus metrics at /metrics, API described at /openapi/v1.json)");

        VirtualDiskInfo? demo = null;
        using (var http = CliCommands.NewHttpClient(new Uri(entries[0].Api)))
        {
            try
            {
                demo = await new ConvergeApiClient(http).TryGetVirtualDiskAsync(DemoName, cancellationToken).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                Output.Error($"host {entries[0].Name} does not answer at {entries[0].Api}: {e.Message}");
            }
        }

        var uri = demo?.NbdUri ?? $"nbd://{entries[0].Nbd}/{DemoName}";
        Output.Line(string.Empty);
        Output.Line(demo is null
            ? $"Virtual disk '{DemoName}' does not exist; create one with: converge vdisk create {DemoName} --size 1GiB"
            : $"Virtual disk '{DemoName}' ({ByteSize.Format(demo.SizeBytes)}, {demo.State}{(demo.Policy is null ? string.Empty : $", policy {demo.Policy}, {demo.Compliance}")}):");
        Output.Line($"  {uri}");
        if (demo?.Policy is not null)
        {
            foreach (var other in entries.Skip(1))
            {
                Output.Line($"  nbd://{other.Nbd}/{DemoName}   (same disk through {other.Name})");
            }
        }

        Output.Line(string.Empty);
        Output.Line("Try:");
        Output.Line($"  nbdinfo {uri}");
        Output.Line($"  qemu-io -f raw -c 'write -P 0xab 0 1M' {uri}");
        Output.Line($"  qemu-img convert -n -O raw file.img {uri}");
        Output.Line($"  fio --name=demo --ioengine=nbd --uri={uri} --rw=randrw --bs=4k --iodepth=16 --runtime=10 --time_based");
        Output.Line("  converge status");
        if (demo?.Policy is not null)
        {
            Output.Line("  converge host list");
            Output.Line("  converge policy create striped --ftt 1 --stripe-width 2");
            Output.Line("  converge vdisk create data --size 10GiB --policy striped");
        }

        Output.Line("  converge vdisk create data --size 10GiB");
        Output.Line(dataDirectory == Path.GetFullPath(DefaultDataDirectory) ? "  converge down" : $"  converge down --data {dataDirectory}");
    }

    private static async Task<int> DownAsync(string dataDirectory, CancellationToken cancellationToken)
    {
        var cluster = LoadCluster(dataDirectory);
        if (cluster is null)
        {
            Output.Line($"no Converge cluster in {dataDirectory} (no {ClusterFileName}); nothing to stop");
            return ExitCodes.Ok;
        }

        var running = new List<ClusterHostEntry>();
        foreach (var host in cluster.Hosts)
        {
            if (Processes.IsHost(host.Pid, host.Data))
            {
                Processes.Signal(host.Pid, Processes.SigTerm);
                running.Add(host);
            }
            else
            {
                Output.Line($"host {host.Name} (pid {host.Pid}) is not running");
            }
        }

        var deadline = DateTimeOffset.UtcNow + StopDeadline;
        while (running.Any(h => Processes.IsAlive(h.Pid)) && DateTimeOffset.UtcNow < deadline)
        {
            await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
        }

        var exitCode = ExitCodes.Ok;
        foreach (var host in running)
        {
            if (Processes.IsAlive(host.Pid))
            {
                Processes.Signal(host.Pid, Processes.SigKill);
                Output.Error($"host {host.Name} (pid {host.Pid}) did not stop within {StopDeadline.TotalSeconds:0} s; killed it (its disks recover at the next start)");
                exitCode = ExitCodes.Failed;
            }
            else
            {
                Output.Line($"stopped host {host.Name} (pid {host.Pid})");
            }
        }

        File.Delete(Path.Combine(dataDirectory, ClusterFileName));
        return exitCode;
    }

    private static int HostIndex(ClusterHostEntry entry) =>
        int.Parse(entry.Name.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture) - 1;

    private static void CheckPortFree(string hostPort, string what, string option)
    {
        var endPoint = IPEndPoint.Parse(hostPort);
        using var listener = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.Bind(endPoint);
        }
        catch (SocketException e)
        {
            throw new CliFailureException($"{what} {endPoint} is not available ({e.Message}); is another host or NBD server using it? Pick another with {option}");
        }
    }

    /// <summary>
    /// Hosts run from a copy of the CLI's build output under <c>DIR/bin</c>, so rebuilding the CLI (which overwrites
    /// its files in place) never touches the files of a running host.
    /// </summary>
    private static (string Executable, IReadOnlyList<string> Prefix) PrepareBinaries(string dataDirectory, bool anyRunning)
    {
        var source = AppContext.BaseDirectory;
        var files = Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories).ToList();
        var stamp = files.Max(File.GetLastWriteTimeUtc).Ticks.ToString("x", CultureInfo.InvariantCulture);
        var binRoot = Path.Combine(dataDirectory, "bin");
        var target = Path.Combine(binRoot, stamp);
        if (!Directory.Exists(target))
        {
            var temp = $"{target}.tmp-{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}";
            foreach (var file in files)
            {
                var destination = Path.Combine(temp, Path.GetRelativePath(source, file));
                Directory.CreateDirectory(Path.GetDirectoryName(destination)!);
                File.Copy(file, destination, overwrite: true);
            }

            Directory.Move(temp, target);
        }

        if (!anyRunning)
        {
            foreach (var old in Directory.EnumerateDirectories(binRoot).Where(d => d != target))
            {
                try
                {
                    Directory.Delete(old, recursive: true);
                }
                catch (IOException)
                {
                }
            }
        }

        var processPath = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(processPath) == "dotnet"
            ? (processPath, [Path.Combine(target, "converge.dll")])
            : (Path.Combine(target, Path.GetFileName(processPath)), []);
    }

    private static string Tail(string path, long offset)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            stream.Seek(Math.Min(offset, stream.Length), SeekOrigin.Begin);
            using var reader = new StreamReader(stream);
            var lines = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            return string.Join('\n', lines.TakeLast(20).Select(l => "  " + l));
        }
        catch (IOException e)
        {
            return $"  (cannot read the log: {e.Message})";
        }
    }
}
