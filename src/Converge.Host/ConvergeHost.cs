using System.Globalization;
using System.Reflection;
using Converge.Coordinator.Peer;
using Converge.Host.Cluster;
using Converge.Host.Management;
using Converge.Nbd;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging.Console;

namespace Converge.Host;

/// <summary>
/// The daemon: opens the disks, serves NBD (<see cref="NbdListener"/>, raw sockets) and the management API (Kestrel),
/// and on SIGTERM/SIGINT (or <c>cancellationToken</c>) stops accepting, finishes in-flight requests, then flushes,
/// checkpoints and closes every disk.
/// </summary>
public static class ConvergeHost
{
    /// <summary>Category of the host's own log lines (<c>info: converge.host[9] ready</c>).</summary>
    public const string LogCategory = "converge.host";

    /// <summary>The runtime's switch for running socket continuations on its epoll threads (read once, at the first socket).</summary>
    public const string InlineCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    public const string PidFileName = "host.pid";
    public const string LockFileName = "host.lock";

    /// <summary>Connections the management API serves at once (Kestrel's MaxConcurrentConnections).</summary>
    public const int ApiMaxConnections = 256;

    /// <summary>Largest request body the management API reads; more gets 413.</summary>
    public const long ApiMaxRequestBodyBytes = 1024 * 1024;

    /// <summary>Runs until stopped. Returns 0 after a clean shutdown, 1 when the host could not start (the reason is logged).</summary>
    /// <exception cref="HostOptionsException">The options are invalid.</exception>
    /// <exception cref="HostStartException">The data directory cannot be created (nothing is logged yet).</exception>
    public static async Task<int> RunAsync(HostOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        PreferInlineSocketCompletions();

        var dataDirectory = Path.GetFullPath(options.DataDirectory);
        FileModes.RestrictProcessUmask();
        try
        {
            FileModes.CreatePrivateDirectory(dataDirectory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new HostStartException($"cannot create the data directory {dataDirectory}: {e.Message}", e);
        }

        // Read before anything starts, so that bad PEM files stop the host with a clear message.
        using var apiCertificate = options.ApiTlsCertificatePath is not null ? ApiSecurity.LoadCertificate(options) : null;
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            // No config reload: its file watcher sits on the content root (the data directory), and inotify then
            // woke a thread for every pwrite to a disk file there, several percent of host CPU under random writes.
            Args = ["--hostBuilder:reloadConfigOnChange=false"],
            ApplicationName = "converge",
            ContentRootPath = dataDirectory,
        });
        ConfigureLogging(builder.Logging);
        builder.Services.Configure<Microsoft.Extensions.Hosting.HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(options.Time);
        builder.Services.AddSingleton<HostInventory>();
        builder.Services.AddSingleton(sp => new IoMeters(Prometheus.Metrics.DefaultRegistry, options.Time));
        if (options.IsCluster)
        {
            builder.Services.AddSingleton<ClusterNode>();
            builder.Services.AddSingleton<INbdExportCatalog>(sp => new MeteredExportCatalog(sp.GetRequiredService<ClusterNode>(), sp.GetRequiredService<IoMeters>()));
            builder.Services.AddSingleton<IPeerRequestHandler>(sp => sp.GetRequiredService<ClusterNode>());
        }
        else
        {
            builder.Services.AddSingleton<INbdExportCatalog>(sp => new MeteredExportCatalog(sp.GetRequiredService<HostInventory>(), sp.GetRequiredService<IoMeters>()));
        }

        ApiSecurity.AddServices(builder.Services, options);
        builder.Services.AddSingleton<ClusterViews>();
        builder.Services.AddSingleton<HealthChecks>();
        builder.Services.AddSingleton(sp => new HostMetrics(Prometheus.Metrics.DefaultRegistry, sp.GetRequiredService<HostInventory>(), sp));
        builder.Services.AddOpenApi(o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "Converge management API";
            document.Info.Description = "Mutating calls (POST, PUT, PATCH, DELETE) need 'Authorization: Bearer TOKEN' with an admin token and 'Content-Type: application/json' or 'X-Converge-Client: 1'; " +
                                        "reads need a read-only or admin token unless the API is bound to loopback; errors are RFC 7807 problem details.";
            return Task.CompletedTask;
        }));

        IServiceProvider? services = null;   // set once built: NBD TLS reads the cluster identity per handshake
        builder.Services.AddSingleton(NbdHostedListener.CreateServerOptions(options, () => services?.GetService<ClusterNode>()?.IdentityIfLoaded));
        builder.Services.AddSingleton<HostRuntime>();
        if (options.IsCluster)
        {
            // The peer data port runs on its own sockets, not Kestrel (see PeerListener); started and stopped with the app.
            // Mutual TLS on cluster certificates: a connection without a valid one is refused before any request is read.
            builder.Services.AddHostedService(sp => new PeerListener(
                options.PeerEndPoint!, sp.GetRequiredService<IPeerRequestHandler>(), sp.GetRequiredService<ILogger<PeerListener>>(),
                ClusterTls.ServerOptionsRequiringClusterClients(() => sp.GetRequiredService<ClusterNode>().IdentityIfLoaded), time: options.Time)
            {
                Limits = options.ConnectionLimits,
                Logger = sp.GetRequiredService<ILogger<PeerListener>>(),
                Time = options.Time,
            });
        }

        // NBD runs on its own sockets too (see NbdListener). Registered after the peer listener, so it stops first: the
        // NBD requests still in flight at shutdown may need the peers to finish their replicated writes.
        builder.Services.AddHostedService(sp => new NbdHostedListener(new NbdListener(
            options.NbdEndPoint, sp.GetRequiredService<INbdExportCatalog>(), sp.GetRequiredService<NbdServerOptions>(), sp.GetRequiredService<ILogger<NbdListener>>())
        {
            Limits = options.ConnectionLimits,
            Time = options.Time,
        }));

        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;

            // The API takes small JSON bodies from operators; a client must not hold connections or memory open-ended.
            k.Limits.MaxConcurrentConnections = ApiMaxConnections;
            k.Limits.MaxConcurrentUpgradedConnections = ApiMaxConnections;
            k.Limits.MaxRequestBodySize = ApiMaxRequestBodyBytes;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(60);
            k.Listen(options.ApiEndPoint, l =>
            {
                l.Protocols = HttpProtocols.Http1;
                if (apiCertificate is not null)
                {
                    l.UseHttps(apiCertificate);
                }
                else if (options.ApiUsesClusterCertificate)
                {
                    // Read per handshake: the founder makes its certificate, and a joining host gets it, after Kestrel is set up.
                    l.UseHttps(new Microsoft.AspNetCore.Server.Kestrel.Https.HttpsConnectionAdapterOptions
                    {
                        ServerCertificateSelector = (_, _) => k.ApplicationServices.GetRequiredService<ClusterNode>().IdentityIfLoaded?.Certificate,
                    });
                }
            });
            if (options.IsCluster)
            {
                RpcEndpoints.Listen(k, options);
            }
        });

        await using var app = builder.Build();
        services = app.Services;
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(LogCategory);
        var runtime = app.Services.GetRequiredService<HostRuntime>();
        if (options.IsCluster)
        {
            RpcEndpoints.Use(app, options);
        }

        ManagementApi.Map(app);

        FileStream? lockFile = null;
        var pidPath = Path.Combine(dataDirectory, PidFileName);
        HostInventory? inventory = null;
        var cluster = app.Services.GetService<ClusterNode>();
        try
        {
            try
            {
                lockFile = AcquireLock(dataDirectory);
                await File.WriteAllTextAsync(pidPath, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n", cancellationToken).ConfigureAwait(false);

                inventory = app.Services.GetRequiredService<HostInventory>();
                await inventory.OpenAsync(cancellationToken).ConfigureAwait(false);
                _ = app.Services.GetRequiredService<HostMetrics>();
                if (cluster is null)
                {
                    // A standalone host makes its admin token at its first start (DIR/admin-token, 0600).
                    _ = app.Services.GetRequiredService<ApiTokenStore>();
                    ManagementLog.StandaloneTokenWritten(logger, Path.Combine(dataDirectory, AdminToken.FileName));
                }
                if (cluster is not null)
                {
                    await cluster.StartMetadataAsync(cancellationToken).ConfigureAwait(false);
                }

                try
                {
                    await app.StartAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or InvalidOperationException)
                {
                    throw new HostStartException(
                        cluster is null
                            ? $"cannot listen (NBD on {options.NbdEndPoint}, API on {options.ApiEndPoint}): {e.Message} " +
                              "Is another host or NBD server using the port? Pick others with --nbd-listen/--api-listen."
                            : $"cannot listen (NBD on {options.NbdEndPoint}, API on {options.ApiEndPoint}, peer on {options.PeerEndPoint}, RPC on {options.RpcEndPoint}): {e.Message} " +
                              "Is another host using the port? Pick others with --nbd-listen/--api-listen/--peer-listen/--rpc-listen.",
                        e);
                }

                cluster?.StartBackground();
            }
            catch (Exception e) when (e is HostStartException or IOException or UnauthorizedAccessException or System.Net.Sockets.SocketException)
            {
                Log.StartFailed(logger, e.Message);
                return 1;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return 0;
            }

            app.Lifetime.ApplicationStopping.Register(() => Log.Stopping(logger, options.ShutdownTimeout.TotalSeconds));
            runtime.MarkReady(options.Time.GetUtcNow());
            Log.Listening(logger, HostInventory.FormatEndPoint(options.NbdEndPoint), runtime.ApiEndpoint);
            Log.Ready(logger);

            // Returns once the listeners have stopped: in-flight requests finished, or connections cut after ShutdownTimeout.
            await app.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
            return 0;
        }
        finally
        {
            if (cluster is not null)
            {
                await cluster.DisposeAsync().ConfigureAwait(false);
            }

            if (inventory is not null)
            {
                await inventory.DisposeAsync().ConfigureAwait(false);
            }

            if (lockFile is not null)
            {
                TryDelete(pidPath);
                await lockFile.DisposeAsync().ConfigureAwait(false);
                Log.Stopped(logger);
            }
        }
    }

    internal static string Version { get; } =
        typeof(ConvergeHost).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(ConvergeHost).Assembly.GetName().Version?.ToString()
        ?? "0.0.0";

    /// <summary>
    /// Socket continuations run on the runtime's epoll threads instead of each hopping to a thread-pool worker. Every NBD
    /// request and every replica write crosses two sockets, and the hops (a futex wake and a context switch each) cost
    /// more than the work: 4 KiB random writes on a 3-host cluster ran at 1.5-2.3x the IOPS with half the CPU per write
    /// (bench/RESULTS.md). Safe here because nothing on those paths blocks for long: fdatasync runs on its own pool
    /// thread and the store's pwrite and pread go to the page cache. Only effective before the process's first socket,
    /// so the host daemon sets it first thing; an operator's own setting (0 turns it off) wins.
    /// </summary>
    private static void PreferInlineSocketCompletions()
    {
        if (Environment.GetEnvironmentVariable(InlineCompletionsVariable) is null)
        {
            Environment.SetEnvironmentVariable(InlineCompletionsVariable, "1");
        }
    }

    private static void ConfigureLogging(ILoggingBuilder logging)
    {
        logging.ClearProviders();
        logging.SetMinimumLevel(LogLevel.Information);
        logging.AddFilter("Microsoft", LogLevel.Warning);
        logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);

        // A failed bind is reported once, in words, by "cannot start: ..."; not again as a stack trace.
        logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
        logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fff ";
            o.UseUtcTimestamp = true;
            o.ColorBehavior = LoggerColorBehavior.Disabled;
        });
    }

    /// <summary>One host per data directory: an exclusive lock (flock) on <c>DIR/host.lock</c> held while running.</summary>
    private static FileStream AcquireLock(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, LockFileName);
        try
        {
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            var pid = File.Exists(Path.Combine(dataDirectory, PidFileName))
                ? File.ReadAllText(Path.Combine(dataDirectory, PidFileName)).Trim()
                : "unknown";
            throw new HostStartException($"another host (pid {pid}) is already running with data directory {dataDirectory}", e);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Facts about the running process the API reports.</summary>
internal sealed class HostRuntime(HostOptions options)
{
    private volatile bool ready;

    public bool Ready => ready;

    public DateTimeOffset StartedAt { get; private set; }

    public string ApiEndpoint { get; } = (options.ApiTls ? "https://" : "http://") + HostInventory.FormatEndPoint(options.ApiEndPoint);

    public void MarkReady(DateTimeOffset now)
    {
        StartedAt = now;
        ready = true;
    }
}
