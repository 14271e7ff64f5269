using System.CommandLine;
using System.Text.Json;
using Converge.Common;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary>The command tree of <c>converge</c>.</summary>
internal static class CliCommands
{
    public const string DefaultApi = "http://127.0.0.1:7480";

    internal static readonly Option<string?> ApiOption = new("--api")
    {
        Description = $"Host API URL, http:// or https:// (default: $CONVERGE_API, else the first host in ./.converge/cluster.json, else {DefaultApi})",
        Recursive = true,
    };

    internal static readonly Option<string?> TokenOption = new("--token")
    {
        Description = "API token: an admin token for changes, any token for reads beyond loopback (default: $CONVERGE_TOKEN, else DIR/admin-token of a host on this machine, else ./.converge/admin-token)",
        Recursive = true,
    };

    internal static readonly Option<string?> CaOption = new("--ca")
    {
        Description = "PEM file of the CA (or certificate) to trust for an https:// API, besides the system's (default: $CONVERGE_CA)",
        Recursive = true,
    };

    public static RootCommand Build()
    {
        var root = new RootCommand("Converge: hyperconverged block storage. Virtual disks served over NBD.");
        root.Options.Add(ApiOption);
        root.Options.Add(TokenOption);
        root.Options.Add(CaOption);
        root.Subcommands.Add(HostCommands.Build());
        root.Subcommands.Add(BuildVdisk());
        root.Subcommands.Add(BuildDisk());
        root.Subcommands.Add(BuildPolicy());
        root.Subcommands.Add(BuildStatus());
        root.Subcommands.Add(ClusterCommands.BuildUp());
        root.Subcommands.Add(ClusterCommands.BuildDown());
        root.Subcommands.Add(MoveCommands.BuildCluster());
        root.Subcommands.Add(TokenCommands.Build());
        foreach (var command in ManagementCommands.Build())
        {
            root.Subcommands.Add(command);
        }

        return root;
    }

    private static Command BuildVdisk()
    {
        var vdisk = new Command("vdisk", "Create, list, show, grow and delete virtual disks");

        var name = new Argument<string>("name") { Description = "Virtual disk name (lower-case letters, digits, '.', '_', '-')" };
        var size = new Option<string>("--size") { Description = "Size, e.g. 10GiB, 512M or a number of bytes (a multiple of 4096)", Required = true };
        var policy = new Option<string?>("--policy") { Description = "Cluster mode: storage policy (default: the cluster's default policy)" };
        var create = new Command("create", "Create a thin-provisioned virtual disk and print its NBD URI") { name, size, policy };
        SetMutatingAction(create, async (pr, client, ct) =>
        {
            var n = CheckName(pr.GetRequiredValue(name));
            var s = pr.GetRequiredValue(size);
            CheckSize(s);
            var request = CreateVirtualDiskRequest.Create(n, s) with { Policy = pr.GetValue(policy) };
            var created = await client.CreateVirtualDiskAsync(request, ct).ConfigureAwait(false);
            Output.Line(created.Policy is null
                ? $"created virtual disk {created.Name} ({ByteSize.Format(created.SizeBytes)}) on {created.DiskPath}"
                : $"created virtual disk {created.Name} ({ByteSize.Format(created.SizeBytes)}, policy {created.Policy}, {created.Layout?.Count ?? 0} component(s) on {string.Join(", ", (created.Layout ?? []).Select(c => c.HostName).Distinct())})");
            Output.Line(created.NbdUri);
            return ExitCodes.Ok;
        });

        var json = JsonOption();
        var list = new Command("list", "List virtual disks") { json };
        SetApiAction(list, async (pr, client, ct) =>
        {
            var vdisks = await client.ListVirtualDisksAsync(ct).ConfigureAwait(false);
            if (pr.GetValue(json))
            {
                Output.Json(vdisks, ContractsJsonContext.Indented.IReadOnlyListVirtualDiskInfo);
            }
            else
            {
                Output.VirtualDisks(vdisks);
            }

            return ExitCodes.Ok;
        });

        var showName = new Argument<string>("name") { Description = "Virtual disk name" };
        var showJson = JsonOption();
        var show = new Command("show", "Show one virtual disk") { showName, showJson };
        SetApiAction(show, async (pr, client, ct) =>
        {
            var info = await client.GetVirtualDiskAsync(CheckName(pr.GetRequiredValue(showName)), ct).ConfigureAwait(false);
            if (pr.GetValue(showJson))
            {
                Output.Json(info, ContractsJsonContext.Indented.VirtualDiskInfo);
            }
            else
            {
                Output.VirtualDisk(info);
            }

            return ExitCodes.Ok;
        });

        var resizeName = new Argument<string>("name") { Description = "Virtual disk name" };
        var resizeSize = new Option<string>("--size") { Description = "New size (grow only), e.g. 20GiB", Required = true };
        var resize = new Command("resize", "Grow a virtual disk") { resizeName, resizeSize };
        SetMutatingAction(resize, async (pr, client, ct) =>
        {
            var n = CheckName(pr.GetRequiredValue(resizeName));
            var s = pr.GetRequiredValue(resizeSize);
            CheckSize(s);
            var info = await client.ResizeVirtualDiskAsync(n, s, ct).ConfigureAwait(false);
            Output.Line($"virtual disk {info.Name} is now {ByteSize.Format(info.SizeBytes)}");
            return ExitCodes.Ok;
        });

        var deleteName = new Argument<string>("name") { Description = "Virtual disk name" };
        var delete = new Command("delete", "Delete a virtual disk and free its space (open NBD connections to it get errors)") { deleteName };
        SetMutatingAction(delete, async (pr, client, ct) =>
        {
            var n = CheckName(pr.GetRequiredValue(deleteName));
            await client.DeleteVirtualDiskAsync(n, ct).ConfigureAwait(false);
            Output.Line($"deleted virtual disk {n}");
            return ExitCodes.Ok;
        });

        vdisk.Subcommands.Add(create);
        vdisk.Subcommands.Add(list);
        vdisk.Subcommands.Add(show);
        vdisk.Subcommands.Add(resize);
        vdisk.Subcommands.Add(delete);
        foreach (var command in ManagementCommands.VdiskSubcommands())
        {
            vdisk.Subcommands.Add(command);
        }

        return vdisk;
    }

    private static Command BuildDisk()
    {
        var disk = new Command("disk", "List and add the physical disks (files) of a host");

        var json = JsonOption();
        var list = new Command("list", "List disks with capacity and state") { json };
        SetApiAction(list, async (pr, client, ct) =>
        {
            var disks = await client.ListDisksAsync(ct).ConfigureAwait(false);
            if (pr.GetValue(json))
            {
                Output.Json(disks, ContractsJsonContext.Indented.IReadOnlyListDiskInfo);
            }
            else
            {
                Output.Disks(disks);
            }

            return ExitCodes.Ok;
        });

        var path = new Argument<string>("path") { Description = "Disk file; relative paths are resolved against the current directory" };
        var size = new Option<string?>("--size") { Description = "Format a new disk of this size; without it an existing disk is adopted" };
        var add = new Command("add", "Add a disk to the host: format a new file or adopt an existing disk") { path, size };
        SetMutatingAction(add, async (pr, client, ct) =>
        {
            var s = pr.GetValue(size);
            if (s is not null)
            {
                CheckSize(s);
            }

            var info = await client.AddDiskAsync(Path.GetFullPath(pr.GetRequiredValue(path)), s, ct).ConfigureAwait(false);
            Output.Line($"added disk {info.Path} ({ByteSize.Format(info.CapacityBytes)}, {info.ComponentCount} virtual disk(s))");
            return ExitCodes.Ok;
        });

        disk.Subcommands.Add(list);
        disk.Subcommands.Add(add);
        disk.Subcommands.Add(MoveCommands.DiskDecommission());
        return disk;
    }

    private static Command BuildStatus()
    {
        var json = JsonOption();
        var status = new Command("status", "Show the host, its disks (capacity) and virtual disks") { json };
        SetApiAction(status, async (pr, client, ct) =>
        {
            var host = await client.GetHostAsync(ct).ConfigureAwait(false);
            var disks = await client.ListDisksAsync(ct).ConfigureAwait(false);
            var vdisks = await client.ListVirtualDisksAsync(ct).ConfigureAwait(false);
            var cluster = vdisks.Any(v => v.Policy is not null) || host.VirtualDiskCount == 0
                ? await client.TryGetClusterAsync(ct).ConfigureAwait(false)
                : null;
            var info = new StatusInfo { Host = host, Disks = disks, VirtualDisks = vdisks, Cluster = cluster };
            if (pr.GetValue(json))
            {
                Output.Json(info, ContractsJsonContext.Indented.StatusInfo);
            }
            else if (cluster is not null)
            {
                Output.ClusterStatus(cluster, host);
            }
            else
            {
                Output.Status(info);
            }

            return ExitCodes.Ok;
        });
        return status;
    }

    private static Command BuildPolicy()
    {
        var policy = new Command("policy", "Storage policies (cluster mode): failures to tolerate, stripe width, reservation...");

        var name = new Argument<string>("name") { Description = "Policy name" };
        var ftt = new Option<int>("--ftt") { Description = "Failures to tolerate (0-3)", DefaultValueFactory = _ => 1 };
        var stripe = new Option<int>("--stripe-width") { Description = "Stripes per replica (1-12)", DefaultValueFactory = _ => 1 };
        var reservation = new Option<int>("--reservation") { Description = "Object space reservation, percent (0 thin - 100 thick)", DefaultValueFactory = _ => 0 };
        var noChecksum = new Option<bool>("--no-checksum") { Description = "Disable checksums" };
        var iops = new Option<int>("--iops-limit") { Description = "IOPS limit per virtual disk (0 = unlimited)", DefaultValueFactory = _ => 0 };
        var method = new Option<string>("--method") { Description = "raid1 (mirroring), raid5 or raid6", DefaultValueFactory = _ => "raid1" };
        var create = new Command("create", "Create or replace a policy") { name, ftt, stripe, reservation, noChecksum, iops, method };
        SetMutatingAction(create, async (pr, client, ct) =>
        {
            var n = CheckName(pr.GetRequiredValue(name), "policy");
            var info = await client.PutPolicyAsync(n, new PolicyInfo
            {
                Name = n,
                FailuresToTolerate = pr.GetValue(ftt),
                StripeWidth = pr.GetValue(stripe),
                ObjectSpaceReservationPercent = pr.GetValue(reservation),
                ChecksumEnabled = !pr.GetValue(noChecksum),
                IopsLimit = pr.GetValue(iops),
                Method = pr.GetRequiredValue(method),
            }, ct).ConfigureAwait(false);
            Output.Line($"policy {info.Name}: FTT={info.FailuresToTolerate} {info.Method}, stripe width {info.StripeWidth} (needs {info.RequiredFaultDomains} fault domains)");
            return ExitCodes.Ok;
        });

        var json = JsonOption();
        var list = new Command("list", "List policies") { json };
        SetApiAction(list, async (pr, client, ct) =>
        {
            var policies = await client.ListPoliciesAsync(ct).ConfigureAwait(false);
            if (pr.GetValue(json))
            {
                Output.Json(policies, ContractsJsonContext.Indented.IReadOnlyListPolicyInfo);
            }
            else
            {
                Output.Policies(policies);
            }

            return ExitCodes.Ok;
        });

        var deleteName = new Argument<string>("name") { Description = "Policy name" };
        var delete = new Command("delete", "Delete a policy no virtual disk uses") { deleteName };
        SetMutatingAction(delete, async (pr, client, ct) =>
        {
            var n = CheckName(pr.GetRequiredValue(deleteName), "policy");
            await client.DeletePolicyAsync(n, ct).ConfigureAwait(false);
            Output.Line($"deleted policy {n}");
            return ExitCodes.Ok;
        });

        policy.Subcommands.Add(create);
        policy.Subcommands.Add(list);
        policy.Subcommands.Add(delete);
        foreach (var command in ManagementCommands.PolicySubcommands())
        {
            policy.Subcommands.Add(command);
        }

        return policy;
    }

    /// <summary><c>converge host list</c>: the hosts of the cluster.</summary>
    internal static Command BuildHostList()
    {
        var json = JsonOption();
        var list = new Command("list", "List the hosts of the cluster (cluster mode)") { json };
        SetApiAction(list, async (pr, client, ct) =>
        {
            var hosts = await client.ListHostsAsync(ct).ConfigureAwait(false);
            if (pr.GetValue(json))
            {
                Output.Json(hosts, ContractsJsonContext.Indented.IReadOnlyListClusterHostInfo);
            }
            else
            {
                Output.Hosts(hosts);
            }

            return ExitCodes.Ok;
        });
        return list;
    }

    internal static Option<bool> JsonOption() => new("--json") { Description = "Print JSON (the API's DTOs) instead of tables" };

    /// <summary>Runs <paramref name="body"/> against the API chosen by <c>--api</c>, mapping failures to exit codes.</summary>
    internal static void SetApiAction(Command command, Func<ParseResult, ConvergeApiClient, CancellationToken, Task<int>> body) =>
        SetApiAction(command, body, mutating: false);

    /// <summary>Like <see cref="SetApiAction(Command, Func{ParseResult, ConvergeApiClient, CancellationToken, Task{int}})"/>, with the admin token.</summary>
    internal static void SetMutatingAction(Command command, Func<ParseResult, ConvergeApiClient, CancellationToken, Task<int>> body) =>
        SetApiAction(command, body, mutating: true);

    private static void SetApiAction(Command command, Func<ParseResult, ConvergeApiClient, CancellationToken, Task<int>> body, bool mutating) =>
        command.SetAction((pr, ct) => Guarded.RunAsync(async () =>
        {
            var api = ResolveApi(pr.GetValue(ApiOption));
            using var http = NewHttpClient(api, pr.GetValue(CaOption));
            try
            {
                var client = new ConvergeApiClient(http);

                // Reads need a token only beyond loopback; there the admin token file is the fallback, as for changes.
                client.Token = mutating || !Tokens.IsLoopback(api)
                    ? await Tokens.ResolveAsync(pr.GetValue(TokenOption), api, client, ct).ConfigureAwait(false)
                    : Tokens.FromOptionOrEnvironment(pr.GetValue(TokenOption));

                return await body(pr, client, ct).ConfigureAwait(false);
            }
            catch (HttpRequestException e) when (e.InnerException is System.Security.Authentication.AuthenticationException tls)
            {
                throw new CliFailureException($"{api}: the TLS handshake failed ({tls.Message}); is the host's certificate signed by the CA given with --ca or CONVERGE_CA?");
            }
            catch (HttpRequestException e)
            {
                throw new UnreachableException(api, e.Message);
            }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new UnreachableException(api, $"no answer within {http.Timeout.TotalSeconds:0} s");
            }
        }));

    /// <summary>A client of <paramref name="api"/>; an https:// API may be signed by the CA in <paramref name="caFile"/> (else <c>$CONVERGE_CA</c>).</summary>
    internal static HttpClient NewHttpClient(Uri api, string? caFile = null)
    {
        caFile ??= Environment.GetEnvironmentVariable("CONVERGE_CA") is { Length: > 0 } fromEnvironment ? fromEnvironment : null;
        var handler = new SocketsHttpHandler();
        if (caFile is not null)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = TrustedCa.Validator(caFile);
        }

        return new HttpClient(handler) { BaseAddress = api, Timeout = TimeSpan.FromSeconds(60) };
    }

    /// <summary><c>--api</c>, else <c>$CONVERGE_API</c>, else the first host of <c>./.converge/cluster.json</c>, else the default.</summary>
    internal static Uri ResolveApi(string? option)
    {
        var text = option ?? Environment.GetEnvironmentVariable("CONVERGE_API");
        if (string.IsNullOrWhiteSpace(text))
        {
            text = ClusterCommands.TryLoadCluster(Path.GetFullPath(ClusterCommands.DefaultDataDirectory))?.Hosts.FirstOrDefault()?.Api ?? DefaultApi;
        }

        if (!text.Contains("://", StringComparison.Ordinal))
        {
            text = "http://" + text;
        }

        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--api '{text}' is not an http:// or https:// URL such as {DefaultApi}");
        }

        return uri;
    }

    internal static string CheckName(string name, string what = "virtual disk") =>
        NameRules.IsValid(name, out var error) ? name : throw new UsageException($"{what} {error}");

    internal static long CheckSize(string text, string what = "--size")
    {
        if (!ByteSize.TryParse(text, out var bytes, out var error))
        {
            throw new UsageException($"{what}: {error}");
        }

        if (bytes <= 0)
        {
            throw new UsageException($"{what} '{text}' must be larger than zero");
        }

        if (bytes % BlockGeometry.BlockSize != 0)
        {
            throw new UsageException($"{what} '{text}' ({bytes} bytes) is not a multiple of {BlockGeometry.BlockSize} bytes");
        }

        return bytes;
    }
}

/// <summary>The host API did not answer (exit code 3).</summary>
internal sealed class UnreachableException(Uri api, string reason)
    : Exception($"cannot reach the Converge host API at {api}: {reason}. Is a host running? Start one with 'converge up', or point --api / CONVERGE_API at it.");

/// <summary>Maps exceptions to the CLI's exit codes and messages on stderr.</summary>
internal static class Guarded
{
    public static async Task<int> RunAsync(Func<Task<int>> body)
    {
        try
        {
            return await body().ConfigureAwait(false);
        }
        catch (UsageException e)
        {
            Output.Error(e.Message);
            return ExitCodes.Usage;
        }
        catch (ConvergeApiException e)
        {
            Output.Error(e.Detail);
            return ExitCodes.Failed;
        }
        catch (Exception e) when (e is CliFailureException or Host.HostStartException)
        {
            Output.Error(e.Message);
            return ExitCodes.Failed;
        }
        catch (UnreachableException e)
        {
            Output.Error(e.Message);
            return ExitCodes.Unreachable;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            Output.Error(e.Message);
            return ExitCodes.Failed;
        }
    }
}
