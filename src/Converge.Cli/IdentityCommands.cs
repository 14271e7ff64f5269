using System.CommandLine;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary>
/// Cluster identity: <c>converge cluster join-token create [--ttl D]</c> and <c>converge host revoke NAME</c>
/// (docs/security/identity.md).
/// </summary>
internal static class IdentityCommands
{
    public static Command JoinToken()
    {
        var ttl = new Option<string?>("--ttl") { Description = "How long the token is valid (e.g. 10m, 1h; default 1h, at most 168h)" };
        var json = CliCommands.JsonOption();
        var create = new Command(
            "create",
            "Make a single-use token for one host to join: converge host run ... --join https://MEMBER:RPCPORT --join-token TOKEN")
        { ttl, json };
        CliCommands.SetMutatingAction(create, async (pr, client, ct) =>
        {
            var info = await client.CreateJoinTokenAsync(pr.GetValue(ttl), ct).ConfigureAwait(false);
            if (pr.GetValue(json))
            {
                Output.Json(info, ContractsJsonContext.Indented.JoinTokenInfo);
            }
            else
            {
                Output.Line(info.Token);
            }

            return ExitCodes.Ok;
        });
        var command = new Command("join-token", "Join tokens: a host joins the cluster only with one (single use, expiring)");
        command.Subcommands.Add(create);
        return command;
    }

    public static Command HostRevoke()
    {
        var name = new Argument<string>("name") { Description = "Host name" };
        var json = CliCommands.JsonOption();
        var command = new Command(
            "revoke",
            "Revoke a host's certificates: the other hosts refuse its connections from now on (it must join again with a new token)")
        { name, json };
        CliCommands.SetMutatingAction(command, async (pr, client, ct) =>
        {
            var info = await client.RevokeHostAsync(pr.GetRequiredValue(name), ct).ConfigureAwait(false);
            if (pr.GetValue(json))
            {
                Output.Json(info, ContractsJsonContext.Indented.RevokeHostInfo);
            }
            else
            {
                Output.Line($"revoked {info.RevokedSerials.Count} certificate(s) of host {info.Host}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }
}
