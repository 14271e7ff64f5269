using System.CommandLine;
using Converge.Common;
using Converge.Host;

namespace Converge.Cli;

/// <summary><c>converge host run</c>: the daemon in the foreground.</summary>
internal static class HostCommands
{
    public static Command Build()
    {
        var data = new Option<string>("--data") { Description = "Data directory (host.json, host.pid)", Required = true };
        var disks = new Option<string[]>("--disk")
        {
            Description = "Disk file PATH[:SIZE]; with a size a missing file is formatted, without one it must exist. Repeatable.",
            AllowMultipleArgumentsPerToken = false,
        };
        var name = new Option<string?>("--name") { Description = "Host name (default: the recorded one, else the machine name)" };
        var nbd = new Option<string>("--nbd-listen")
        {
            Description = "NBD listen address",
            DefaultValueFactory = _ => $"127.0.0.1:{HostOptions.DefaultNbdPort}",
        };
        var api = new Option<string>("--api-listen")
        {
            Description = "Management API listen address",
            DefaultValueFactory = _ => $"127.0.0.1:{HostOptions.DefaultApiPort}",
        };

        var peer = new Option<string?>("--peer-listen") { Description = "Cluster mode: host-to-host data port (component and proxied I/O)" };
        var raft = new Option<string?>("--raft-listen") { Description = "Cluster mode (given ⇒ cluster mode): Raft listener of the metadata service" };
        var rpc = new Option<string?>("--rpc-listen") { Description = "Cluster mode: host-to-host RPC listener (HTTPS, mutual TLS with cluster certificates)" };
        var join = new Option<string?>("--join") { Description = "Cluster mode, first start: RPC URL of a cluster member to join (e.g. https://127.0.0.1:7700); needs --join-token" };
        var joinToken = new Option<string?>("--join-token") { Description = "Cluster mode, with --join: a single-use token from 'converge cluster join-token create'" };
        var faultDomain = new Option<string?>("--fault-domain") { Description = "Cluster mode: fault domain (default: the host is its own)" };
        var voters = new Option<int>("--voters")
        {
            Description = "Cluster mode, cold start: how many hosts are Raft members (3 or 5)",
            DefaultValueFactory = _ => 3,
        };

        var heartbeat = new Option<string>("--heartbeat-timeout")
        {
            Description = "Cluster mode: a host silent this long has its components marked absent (e.g. 5s)",
            DefaultValueFactory = _ => "5s",
        };
        var replicaTimeout = new Option<string>("--replica-timeout")
        {
            Description = "Cluster mode: a replica not answering a request this long is marked absent (e.g. 3s)",
            DefaultValueFactory = _ => "3s",
        };
        var resyncBandwidth = new Option<string>("--resync-bandwidth")
        {
            Description = "Cluster mode: resync/rebuild/move bandwidth per virtual disk, per second, while its coordinator serves clients (e.g. 200MiB; 0 = unlimited)",
            DefaultValueFactory = _ => "200MiB",
        };
        var idleResyncBandwidth = new Option<string>("--resync-bandwidth-idle")
        {
            Description = "Cluster mode: the same limit while the coordinator has served no client for a second (e.g. 512MiB; 0 = unlimited)",
            DefaultValueFactory = _ => "512MiB",
        };
        var repairDelay = new Option<string>("--repair-delay")
        {
            Description = "Cluster mode: rebuild an absent component elsewhere after this long (e.g. 60m; a failed disk's at once)",
            DefaultValueFactory = _ => "60m",
        };
        var scrubRate = new Option<string>("--scrub-rate")
        {
            Description = "Cluster mode: the scrubber reads this much of every replica per second, per virtual disk (e.g. 1MiB; 0 = off)",
            DefaultValueFactory = _ => "1MiB",
        };
        var orphanGrace = new Option<string>("--orphan-grace")
        {
            Description = "Cluster mode: delete a local component no virtual disk has referenced for this long (e.g. 10m; 0 = never)",
            DefaultValueFactory = _ => "10m",
        };
        var apiTlsCert = new Option<string?>("--api-tls-cert") { Description = "PEM certificate (chain) to serve the API over HTTPS; required to bind the API beyond loopback" };
        var apiTlsKey = new Option<string?>("--api-tls-key") { Description = "PEM private key of --api-tls-cert" };
        var apiAnonymousRead = new Option<bool?>("--api-anonymous-read")
        {
            Description = "Whether API reads (GET) need no token (default: true while the API is bound to loopback, else false: a read-only or admin token is needed)",
        };
        var apiAllowedHost = new Option<string[]>("--api-allowed-host")
        {
            Description = "A Host header value the API answers (a DNS name clients use), besides loopback names and its bound address (repeatable)",
            AllowMultipleArgumentsPerToken = false,
        };
        var diskRoots = new Option<string[]>("--disk-root")
        {
            Description = "Folder under which 'disk add' may open or create disk files (default: the data directory). Repeatable.",
            AllowMultipleArgumentsPerToken = false,
        };
        var maxConnections = new Option<int>("--max-connections")
        {
            Description = "Connections the NBD port (and the peer port) each serve at once; more are closed at once",
            DefaultValueFactory = _ => ConnectionLimits.Default.MaxConnections,
        };
        var maxConnectionsPerAddress = new Option<int>("--max-connections-per-address")
        {
            Description = "Connections the NBD port (and the peer port) each serve at once from one client IP address",
            DefaultValueFactory = _ => ConnectionLimits.Default.MaxConnectionsPerAddress,
        };
        var faultInjection = new Option<bool>("--enable-fault-injection") { Description = "Testing only: enable /internal/v1/test endpoints that inject faults" };

        var nbdTls = new Option<string>("--nbd-tls")
        {
            Description = "NBD over TLS (NBD_OPT_STARTTLS): off, on (client's choice) or require (every option before STARTTLS gets TLS_REQD); " +
                          "default off on loopback, require for a cluster host bound beyond it (its cluster certificate; clients need one from the cluster CA)",
        };
        var nbdTlsCert = new Option<string?>("--nbd-tls-cert") { Description = "NBD TLS: server certificate (PEM file)" };
        var nbdTlsKey = new Option<string?>("--nbd-tls-key") { Description = "NBD TLS: the certificate's private key (PEM file)" };
        var nbdTlsCa = new Option<string?>("--nbd-tls-ca") { Description = "NBD TLS: require client certificates issued by this CA (PEM file); their subject CN is the client identity" };
        var nbdAllow = new Option<string[]>("--nbd-allow")
        {
            Description = "NBD access list, repeatable: EXPORT=ID[,ID...] admits only these client identities (certificate CNs) to EXPORT",
            AllowMultipleArgumentsPerToken = false,
        };

        var run = new Command("run", "Run the host daemon in the foreground (logs to stdout; SIGTERM/SIGINT stop it cleanly)")
        {
            data, disks, name, nbd, api, peer, raft, rpc, join, joinToken, faultDomain, voters, heartbeat, replicaTimeout, resyncBandwidth, idleResyncBandwidth, repairDelay, scrubRate, orphanGrace, faultInjection,
            apiTlsCert, apiTlsKey, apiAnonymousRead, apiAllowedHost,
            nbdTls, nbdTlsCert, nbdTlsKey, nbdTlsCa, nbdAllow,
            diskRoots, maxConnections, maxConnectionsPerAddress,
        };
        run.SetAction((pr, ct) => Guarded.RunAsync(async () =>
        {
            HostOptions options;
            try
            {
                options = new HostOptions
                {
                    DataDirectory = pr.GetRequiredValue(data),
                    Disks = [.. (pr.GetValue(disks) ?? []).Select(DiskSpec.Parse)],
                    Name = pr.GetValue(name),
                    NbdEndPoint = HostOptions.ParseEndPoint(pr.GetRequiredValue(nbd), "--nbd-listen"),
                    ApiEndPoint = HostOptions.ParseEndPoint(pr.GetRequiredValue(api), "--api-listen"),
                    PeerEndPoint = pr.GetValue(peer) is { } p ? HostOptions.ParseEndPoint(p, "--peer-listen") : null,
                    RaftEndPoint = pr.GetValue(raft) is { } r ? HostOptions.ParseEndPoint(r, "--raft-listen") : null,
                    RpcEndPoint = pr.GetValue(rpc) is { } rp ? HostOptions.ParseEndPoint(rp, "--rpc-listen") : null,
                    JoinUrl = pr.GetValue(join) is { } j ? ParseJoin(j) : null,
                    JoinToken = pr.GetValue(joinToken),
                    FaultDomain = pr.GetValue(faultDomain),
                    VoterTarget = pr.GetValue(voters),
                    HeartbeatTimeout = HostOptions.ParseDuration(pr.GetRequiredValue(heartbeat), "--heartbeat-timeout"),
                    Failures = new Host.Cluster.FailureOptions
                    {
                        ReplicaTimeout = HostOptions.ParseDuration(pr.GetRequiredValue(replicaTimeout), "--replica-timeout"),
                        ResyncBandwidthBytesPerSecond = ParseBandwidth(pr.GetRequiredValue(resyncBandwidth), "--resync-bandwidth"),
                        IdleResyncBandwidthBytesPerSecond = ParseBandwidth(pr.GetRequiredValue(idleResyncBandwidth), "--resync-bandwidth-idle"),
                        RepairDelay = HostOptions.ParseDuration(pr.GetRequiredValue(repairDelay), "--repair-delay"),
                        ScrubBytesPerSecond = ParseBandwidth(pr.GetRequiredValue(scrubRate), "--scrub-rate"),
                        OrphanGrace = HostOptions.ParseDuration(pr.GetRequiredValue(orphanGrace), "--orphan-grace"),
                    },
                    EnableFaultInjection = pr.GetValue(faultInjection),
                    ApiTlsCertificatePath = pr.GetValue(apiTlsCert),
                    ApiTlsKeyPath = pr.GetValue(apiTlsKey),
                    ApiAnonymousRead = pr.GetValue(apiAnonymousRead),
                    ApiAllowedHosts = pr.GetValue(apiAllowedHost) ?? [],
                    NbdTlsCertificate = pr.GetValue(nbdTlsCert),
                    NbdTlsKey = pr.GetValue(nbdTlsKey),
                    NbdTlsCa = pr.GetValue(nbdTlsCa),
                    NbdAllow = pr.GetValue(nbdAllow) ?? [],
                    DiskRoots = pr.GetValue(diskRoots) ?? [],
                    ConnectionLimits = new ConnectionLimits
                    {
                        MaxConnections = pr.GetValue(maxConnections),
                        MaxConnectionsPerAddress = pr.GetValue(maxConnectionsPerAddress),
                    },
                };
                if (pr.GetValue(nbdTls) is { } mode)
                {
                    // Given or not matters: not given, a cluster host beyond loopback requires TLS (HostOptions.NbdTls).
                    options = options with { NbdTls = HostOptions.ParseNbdTlsMode(mode) };
                }

                options.Validate();
            }
            catch (HostOptionsException e)
            {
                throw new UsageException(e.Message);
            }

            return await ConvergeHost.RunAsync(options, ct).ConfigureAwait(false);
        }));

        var host = new Command("host", "The host daemon, and the hosts of a cluster");
        host.Subcommands.Add(run);
        host.Subcommands.Add(CliCommands.BuildHostList());
        host.Subcommands.Add(IdentityCommands.HostRevoke());
        foreach (var command in ManagementCommands.HostSubcommands())
        {
            host.Subcommands.Add(command);
        }

        return host;
    }

    private static long ParseBandwidth(string text, string option) =>
        text.Trim() == "0" ? 0 : ByteSize.TryParse(text, out var bytes, out _) && bytes > 0
            ? bytes
            : throw new HostOptionsException($"{option}: '{text}' is not a size per second (e.g. 256MiB, or 0)");

    private static Uri ParseJoin(string text)
    {
        var value = text.Contains("://", StringComparison.Ordinal) ? text : "https://" + text;
        return Uri.TryCreate(value, UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttps
            ? uri
            : throw new HostOptionsException($"--join '{text}' is not an https:// URL of a member's RPC listener (--rpc-listen) such as https://127.0.0.1:7700");
    }
}
