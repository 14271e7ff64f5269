using System.Globalization;
using System.Net;
using Converge.Common;
using Converge.Nbd;

namespace Converge.Host;

/// <summary>Everything <see cref="ConvergeHost.RunAsync"/> needs. Immutable; <see cref="Validate"/> says what is wrong in words.</summary>
public sealed record HostOptions
{
    public const int DefaultNbdPort = 10809;
    public const int DefaultApiPort = 7480;

    /// <summary>Holds <c>host.json</c>, <c>host.pid</c> and <c>host.lock</c>.</summary>
    public required string DataDirectory { get; init; }

    /// <summary>Disks given on the command line, in addition to those already recorded in <c>host.json</c>.</summary>
    public IReadOnlyList<DiskSpec> Disks { get; init; } = [];

    /// <summary>Host name; null keeps the recorded one (or derives one from the machine name the first time).</summary>
    public string? Name { get; init; }

    public IPEndPoint NbdEndPoint { get; init; } = new(IPAddress.Loopback, DefaultNbdPort);
    public IPEndPoint ApiEndPoint { get; init; } = new(IPAddress.Loopback, DefaultApiPort);

    public TimeProvider Time { get; init; } = TimeProvider.System;

    /// <summary>Cluster mode (set ⇔ cluster mode): this host's Raft listener for the metadata service.</summary>
    public IPEndPoint? RaftEndPoint { get; init; }

    /// <summary>Cluster mode: the host-to-host data port (component I/O, proxied object I/O, disk stats).</summary>
    public IPEndPoint? PeerEndPoint { get; init; }

    /// <summary>Cluster mode: RPC URL (<c>https://ADDR:RPCPORT</c>) of a member to join through (first start only; ignored once joined).</summary>
    public Uri? JoinUrl { get; init; }

    /// <summary>Cluster mode, with <see cref="JoinUrl"/>: the single-use join token (<c>converge cluster join-token create</c>).</summary>
    public string? JoinToken { get; init; }

    /// <summary>Cluster mode: the host-to-host RPC listener (<c>/internal/v1</c>, HTTPS with mutual TLS on cluster certificates).</summary>
    public IPEndPoint? RpcEndPoint { get; init; }

    /// <summary>Cluster mode: fault domain name (default: the host is its own fault domain).</summary>
    public string? FaultDomain { get; init; }

    /// <summary>Cluster mode, cold start only: how many hosts are Raft members (3 or 5; 1 for a lab).</summary>
    public int VoterTarget { get; init; } = 3;

    public bool IsCluster => RaftEndPoint is not null;

    /// <summary>PEM certificate (chain) of the API's HTTPS listener; with <see cref="ApiTlsKeyPath"/>. Needed to bind the API beyond loopback.</summary>
    public string? ApiTlsCertificatePath { get; init; }

    /// <summary>PEM private key of <see cref="ApiTlsCertificatePath"/>.</summary>
    public string? ApiTlsKeyPath { get; init; }

    /// <summary>Whether GETs need no token; null: only while the API is bound to loopback (the quick start's UI and reads).</summary>
    public bool? ApiAnonymousRead { get; init; }

    /// <summary>Host header values the API answers besides loopback names and its bound address (<c>--api-allowed-host</c>).</summary>
    public IReadOnlyList<string> ApiAllowedHosts { get; init; } = [];

    public bool ApiIsLoopback => IPAddress.IsLoopback(ApiEndPoint.Address);

    /// <summary>
    /// HTTPS on the API: with <c>--api-tls-cert</c>, or, in cluster mode, with the host's cluster certificate whenever
    /// the API is bound beyond loopback (clients trust the cluster CA, <c>DATA/tls/ca.crt</c>).
    /// </summary>
    public bool ApiTls => ApiTlsCertificatePath is not null || ApiUsesClusterCertificate;

    /// <summary>Cluster mode, API beyond loopback, no <c>--api-tls-cert</c>: HTTPS with the host's cluster certificate.</summary>
    public bool ApiUsesClusterCertificate => ApiTlsCertificatePath is null && IsCluster && !ApiIsLoopback;

    public bool ApiAnonymousReadEffective => ApiAnonymousRead ?? ApiIsLoopback;

    /// <summary>Cluster mode: replica timeout, intent rotation and resync bandwidth of this host's coordinators.</summary>
    public Cluster.FailureOptions Failures { get; init; } = new();

    /// <summary>Cluster mode: a host not answering heartbeats for this long has its components marked absent.</summary>
    public TimeSpan HeartbeatTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Test hook: <c>/internal/v1/test/...</c> endpoints that inject faults (failing disks).</summary>
    public bool EnableFaultInjection { get; init; }

    /// <summary>
    /// How long open connections may take to finish after SIGTERM before they are cut. Shorter than the 30 s
    /// <c>converge down</c> allows, so the disks are still flushed and checkpointed before any SIGKILL.
    /// </summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How often each disk flushes unflushed writes in the background.</summary>
    public TimeSpan BackgroundFlushInterval { get; init; } = TimeSpan.FromSeconds(1);

    // NBD over TLS and per-export access lists (docs/security/tls.md).

    private readonly NbdTlsMode? nbdTls;

    /// <summary>
    /// <c>--nbd-tls off|on|require</c>: whether NBD_OPT_STARTTLS is refused, offered, or required before any other option.
    /// Not given: off on loopback; a cluster host bound beyond loopback requires it, with its cluster certificate
    /// (<see cref="NbdUsesClusterCertificate"/>).
    /// </summary>
    public NbdTlsMode NbdTls
    {
        get => nbdTls ?? (IsCluster && !IPAddress.IsLoopback(NbdEndPoint.Address) ? NbdTlsMode.Require : NbdTlsMode.Off);
        init => nbdTls = value;
    }

    /// <summary>
    /// Cluster mode with NBD TLS and no <c>--nbd-tls-cert</c>: the host's cluster certificate serves, and clients need a
    /// certificate from the cluster CA (or from <c>--nbd-tls-ca</c>): no credentials, no export.
    /// </summary>
    public bool NbdUsesClusterCertificate => IsCluster && NbdTls != NbdTlsMode.Off && NbdTlsCertificate is null;

    /// <summary><c>--nbd-tls-cert FILE</c>: the NBD server certificate (PEM; intermediates may follow it).</summary>
    public string? NbdTlsCertificate { get; init; }

    /// <summary><c>--nbd-tls-key FILE</c>: its private key (PEM).</summary>
    public string? NbdTlsKey { get; init; }

    /// <summary><c>--nbd-tls-ca FILE</c>: when set, NBD clients must present a certificate issued by this CA (PEM); its subject CN is the client's identity.</summary>
    public string? NbdTlsCa { get; init; }

    /// <summary><c>--nbd-allow EXPORT=ID[,ID...]</c> (repeatable): only these client identities may use EXPORT; exports without a rule admit every client TLS admits.</summary>
    public IReadOnlyList<string> NbdAllow { get; init; } = [];

    /// <summary>Parses <c>off</c>, <c>on</c> or <c>require</c>.</summary>
    public static NbdTlsMode ParseNbdTlsMode(string text) => text?.Trim().ToLowerInvariant() switch
    {
        "off" => NbdTlsMode.Off,
        "on" => NbdTlsMode.On,
        "require" => NbdTlsMode.Require,
        _ => throw new HostOptionsException($"--nbd-tls '{text}': give off, on or require"),
    };

    private void ValidateNbdTls(List<string> problems)
    {
        var files = new[] { (NbdTlsCertificate, "--nbd-tls-cert"), (NbdTlsKey, "--nbd-tls-key"), (NbdTlsCa, "--nbd-tls-ca") };
        if (NbdTls == NbdTlsMode.Off)
        {
            foreach (var (_, option) in files.Where(f => f.Item1 is not null))
            {
                problems.Add($"{option} is given but --nbd-tls is off; add --nbd-tls on or --nbd-tls require");
            }
        }
        else if ((NbdTlsCertificate is null || NbdTlsKey is null) && !NbdUsesClusterCertificate)
        {
            problems.Add($"--nbd-tls {NbdTls.ToString().ToLowerInvariant()} needs a server certificate: give --nbd-tls-cert FILE and --nbd-tls-key FILE (PEM)");
        }

        foreach (var (path, option) in files)
        {
            if (path is not null && !File.Exists(path))
            {
                problems.Add($"{option} {path}: no such file");
            }
        }

        if (NbdAllow.Count > 0)
        {
            if (NbdTlsCa is null && !NbdUsesClusterCertificate)
            {
                problems.Add("--nbd-allow needs --nbd-tls-ca: client identities are the names in client certificates that CA issued");
            }

            try
            {
                NbdExportAccessList.Parse(NbdAllow);
            }
            catch (FormatException e)
            {
                problems.Add($"--nbd-allow {e.Message}");
            }
        }
    }

    /// <summary>
    /// Folders under which <c>disk add</c> (the API) may open or create disk files (--disk-root, repeatable); empty means
    /// the data directory only. Disks given with --disk at start are the operator's own and are not limited.
    /// </summary>
    public IReadOnlyList<string> DiskRoots { get; init; } = [];

    /// <summary>Connections the NBD and peer ports each serve at once, in total and per client address (--max-connections, --max-connections-per-address).</summary>
    public ConnectionLimits ConnectionLimits { get; init; } = ConnectionLimits.Default;

    /// <summary>Parses a duration such as <c>5s</c>, <c>500ms</c>, <c>2m</c>, <c>1h</c> or plain seconds.</summary>
    public static TimeSpan ParseDuration(string text, string option)
    {
        var t = text.Trim();
        (string Suffix, double Scale)[] units = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)];
        foreach (var (suffix, scale) in units)
        {
            if (t.EndsWith(suffix, StringComparison.OrdinalIgnoreCase) &&
                double.TryParse(t[..^suffix.Length], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && v >= 0)
            {
                return TimeSpan.FromSeconds(v * scale);
            }
        }

        return double.TryParse(t, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds >= 0
            ? TimeSpan.FromSeconds(seconds)
            : throw new HostOptionsException($"{option}: '{text}' is not a duration (e.g. 5s, 500ms, 2m)");
    }

    /// <summary>Throws <see cref="HostOptionsException"/> listing every problem.</summary>
    public void Validate()
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(DataDirectory))
        {
            problems.Add("the data directory (--data) is empty");
        }

        if (Name is not null && !NameRules.IsValid(Name, out var nameError))
        {
            problems.Add($"host {nameError}");
        }

        if (ConnectionLimits.MaxConnections < 1)
        {
            problems.Add($"--max-connections {ConnectionLimits.MaxConnections}: it must be at least 1");
        }

        if (ConnectionLimits.MaxConnectionsPerAddress < 1)
        {
            problems.Add($"--max-connections-per-address {ConnectionLimits.MaxConnectionsPerAddress}: it must be at least 1");
        }

        foreach (var root in DiskRoots)
        {
            if (string.IsNullOrWhiteSpace(root) || !System.IO.Path.IsPathFullyQualified(root))
            {
                problems.Add($"--disk-root '{root}': give an absolute folder path");
            }
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var disk in Disks)
        {
            if (string.IsNullOrWhiteSpace(disk.Path))
            {
                problems.Add("a disk path (--disk) is empty");
                continue;
            }

            if (!seen.Add(System.IO.Path.GetFullPath(disk.Path)))
            {
                problems.Add($"disk {disk.Path} is given twice");
            }

            if (disk.SizeBytes is { } size && (size <= 0 || size % BlockGeometry.BlockSize != 0))
            {
                problems.Add($"disk {disk.Path}: size {size} bytes must be positive and a multiple of {BlockGeometry.BlockSize}");
            }
        }

        foreach (var (endPoint, option) in new[] { (NbdEndPoint, "--nbd-listen"), (ApiEndPoint, "--api-listen") })
        {
            if (endPoint.Port == 0)
            {
                problems.Add($"{option} {endPoint}: port 0 is not supported; pick a port");
            }
        }

        if (IsCluster)
        {
            if (PeerEndPoint is null)
            {
                problems.Add("cluster mode (--raft-listen) also needs --peer-listen");
            }

            if (RpcEndPoint is null)
            {
                problems.Add("cluster mode (--raft-listen) also needs --rpc-listen (host-to-host RPC over mutual TLS)");
            }

            if (JoinUrl is not null && string.IsNullOrWhiteSpace(JoinToken))
            {
                problems.Add("--join needs --join-token: a host joins only with a token from 'converge cluster join-token create' on a member");
            }
            else if (JoinUrl is null && JoinToken is not null)
            {
                problems.Add("--join-token needs --join (the RPC URL of a member)");
            }

            var all = new[] { NbdEndPoint, ApiEndPoint, PeerEndPoint, RaftEndPoint, RpcEndPoint }.Where(e => e is not null).ToList();
            if (all.Distinct().Count() != all.Count)
            {
                problems.Add("the NBD, API, peer, Raft and RPC listeners must use different ports");
            }

            if (VoterTarget is not (1 or 3 or 5))
            {
                problems.Add($"--voters {VoterTarget}: give 1, 3 or 5");
            }

            if (FaultDomain is not null && !NameRules.IsValid(FaultDomain, out var domainError))
            {
                problems.Add($"fault domain {domainError}");
            }
        }
        else if (PeerEndPoint is not null || JoinUrl is not null || RpcEndPoint is not null)
        {
            problems.Add("--peer-listen, --rpc-listen and --join need cluster mode: give --raft-listen too");
        }

        if ((ApiTlsCertificatePath is null) != (ApiTlsKeyPath is null))
        {
            problems.Add("--api-tls-cert and --api-tls-key go together: give both PEM files, or neither");
        }

        foreach (var (path, option) in new[] { (ApiTlsCertificatePath, "--api-tls-cert"), (ApiTlsKeyPath, "--api-tls-key") })
        {
            if (path is not null && !File.Exists(path))
            {
                problems.Add($"{option} {path}: no such file");
            }
        }

        if (!ApiIsLoopback && !ApiTls)
        {
            problems.Add($"--api-listen {ApiEndPoint} is beyond loopback, and the API would carry tokens in clear text: " +
                         "give --api-tls-cert FILE --api-tls-key FILE (PEM) to serve it over HTTPS, or bind it to 127.0.0.1 " +
                         "(a cluster host serves it over HTTPS with its cluster certificate)");
        }

        foreach (var allowed in ApiAllowedHosts)
        {
            if (string.IsNullOrWhiteSpace(allowed) || allowed.Contains('/', StringComparison.Ordinal) || allowed.Contains(' ', StringComparison.Ordinal))
            {
                problems.Add($"--api-allowed-host '{allowed}' is not a host name or address (no scheme, path or spaces)");
            }
        }

        if (NbdEndPoint.Equals(ApiEndPoint))
        {
            problems.Add($"the NBD and API listeners both use {NbdEndPoint}; give them different ports");
        }

        ValidateNbdTls(problems);

        if (ShutdownTimeout <= TimeSpan.Zero || BackgroundFlushInterval <= TimeSpan.Zero)
        {
            problems.Add("the shutdown timeout and the background flush interval must be positive");
        }

        if (problems.Count > 0)
        {
            throw new HostOptionsException(string.Join("; ", problems));
        }
    }

    /// <summary>Parses <c>127.0.0.1:10809</c>, <c>[::1]:10809</c>, <c>0.0.0.0:7480</c>, <c>localhost:7480</c>.</summary>
    public static IPEndPoint ParseEndPoint(string text, string what)
    {
        ArgumentNullException.ThrowIfNull(text);
        var s = text.Trim();
        if (s.StartsWith("localhost:", StringComparison.OrdinalIgnoreCase))
        {
            s = "127.0.0.1" + s["localhost".Length..];
        }

        if (IPEndPoint.TryParse(s, out var endPoint) && s.Contains(':', StringComparison.Ordinal) && endPoint.Port != 0)
        {
            return endPoint;
        }

        throw new HostOptionsException($"{what} '{text}' is not an address and port such as 127.0.0.1:{DefaultNbdPort}");
    }
}

/// <summary>One <c>--disk PATH[:SIZE]</c>: with a size a missing file is formatted; without one, the file must exist.</summary>
public sealed record DiskSpec(string Path, long? SizeBytes)
{
    /// <summary>Parses <c>PATH</c> or <c>PATH:SIZE</c> (the size after the last colon, e.g. <c>/d/disk1.img:8GiB</c>).</summary>
    public static DiskSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var colon = text.LastIndexOf(':');
        if (colon > 0 && colon < text.Length - 1)
        {
            var sizeText = text[(colon + 1)..];
            if (!sizeText.Contains('/', StringComparison.Ordinal))
            {
                if (!ByteSize.TryParse(sizeText, out var bytes, out var error))
                {
                    throw new HostOptionsException($"--disk '{text}': {error}");
                }

                if (bytes <= 0 || bytes % BlockGeometry.BlockSize != 0)
                {
                    throw new HostOptionsException(string.Create(
                        CultureInfo.InvariantCulture,
                        $"--disk '{text}': the size must be positive and a multiple of {BlockGeometry.BlockSize} bytes"));
                }

                return new DiskSpec(text[..colon], bytes);
            }
        }

        return new DiskSpec(text, null);
    }

    public override string ToString() => SizeBytes is { } s ? $"{Path}:{ByteSize.Format(s)}" : Path;
}

/// <summary>Invalid host configuration; the message is meant for the operator.</summary>
public sealed class HostOptionsException(string message) : Exception(message);

/// <summary>The host could not start (data directory in use, no disks, a port taken...); the message says why.</summary>
public sealed class HostStartException(string message, Exception? inner = null) : Exception(message, inner);
