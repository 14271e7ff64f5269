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
        AnsiConsole.Write(grid);
    }

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
