using System.CommandLine;
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

        var run = new Command("run", "Run the host daemon in the foreground (logs to stdout; SIGTERM/SIGINT stop it cleanly)")
        {
            data, disks, name, nbd, api,
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
                };
                options.Validate();
            }
            catch (HostOptionsException e)
            {
                throw new UsageException(e.Message);
            }

            return await ConvergeHost.RunAsync(options, ct).ConfigureAwait(false);
        }));

        var host = new Command("host", "The host daemon");
        host.Subcommands.Add(run);
        return host;
    }
}
