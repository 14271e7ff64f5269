using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Converge.Common;
using Converge.Management.Contracts;
using Spectre.Console;

namespace Converge.Cli;

/// <summary>Tables for people (Spectre.Console), JSON for scripts, errors on stderr.</summary>
internal static class Output
{
    static Output()
    {
        // Spectre assumes 80 columns when stdout is not a terminal; paths and URIs then wrap badly in logs and pipes.
        if (Console.IsOutputRedirected)
        {
            AnsiConsole.Profile.Width = 200;
        }
    }

    public static void Line(string text) => Console.Out.WriteLine(text);

    public static void Error(string message) => Console.Error.WriteLine($"error: {message}");

    public static void Json<T>(T value, JsonTypeInfo<T> typeInfo) => Console.Out.WriteLine(JsonSerializer.Serialize(value, typeInfo));

    public static void VirtualDisks(IReadOnlyList<VirtualDiskInfo> vdisks)
    {
        if (vdisks.Count == 0)
        {
            Line("no virtual disks; create one with: converge vdisk create NAME --size 10GiB");
            return;
        }

        if (vdisks.Any(v => v.Policy is not null))
        {
            ClusterVirtualDisks(vdisks);
            return;
        }

        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("NAME", "SIZE", "USED", "STATE", "DISK", "NBD URI");
        foreach (var v in vdisks)
        {
            table.AddRow(
                Esc(v.Name),
                ByteSize.Format(v.SizeBytes),
                ByteSize.Format(v.UsedBytes),
                v.State == VirtualDiskStates.Online ? "[green]online[/]" : $"[red]{Esc(v.State)}[/]",
                Esc(v.DiskPath),
                Esc(v.NbdUri));
        }

        AnsiConsole.Write(table);
    }

    public static void VirtualDisk(VirtualDiskInfo v)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap()).AddColumn();
        grid.AddRow("name", Esc(v.Name));
        grid.AddRow("id", Esc(v.Id));
        grid.AddRow("size", $"{ByteSize.Format(v.SizeBytes)} ({v.SizeBytes.ToString(CultureInfo.InvariantCulture)} bytes)");
        grid.AddRow("used", ByteSize.Format(v.UsedBytes));
        grid.AddRow("state", v.State == VirtualDiskStates.Online ? "[green]online[/]" : $"[red]{Esc(v.State)}[/]");
        grid.AddRow("disk", $"{Esc(v.DiskPath)} ({Esc(v.DiskId)})");
        grid.AddRow("checksum errors", v.ChecksumErrors.ToString(CultureInfo.InvariantCulture));
        grid.AddRow("nbd uri", Esc(v.NbdUri));
        if (v.Policy is not null)
        {
            grid.AddRow("policy", Esc(v.Policy));
            grid.AddRow("compliance", Compliance(v));
            grid.AddRow("generation", (v.Generation ?? 0).ToString(CultureInfo.InvariantCulture));
            grid.AddRow("coordinator", Esc(v.Coordinator ?? "-"));
        }

        AnsiConsole.Write(grid);
        if (v.Layout is { Count: > 0 } layout)
        {
            var table = new Table().Border(TableBorder.Rounded)
                .AddColumns("COMPONENT", "ROLE", "REPLICA", "STRIPE", "LENGTH", "HOST", "DISK", "VOTES", "STATE");
            foreach (var c in layout)
            {
                var data = c.Role == "data";
                table.AddRow(
                    Esc(c.Id),
                    Esc(c.Role),
                    data ? c.Replica.ToString(CultureInfo.InvariantCulture) : "-",
                    data ? c.Stripe.ToString(CultureInfo.InvariantCulture) : "-",
                    data ? ByteSize.Format(c.Length) : "-",
                    Esc(c.HostName),
                    Esc(c.DiskId),
                    c.Votes.ToString(CultureInfo.InvariantCulture),
                    c.State == "active" ? "[green]active[/]" : $"[red]{Esc(c.State)}[/]");
            }

            AnsiConsole.Write(table);
        }
    }

    public static void ClusterVirtualDisks(IReadOnlyList<VirtualDiskInfo> vdisks)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("NAME", "SIZE", "POLICY", "STATE", "COMPLIANCE", "COMPONENTS", "COORDINATOR", "NBD URI");
        foreach (var v in vdisks)
        {
            var hosts = v.Layout is null ? string.Empty : string.Join(", ", v.Layout.Select(c => c.HostName).Distinct());
            table.AddRow(
                Esc(v.Name),
                ByteSize.Format(v.SizeBytes),
                Esc(v.Policy ?? "-"),
                v.State == VirtualDiskStates.Online ? "[green]online[/]" : $"[red]{Esc(v.State)}[/]",
                Compliance(v),
                $"{(v.Layout?.Count ?? 0).ToString(CultureInfo.InvariantCulture)} on {Esc(hosts)}",
                Esc(v.Coordinator ?? "-"),
                Esc(v.NbdUri));
        }

        AnsiConsole.Write(table);
    }

    public static void ApiTokens(IReadOnlyList<ApiTokenInfo> tokens)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumns("ID", "NAME", "ROLE", "CREATED");
        foreach (var t in tokens)
        {
            table.AddRow(Esc(t.Id), Esc(t.Name), Esc(t.Role), t.CreatedAt.ToString("u", CultureInfo.InvariantCulture));
        }

        AnsiConsole.Write(table);
    }

    public static void Hosts(IReadOnlyList<ClusterHostInfo> hosts)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("NAME", "ROLE", "STATE", "REACHABLE", "FAULT DOMAIN", "DISKS", "API", "NBD", "PEER");
        foreach (var h in hosts)
        {
            table.AddRow(
                Esc(h.Name),
                (h.Voter ? "voter" : "client") + (h.Leader ? " [bold](leader)[/]" : string.Empty),
                Esc(h.State) + (h.MaintenanceMode is null ? string.Empty : $" ({Esc(h.MaintenanceMode)})"),
                h.Reachable ? "[green]yes[/]" : "[red]no[/]",
                Esc(h.FaultDomain ?? "-"),
                h.DiskCount.ToString(CultureInfo.InvariantCulture),
                Esc(h.Api),
                Esc(h.Nbd),
                Esc(h.Peer));
        }

        AnsiConsole.Write(table);
    }

    public static void Policies(IReadOnlyList<PolicyInfo> policies)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("NAME", "FTT", "METHOD", "STRIPE WIDTH", "RESERVATION", "CHECKSUM", "IOPS LIMIT", "FAULT DOMAINS");
        foreach (var p in policies)
        {
            table.AddRow(
                Esc(p.Name ?? "-") + (p.IsDefault ? " (default)" : string.Empty),
                p.FailuresToTolerate.ToString(CultureInfo.InvariantCulture),
                Esc(p.Method),
                p.StripeWidth.ToString(CultureInfo.InvariantCulture),
                p.ObjectSpaceReservationPercent.ToString(CultureInfo.InvariantCulture) + "%",
                p.ChecksumEnabled ? "on" : "off",
                p.IopsLimit == 0 ? "unlimited" : p.IopsLimit.ToString(CultureInfo.InvariantCulture),
                p.RequiredFaultDomains.ToString(CultureInfo.InvariantCulture));
        }

        AnsiConsole.Write(table);
    }

    public static void ClusterStatus(ClusterStatusInfo cluster, HostInfo host)
    {
        var grid = new Grid().AddColumn(new GridColumn().NoWrap()).AddColumn();
        var capacity = cluster.Disks.Sum(d => d.CapacityBytes);
        var used = cluster.Disks.Sum(d => d.UsedBytes);
        grid.AddRow("cluster", $"[bold]{Esc(cluster.Name)}[/] ({Esc(cluster.ClusterId)})");
        grid.AddRow("hosts", $"{cluster.Hosts.Count(h => h.Reachable)} of {cluster.Hosts.Count} reachable; metadata leader {Esc(cluster.Leader ?? "unknown")}");
        grid.AddRow("asked", $"{Esc(host.Name)} at {Esc(host.ApiEndpoint)}");
        grid.AddRow("capacity", $"{Bar(used, capacity)} used of {ByteSize.Format(capacity)} on {cluster.Disks.Count} disk(s); " +
                                $"{ByteSize.Format(cluster.ProvisionedBytes)} provisioned, {ByteSize.Format(cluster.FreeBytes)} free");
        grid.AddRow("default policy", Esc(cluster.DefaultPolicy));
        AnsiConsole.Write(new Panel(grid).Header("Converge cluster").Border(BoxBorder.Rounded));
        Hosts(cluster.Hosts);
        var disks = new Table().Border(TableBorder.Rounded).AddColumns("HOST", "PATH", "STATE", "USED", "CAPACITY", "FREE");
        foreach (var d in cluster.Disks)
        {
            var online = d.State == DiskStates.Online && d.Reachable;
            disks.AddRow(
                Esc(d.HostName),
                Esc(d.Path),
                online ? "[green]online[/]" : $"[red]{Esc(d.Reachable ? d.State : "unreachable")}[/]",
                d.Reachable ? Bar(d.UsedBytes, d.CapacityBytes) : "-",
                ByteSize.Format(d.CapacityBytes),
                d.Reachable ? ByteSize.Format(d.FreeBytes) : "-");
        }

        AnsiConsole.Write(disks);
        if (cluster.VirtualDisks.Count == 0)
        {
            Line("no virtual disks; create one with: converge vdisk create NAME --size 10GiB [--policy NAME]");
        }
        else
        {
            ClusterVirtualDisks(cluster.VirtualDisks);
        }
    }

    private static string Compliance(VirtualDiskInfo v) => v.Compliance switch
    {
        null => "-",
        "compliant" => "[green]compliant[/]",
        _ => $"[red]{Esc(v.Compliance)}[/]" + (v.ComplianceDetail is null ? string.Empty : $" [grey]({Esc(v.ComplianceDetail)})[/]"),
    };

    public static void Disks(IReadOnlyList<DiskInfo> disks)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("PATH", "STATE", "USED", "CAPACITY", "PROVISIONED", "FREE", "VDISKS", "ERRORS");
        foreach (var d in disks)
        {
            var online = d.State == DiskStates.Online;
            table.AddRow(
                Esc(d.Path),
                online ? "[green]online[/]" : $"[red]{Esc(d.State)}[/]" + (d.Error is null ? string.Empty : $"\n[grey]{Esc(d.Error)}[/]"),
                online ? Bar(d.UsedBytes, d.CapacityBytes) : "-",
                online ? ByteSize.Format(d.CapacityBytes) : "-",
                online ? ByteSize.Format(d.ProvisionedBytes) : "-",
                online ? ByteSize.Format(d.FreeBytes) : "-",
                d.ComponentCount.ToString(CultureInfo.InvariantCulture),
                d.ChecksumErrors + d.IoErrors == 0
                    ? "0"
                    : $"[red]{d.ChecksumErrors.ToString(CultureInfo.InvariantCulture)} checksum, {d.IoErrors.ToString(CultureInfo.InvariantCulture)} I/O[/]");
        }

        AnsiConsole.Write(table);
    }

    public static void Status(StatusInfo status)
    {
        var h = status.Host;
        var capacity = status.Disks.Sum(d => d.CapacityBytes);
        var used = status.Disks.Sum(d => d.UsedBytes);
        var provisioned = status.Disks.Sum(d => d.ProvisionedBytes);
        var online = status.Disks.Count(d => d.State == DiskStates.Online);
        var grid = new Grid().AddColumn(new GridColumn().NoWrap()).AddColumn();
        grid.AddRow("host", $"[bold]{Esc(h.Name)}[/] ({Esc(h.Id)}), version {Esc(h.Version)}");
        grid.AddRow("started", h.StartedAt.ToString("u", CultureInfo.InvariantCulture));
        grid.AddRow("api", Esc(h.ApiEndpoint));
        grid.AddRow("nbd", Esc($"nbd://{h.NbdEndpoint}/NAME"));
        grid.AddRow("disks", $"{online} of {status.Disks.Count} online" + (online < status.Disks.Count ? " [red](some disks are not online)[/]" : string.Empty));
        grid.AddRow("capacity", $"{Bar(used, capacity)} used of {ByteSize.Format(capacity)}, {ByteSize.Format(provisioned)} provisioned");
        AnsiConsole.Write(new Panel(grid).Header("Converge").Border(BoxBorder.Rounded));
        Disks(status.Disks);
        VirtualDisks(status.VirtualDisks);
    }

    public static void Layout(IReadOnlyList<ComponentInfo> layout)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumns("COMPONENT", "ROLE", "REPLICA", "STRIPE", "LENGTH", "HOST", "FAULT DOMAIN", "DISK", "VOTES", "STATE");
        foreach (var c in layout)
        {
            var data = c.Role == "data";
            table.AddRow(
                Esc(c.Id),
                Esc(c.Role),
                data ? c.Replica.ToString(CultureInfo.InvariantCulture) : "-",
                data ? c.Stripe.ToString(CultureInfo.InvariantCulture) : "-",
                data ? ByteSize.Format(c.Length) : "-",
                Esc(c.HostName),
                Esc(c.FaultDomain),
                Esc(c.DiskId),
                c.Votes.ToString(CultureInfo.InvariantCulture),
                c.State == "active" ? "[green]active[/]" : $"[red]{Esc(c.State)}[/]");
        }

        AnsiConsole.Write(table);
    }

    public static void Health(HealthReport report)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumns("CHECK", "STATUS", "FINDING", "REMEDY");
        foreach (var c in report.Checks)
        {
            table.AddRow(Esc(c.Title), StatusMarkup(c.Status), Esc(c.Message), Esc(c.Remedy));
        }

        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"overall: {StatusMarkup(report.Status)} (checked by {Esc(report.Host)} at {report.CheckedAt.ToString("u", CultureInfo.InvariantCulture)})");
    }

    public static void Events(IReadOnlyList<EventInfo> events, bool header)
    {
        if (events.Count == 0 && header)
        {
            Line("no events yet");
            return;
        }

        foreach (var e in events)
        {
            AnsiConsole.MarkupLine(
                $"{e.Time.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)} {StatusMarkup(e.Severity == "info" ? "info" : e.Severity),-7} " +
                $"[grey]{Esc(e.Kind)}[/] {Esc(e.Message)}");
        }
    }

    public static void Resync(ResyncReport report)
    {
        if (report.Copies.Count == 0)
        {
            Line("no resync, rebuild or repair is running" +
                 (report.UnreachableHosts.Count > 0 ? $" (hosts that did not answer: {string.Join(", ", report.UnreachableHosts)})" : string.Empty));
            return;
        }

        var table = new Table().Border(TableBorder.Rounded).AddColumns("VIRTUAL DISK", "KIND", "TARGET", "RUN BY", "PROGRESS", "RATE", "ETA");
        foreach (var c in report.Copies)
        {
            table.AddRow(
                Esc(c.VirtualDisk),
                Esc(c.Kind),
                Esc(c.TargetHost ?? c.TargetHostId),
                Esc(c.Host ?? "-"),
                Bar(c.DoneBytes, c.TotalBytes),
                ByteSize.Format((long)c.BytesPerSecond) + "/s",
                c.EtaSeconds is { } eta ? TimeSpan.FromSeconds(Math.Round(eta)).ToString("c", CultureInfo.InvariantCulture) : "-");
        }

        AnsiConsole.Write(table);
        Line($"{ByteSize.Format(report.RemainingBytes)} left of {ByteSize.Format(report.TotalBytes)}");
    }

    public static void Compliance(IReadOnlyList<ComplianceInfo> list)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumns("VIRTUAL DISK", "POLICY", "STATE", "COMPONENTS ACTIVE", "COMPLIANCE");
        foreach (var c in list)
        {
            table.AddRow(
                Esc(c.VirtualDisk),
                Esc(c.Policy),
                c.State == VirtualDiskStates.Online ? "[green]online[/]" : $"[red]{Esc(c.State)}[/]",
                $"{c.ActiveComponents.ToString(CultureInfo.InvariantCulture)}/{c.Components.ToString(CultureInfo.InvariantCulture)}",
                c.Compliance == "compliant" ? "[green]compliant[/]" : $"[red]{Esc(c.Compliance)}[/] [grey]({Esc(c.Detail ?? string.Empty)})[/]");
        }

        AnsiConsole.Write(table);
    }

    private static string StatusMarkup(string status) => status switch
    {
        "ok" => "[green]ok[/]",
        "info" => "[blue]info[/]",
        "warning" => "[yellow]warning[/]",
        _ => $"[red]{Esc(status)}[/]",
    };

    private static string Bar(long used, long capacity)
    {
        const int width = 12;
        var fraction = capacity <= 0 ? 0 : Math.Clamp((double)used / capacity, 0, 1);
        var filled = (int)Math.Round(fraction * width);
        var color = fraction >= 0.9 ? "red" : fraction >= 0.75 ? "yellow" : "green";
        return $"[{color}]{new string('█', filled)}[/][grey]{new string('░', width - filled)}[/] "
            + string.Create(CultureInfo.InvariantCulture, $"{fraction * 100:0}% {ByteSize.Format(used)}");
    }

    private static string Esc(string text) => Markup.Escape(text);
}
