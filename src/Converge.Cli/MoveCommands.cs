using System.CommandLine;
using System.Globalization;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary>
/// Commands that move data: <c>converge host decommission NAME</c>, <c>converge disk decommission ID</c> and
/// <c>converge cluster rebalance</c>. Every move is make-before-break: the old copy serves until the new one is complete.
/// </summary>
internal static class MoveCommands
{
    public static Command HostDecommission()
    {
        var name = new Argument<string>("name") { Description = "Host name or id" };
        var wait = WaitOption();
        var json = CliCommands.JsonOption();
        var command = new Command(
            "decommission",
            "Empty a host for good: every component moves elsewhere (make-before-break), then the host is decommissioned. " +
            "Refused when the components would have nowhere to go, or for a Raft voter")
        { name, wait, json };
        CliCommands.SetMutatingAction(command, async (pr, client, ct) =>
        {
            var host = pr.GetRequiredValue(name);
            var info = await client.DecommissionHostAsync(host, ct).ConfigureAwait(false);
            return await FollowAsync(info, pr.GetValue(wait), pr.GetValue(json), c => client.GetHostDecommissionAsync(host, c), ct).ConfigureAwait(false);
        });
        return command;
    }

    public static Command DiskDecommission()
    {
        var id = new Argument<string>("id") { Description = "Disk id (see 'converge status'), or a unique prefix of at least 8 characters" };
        var wait = WaitOption();
        var json = CliCommands.JsonOption();
        var command = new Command(
            "decommission",
            "Empty a disk of the cluster: every component on it moves elsewhere (make-before-break), then the disk is removed")
        { id, wait, json };
        CliCommands.SetMutatingAction(command, async (pr, client, ct) =>
        {
            var disk = pr.GetRequiredValue(id);
            var info = await client.DecommissionDiskAsync(disk, ct).ConfigureAwait(false);
            return await FollowAsync(info, pr.GetValue(wait), pr.GetValue(json), c => client.GetDiskDecommissionAsync(info.Target, c), ct).ConfigureAwait(false);
        });
        return command;
    }

    /// <summary><c>converge cluster rebalance [--dry-run] [--threshold N] [--wait] [--stop]</c>.</summary>
    public static Command BuildCluster()
    {
        var cluster = new Command("cluster", "Cluster-wide operations (cluster mode)");
        var dryRun = new Option<bool>("--dry-run") { Description = "Only show the planned moves; change nothing" };
        var threshold = new Option<double?>("--threshold")
        {
            Description = "Balanced when the fullest and emptiest disks differ by at most this many percentage points (default 10)",
        };
        var stop = new Option<bool>("--stop") { Description = "Stop a running rebalance (a move under way finishes)" };
        var status = new Option<bool>("--status") { Description = "Show the rebalance state and the plan from here; change nothing" };
        var wait = WaitOption();
        var json = CliCommands.JsonOption();
        var rebalance = new Command(
            "rebalance",
            "Move components from the fullest disks to the emptiest (e.g. onto new hosts and disks), one at a time, make-before-break")
        { dryRun, threshold, stop, status, wait, json };
        CliCommands.SetMutatingAction(rebalance, async (pr, client, ct) =>
        {
            if (pr.GetValue(threshold) is { } t && (double.IsNaN(t) || t <= 0 || t > 100))
            {
                throw new UsageException($"--threshold {t.ToString(CultureInfo.InvariantCulture)}: give a number above 0 and at most 100");
            }

            if (new[] { pr.GetValue(dryRun), pr.GetValue(stop), pr.GetValue(status) }.Count(b => b) > 1)
            {
                throw new UsageException("give at most one of --dry-run, --stop, --status");
            }

            var asJson = pr.GetValue(json);
            var info = pr.GetValue(status) ? await client.GetRebalanceAsync(ct).ConfigureAwait(false)
                : pr.GetValue(stop) ? await client.StopRebalanceAsync(ct).ConfigureAwait(false)
                : await client.RebalanceAsync(pr.GetValue(dryRun), pr.GetValue(threshold), ct).ConfigureAwait(false);
            Print(info, asJson);
            if (!pr.GetValue(wait) || info.State != "running")
            {
                return ExitCodes.Ok;
            }

            var left = -1;
            while (info.State == "running")
            {
                await Task.Delay(1000, ct).ConfigureAwait(false);
                info = await client.GetRebalanceAsync(ct).ConfigureAwait(false);
                if (asJson)
                {
                    Output.Json(info, ContractsJsonContext.Default.RebalanceInfo);
                }
                else if (info.Moves.Count != left)
                {
                    left = info.Moves.Count;
                    Output.Line(string.Create(CultureInfo.InvariantCulture, $"spread {info.SpreadPercent:0.#} points, {info.MovesInFlight} move(s) under way, {left} more planned"));
                }
            }

            if (!asJson)
            {
                Output.Line(string.Create(CultureInfo.InvariantCulture, $"rebalance {info.State}: spread {info.SpreadPercent:0.#} percentage points"));
            }

            return ExitCodes.Ok;
        });
        cluster.Subcommands.Add(rebalance);
        cluster.Subcommands.Add(IdentityCommands.JoinToken());
        return cluster;
    }

    private static Option<bool> WaitOption() => new("--wait") { Description = "Keep showing progress until it is done" };

    private static async Task<int> FollowAsync(
        DecommissionInfo info, bool wait, bool json, Func<CancellationToken, Task<DecommissionInfo>> poll, CancellationToken ct)
    {
        Print(info, json);
        var left = info.ComponentsLeft;
        while (wait && !info.Done)
        {
            await Task.Delay(1000, ct).ConfigureAwait(false);
            info = await poll(ct).ConfigureAwait(false);
            if (json)
            {
                Output.Json(info, ContractsJsonContext.Default.DecommissionInfo);
            }
            else if (info.ComponentsLeft != left || info.Done)
            {
                left = info.ComponentsLeft;
                Print(info, json: false);
            }
        }

        return ExitCodes.Ok;
    }

    private static void Print(DecommissionInfo info, bool json)
    {
        if (json)
        {
            Output.Json(info, ContractsJsonContext.Indented.DecommissionInfo);
            return;
        }

        Output.Line(info.Done
            ? $"{info.Kind} {info.Target} is {info.State}: no component is left on it"
            : string.Create(CultureInfo.InvariantCulture, $"{info.Kind} {info.Target} is {info.State}: {info.ComponentsLeft} component(s) left, {info.Moving} moving now"));
    }

    private static void Print(RebalanceInfo info, bool json)
    {
        if (json)
        {
            Output.Json(info, ContractsJsonContext.Indented.RebalanceInfo);
            return;
        }

        Output.Line(string.Create(
            CultureInfo.InvariantCulture,
            $"rebalance {info.State}: spread {info.SpreadPercent:0.#} percentage points (threshold {info.ThresholdPercent:0.#}), " +
            $"{info.PlannedSpreadPercent:0.#} after the {info.Moves.Count} planned move(s); {info.MovesInFlight} move(s) under way"));
        foreach (var move in info.Moves)
        {
            Output.Line(string.Create(CultureInfo.InvariantCulture, $"  {move.VirtualDisk}: {move.ComponentId} {move.FromHost}:{move.FromDisk} -> {move.ToHost}:{move.ToDisk} ({move.Bytes} bytes)"));
        }
    }
}
