using System.CommandLine;
using Converge.Management.Contracts;
using Spectre.Console;

namespace Converge.Cli;

/// <summary>
/// The operator commands beyond create/list/delete: maintenance, policy changes, layouts, compliance, fault domains,
/// health checks, events, resync progress, and where the metrics and the web UI are.
/// </summary>
internal static class ManagementCommands
{
    private static readonly string[] Modes = ["ensure-accessibility", "full-data-migration", "no-data-migration"];

    public static IEnumerable<Command> Build() =>
        [BuildHealth(), BuildEvents(), BuildResync(), BuildCompliance(), BuildFaultDomains(), BuildMetrics(), BuildUi()];

    /// <summary><c>converge host show NAME</c>, <c>converge host maintenance enter|exit NAME</c>.</summary>
    public static IEnumerable<Command> HostSubcommands()
    {
        var showName = new Argument<string>("name") { Description = "Host name or id" };
        var showJson = CliCommands.JsonOption();
        var show = new Command("show", "Show one host of the cluster") { showName, showJson };
        CliCommands.SetApiAction(show, async (pr, client, ct) =>
        {
            var host = await client.GetClusterHostAsync(pr.GetRequiredValue(showName), ct).ConfigureAwait(false);
            Print(pr.GetValue(showJson), host, ContractsJsonContext.Indented.ClusterHostInfo, () => Output.Hosts([host]));
            return ExitCodes.Ok;
        });

        var maintenance = new Command("maintenance", "Enter or exit maintenance mode (no new components are placed on a host in maintenance)");
        var enterName = new Argument<string>("name") { Description = "Host name or id" };
        var mode = new Option<string>("--mode")
        {
            Description = "ensure-accessibility (refused if a virtual disk would be inaccessible without the host), full-data-migration or no-data-migration",
            DefaultValueFactory = _ => Modes[0],
        };
        var enterJson = CliCommands.JsonOption();
        var enter = new Command("enter", "Put a host into maintenance mode") { enterName, mode, enterJson };
        CliCommands.SetMutatingAction(enter, async (pr, client, ct) =>
        {
            var m = pr.GetRequiredValue(mode);
            if (!Modes.Contains(m))
            {
                throw new UsageException($"--mode {m}: give one of {string.Join(", ", Modes)}");
            }

            var host = await client.EnterMaintenanceAsync(pr.GetRequiredValue(enterName), m, ct).ConfigureAwait(false);
            Print(pr.GetValue(enterJson), host, ContractsJsonContext.Indented.ClusterHostInfo, () =>
                Output.Line($"host {host.Name} is in maintenance ({host.MaintenanceMode}); no new components are placed on it" +
                            (host.MaintenanceMode == "full-data-migration" ? ", and its components move to other hosts (make-before-break)." : ".")));
            return ExitCodes.Ok;
        });

        var exitName = new Argument<string>("name") { Description = "Host name or id" };
        var exitJson = CliCommands.JsonOption();
        var exit = new Command("exit", "Take a host out of maintenance mode") { exitName, exitJson };
        CliCommands.SetMutatingAction(exit, async (pr, client, ct) =>
        {
            var host = await client.ExitMaintenanceAsync(pr.GetRequiredValue(exitName), ct).ConfigureAwait(false);
            Print(pr.GetValue(exitJson), host, ContractsJsonContext.Indented.ClusterHostInfo, () => Output.Line($"host {host.Name} is {host.State} again"));
            return ExitCodes.Ok;
        });
        maintenance.Subcommands.Add(enter);
        maintenance.Subcommands.Add(exit);
        return [show, maintenance, MoveCommands.HostDecommission()];
    }

    /// <summary><c>converge vdisk set-policy NAME --policy P</c>, <c>converge vdisk layout NAME</c>.</summary>
    public static IEnumerable<Command> VdiskSubcommands()
    {
        var name = new Argument<string>("name") { Description = "Virtual disk name" };
        var policy = new Option<string>("--policy") { Description = "The new policy (same failures to tolerate and stripe width; re-layout is not built)", Required = true };
        var json = CliCommands.JsonOption();
        var setPolicy = new Command("set-policy", "Point a virtual disk at another storage policy") { name, policy, json };
        CliCommands.SetMutatingAction(setPolicy, async (pr, client, ct) =>
        {
            var n = CliCommands.CheckName(pr.GetRequiredValue(name));
            var p = CliCommands.CheckName(pr.GetRequiredValue(policy), "policy");
            var info = await client.SetVirtualDiskPolicyAsync(n, p, ct).ConfigureAwait(false);
            Print(pr.GetValue(json), info, ContractsJsonContext.Indented.VirtualDiskInfo, () => Output.Line($"virtual disk {info.Name} follows policy {info.Policy} ({info.Compliance})"));
            return ExitCodes.Ok;
        });

        var layoutName = new Argument<string>("name") { Description = "Virtual disk name" };
        var layoutJson = CliCommands.JsonOption();
        var layout = new Command("layout", "Show where each component of a virtual disk is and its state") { layoutName, layoutJson };
        CliCommands.SetApiAction(layout, async (pr, client, ct) =>
        {
            var n = CliCommands.CheckName(pr.GetRequiredValue(layoutName));
            var components = await client.GetLayoutAsync(n, ct).ConfigureAwait(false);
            Print(pr.GetValue(layoutJson), components, ContractsJsonContext.Indented.IReadOnlyListComponentInfo, () => Output.Layout(components));
            return ExitCodes.Ok;
        });
        return [setPolicy, layout];
    }

    /// <summary><c>converge policy update NAME [--ftt N] ...</c> (only the given rules change) and <c>policy show NAME</c>.</summary>
    public static IEnumerable<Command> PolicySubcommands()
    {
        var name = new Argument<string>("name") { Description = "Policy name" };
        var ftt = new Option<int?>("--ftt") { Description = "Failures to tolerate (0-3)" };
        var stripe = new Option<int?>("--stripe-width") { Description = "Stripes per replica (1-12)" };
        var reservation = new Option<int?>("--reservation") { Description = "Object space reservation, percent" };
        var checksum = new Option<bool?>("--checksum") { Description = "true or false" };
        var iops = new Option<int?>("--iops-limit") { Description = "IOPS limit per virtual disk (0 = unlimited)" };
        var method = new Option<string?>("--method") { Description = "raid1, raid5 or raid6" };
        var json = CliCommands.JsonOption();
        var update = new Command("update", "Change some rules of an existing policy (the others stay)") { name, ftt, stripe, reservation, checksum, iops, method, json };
        CliCommands.SetMutatingAction(update, async (pr, client, ct) =>
        {
            var n = CliCommands.CheckName(pr.GetRequiredValue(name), "policy");
            var current = await client.GetPolicyAsync(n, ct).ConfigureAwait(false);
            var changed = current with
            {
                FailuresToTolerate = pr.GetValue(ftt) ?? current.FailuresToTolerate,
                StripeWidth = pr.GetValue(stripe) ?? current.StripeWidth,
                ObjectSpaceReservationPercent = pr.GetValue(reservation) ?? current.ObjectSpaceReservationPercent,
                ChecksumEnabled = pr.GetValue(checksum) ?? current.ChecksumEnabled,
                IopsLimit = pr.GetValue(iops) ?? current.IopsLimit,
                Method = pr.GetValue(method) ?? current.Method,
            };
            var info = await client.PutPolicyAsync(n, changed, ct).ConfigureAwait(false);
            Print(pr.GetValue(json), info, ContractsJsonContext.Indented.PolicyInfo, () => Output.Policies([info]));
            return ExitCodes.Ok;
        });

        var showName = new Argument<string>("name") { Description = "Policy name" };
        var showJson = CliCommands.JsonOption();
        var show = new Command("show", "Show one policy") { showName, showJson };
        CliCommands.SetApiAction(show, async (pr, client, ct) =>
        {
            var info = await client.GetPolicyAsync(CliCommands.CheckName(pr.GetRequiredValue(showName), "policy"), ct).ConfigureAwait(false);
            Print(pr.GetValue(showJson), info, ContractsJsonContext.Indented.PolicyInfo, () => Output.Policies([info]));
            return ExitCodes.Ok;
        });
        return [update, show];
    }

    private static Command BuildHealth()
    {
        var json = CliCommands.JsonOption();
        var health = new Command("health", $"Run the health checks (exit {ExitCodes.Ok} ok, {ExitCodes.HealthWarning} warnings, {ExitCodes.HealthError} errors)") { json };
        CliCommands.SetApiAction(health, async (pr, client, ct) =>
        {
            var report = await client.GetHealthChecksAsync(ct).ConfigureAwait(false);
            Print(pr.GetValue(json), report, ContractsJsonContext.Indented.HealthReport, () => Output.Health(report));
            return report.Status switch
            {
                "error" => ExitCodes.HealthError,
                "warning" => ExitCodes.HealthWarning,
                _ => ExitCodes.Ok,
            };
        });
        return health;
    }

    private static Command BuildEvents()
    {
        var json = CliCommands.JsonOption();
        var limit = new Option<int>("--limit") { Description = "How many of the newest events (1-1000)", DefaultValueFactory = _ => 50 };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new events until interrupted" };
        var events = new Command("events", "Cluster events derived from metadata changes (newest last)") { json, limit, follow };
        CliCommands.SetApiAction(events, async (pr, client, ct) =>
        {
            var n = pr.GetValue(limit);
            if (n is < 1 or > 1000)
            {
                throw new UsageException($"--limit {n}: give 1 to 1000");
            }

            var list = await client.ListEventsAsync(limit: n, cancellationToken: ct).ConfigureAwait(false);
            Print(pr.GetValue(json), list, ContractsJsonContext.Indented.IReadOnlyListEventInfo, () => Output.Events(list, header: true));
            if (!pr.GetValue(follow))
            {
                return ExitCodes.Ok;
            }

            var after = list.Count == 0 ? 0 : list[^1].Sequence;
            try
            {
                while (true)
                {
                    await Task.Delay(1000, ct).ConfigureAwait(false);
                    var more = await client.ListEventsAsync(after, 1000, ct).ConfigureAwait(false);
                    if (more.Count > 0)
                    {
                        after = more[^1].Sequence;
                        Print(pr.GetValue(json), more, ContractsJsonContext.Default.IReadOnlyListEventInfo, () => Output.Events(more, header: false));
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return ExitCodes.Ok;
            }
        });
        return events;
    }

    private static Command BuildResync()
    {
        var json = CliCommands.JsonOption();
        var follow = new Option<bool>("--follow", "-f") { Description = "Show progress bars and wait until every copy has finished" };
        var resync = new Command("resync", "Resyncs, rebuilds and repairs running in the cluster, with progress") { json, follow };
        CliCommands.SetApiAction(resync, async (pr, client, ct) =>
        {
            var report = await client.GetResyncAsync(ct).ConfigureAwait(false);
            if (!pr.GetValue(follow) || report.Copies.Count == 0)
            {
                Print(pr.GetValue(json), report, ContractsJsonContext.Indented.ResyncReport, () => Output.Resync(report));
                return ExitCodes.Ok;
            }

            if (pr.GetValue(json))
            {
                // Scripts: one JSON document per second until the backlog is empty.
                while (report.Copies.Count > 0)
                {
                    Output.Json(report, ContractsJsonContext.Default.ResyncReport);
                    await Task.Delay(1000, ct).ConfigureAwait(false);
                    report = await client.GetResyncAsync(ct).ConfigureAwait(false);
                }

                Output.Json(report, ContractsJsonContext.Default.ResyncReport);
                return ExitCodes.Ok;
            }

            await AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
                .StartAsync(async progress =>
                {
                    var tasks = new Dictionary<string, ProgressTask>(StringComparer.Ordinal);
                    while (true)
                    {
                        foreach (var copy in report.Copies)
                        {
                            var key = copy.VirtualDiskId + "/" + copy.ComponentId + "/" + copy.Kind;
                            if (!tasks.TryGetValue(key, out var task))
                            {
                                task = tasks[key] = progress.AddTask(Markup.Escape($"{copy.Kind} {copy.VirtualDisk} → {copy.TargetHost ?? copy.TargetHostId}"), maxValue: Math.Max(1, copy.TotalBytes));
                            }

                            task.MaxValue = Math.Max(1, copy.TotalBytes);
                            task.Value = copy.DoneBytes;
                        }

                        foreach (var (key, task) in tasks)
                        {
                            if (!report.Copies.Any(c => c.VirtualDiskId + "/" + c.ComponentId + "/" + c.Kind == key))
                            {
                                task.Value = task.MaxValue;
                                task.StopTask();
                            }
                        }

                        if (report.Copies.Count == 0)
                        {
                            return;
                        }

                        await Task.Delay(1000, ct).ConfigureAwait(false);
                        report = await client.GetResyncAsync(ct).ConfigureAwait(false);
                    }
                }).ConfigureAwait(false);
            Output.Line("every resync has finished");
            return ExitCodes.Ok;
        });
        return resync;
    }

    private static Command BuildCompliance()
    {
        var json = CliCommands.JsonOption();
        var compliance = new Command("compliance", "Whether each virtual disk's layout and component states satisfy its policy") { json };
        CliCommands.SetApiAction(compliance, async (pr, client, ct) =>
        {
            var list = await client.GetComplianceAsync(ct).ConfigureAwait(false);
            Print(pr.GetValue(json), list, ContractsJsonContext.Indented.IReadOnlyListComplianceInfo, () => Output.Compliance(list));
            return ExitCodes.Ok;
        });
        return compliance;
    }

    private static Command BuildFaultDomains()
    {
        var json = CliCommands.JsonOption();
        var command = new Command("fault-domains", "Hosts grouped by fault domain (replicas and witnesses go to distinct domains)") { json };
        CliCommands.SetApiAction(command, async (pr, client, ct) =>
        {
            var list = await client.ListFaultDomainsAsync(ct).ConfigureAwait(false);
            Print(pr.GetValue(json), list, ContractsJsonContext.Indented.IReadOnlyListFaultDomainInfo, () =>
            {
                var table = new Table().Border(TableBorder.Rounded).AddColumns("FAULT DOMAIN", "HOSTS", "SET BY");
                foreach (var d in list)
                {
                    table.AddRow(Markup.Escape(d.Name), Markup.Escape(string.Join(", ", d.Hosts)), d.Explicit ? "--fault-domain" : "host (default)");
                }

                AnsiConsole.Write(table);
            });
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command BuildMetrics()
    {
        var raw = new Option<bool>("--raw") { Description = "Print the Prometheus text of the host asked instead of the endpoints" };
        var metrics = new Command("metrics", "Where each host's Prometheus endpoint is (/metrics)") { raw };
        CliCommands.SetApiAction(metrics, async (pr, client, ct) =>
        {
            if (pr.GetValue(raw))
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, "/metrics");
                using var response = await client.SendRawAsync(request, ct).ConfigureAwait(false);
                Console.Out.Write(await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false));
                return response.IsSuccessStatusCode ? ExitCodes.Ok : ExitCodes.Failed;
            }

            foreach (var url in await ApiUrlsAsync(client, ct).ConfigureAwait(false))
            {
                Output.Line(url + "/metrics");
            }

            return ExitCodes.Ok;
        });
        return metrics;
    }

    private static Command BuildUi()
    {
        var ui = new Command("ui", "Where the web UI is (every host serves it)");
        CliCommands.SetApiAction(ui, async (pr, client, ct) =>
        {
            foreach (var url in await ApiUrlsAsync(client, ct).ConfigureAwait(false))
            {
                Output.Line(url + "/");
            }

            return ExitCodes.Ok;
        });
        return ui;
    }

    private static async Task<IReadOnlyList<string>> ApiUrlsAsync(ConvergeApiClient client, CancellationToken ct)
    {
        var host = await client.GetHostAsync(ct).ConfigureAwait(false);
        var cluster = await client.TryGetClusterAsync(ct).ConfigureAwait(false);
        return cluster is null ? [host.ApiEndpoint.TrimEnd('/')] : [.. cluster.Hosts.Select(h => h.Api.TrimEnd('/'))];
    }

    private static void Print<T>(bool json, T value, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> typeInfo, Action table)
    {
        if (json)
        {
            Output.Json(value, typeInfo);
        }
        else
        {
            table();
        }
    }
}
