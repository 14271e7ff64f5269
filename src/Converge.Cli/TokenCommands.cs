using System.CommandLine;
using Converge.Management.Contracts;

namespace Converge.Cli;

/// <summary><c>converge token list|create|revoke|rotate-admin</c>: the management API's tokens (docs/security/api.md).</summary>
internal static class TokenCommands
{
    private static readonly string[] Roles = ["admin", "read-only"];

    public static Command Build()
    {
        var token = new Command("token", "List, create and revoke API tokens (admin and read-only), and rotate the admin token");

        var listJson = CliCommands.JsonOption();
        var list = new Command("list", "List the API tokens: id, name, role (never their secrets)") { listJson };
        CliCommands.SetApiAction(list, async (pr, client, ct) =>
        {
            var tokens = await client.ListTokensAsync(ct).ConfigureAwait(false);
            if (pr.GetValue(listJson))
            {
                Output.Json(tokens, ContractsJsonContext.Indented.IReadOnlyListApiTokenInfo);
            }
            else
            {
                Output.ApiTokens(tokens);
            }

            return ExitCodes.Ok;
        });

        var name = new Argument<string>("name") { Description = "Token name (lower-case letters, digits, '.', '_', '-'), e.g. monitoring" };
        var role = new Option<string>("--role") { Description = "admin (may change everything) or read-only (may only read)", Required = true };
        role.AcceptOnlyFromAmong(Roles);
        var createJson = CliCommands.JsonOption();
        var create = new Command("create", "Create a token and print its secret: it is shown this once") { name, role, createJson };
        CliCommands.SetMutatingAction(create, async (pr, client, ct) =>
        {
            var n = CliCommands.CheckName(pr.GetRequiredValue(name), "token");
            var created = await client.CreateTokenAsync(n, pr.GetRequiredValue(role), ct).ConfigureAwait(false);
            if (pr.GetValue(createJson))
            {
                Output.Json(created, ContractsJsonContext.Indented.CreatedApiTokenInfo);
            }
            else
            {
                Output.Line($"created {created.Info.Role} token {created.Info.Name} (id {created.Info.Id}); its secret, shown only now:");
                Output.Line(created.Token);
            }

            return ExitCodes.Ok;
        });

        var id = new Argument<string>("id") { Description = "Token id, as 'converge token list' shows it" };
        var revoke = new Command("revoke", "Revoke a token: it stops working at once") { id };
        CliCommands.SetMutatingAction(revoke, async (pr, client, ct) =>
        {
            var i = pr.GetRequiredValue(id).Trim();
            await client.RevokeTokenAsync(i, ct).ConfigureAwait(false);
            Output.Line($"revoked token {i}");
            return ExitCodes.Ok;
        });

        var rotate = new Command(
            "rotate-admin",
            "Replace the admin token used by a new one: the old one stops working; the admin-token file it was read from is rewritten (0600), else the new token is printed");
        CliCommands.SetMutatingAction(rotate, async (pr, client, ct) =>
        {
            var api = CliCommands.ResolveApi(pr.GetValue(CliCommands.ApiOption));
            var (_, file) = await Tokens.ResolveWithSourceAsync(pr.GetValue(CliCommands.TokenOption), api, client, ct).ConfigureAwait(false);
            var rotated = await client.RotateAdminTokenAsync(ct).ConfigureAwait(false);
            if (file is not null)
            {
                try
                {
                    Host.Management.AdminToken.WritePrivate(file, rotated.Token + "\n");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // The old token is gone already: the new one must not be lost with the file.
                    Output.Line(rotated.Token);
                    throw new CliFailureException($"the admin token was rotated (old one {rotated.Revoked} revoked), but {file} could not be rewritten ({e.Message}); the new token is printed above");
                }

                Output.Line($"rotated the admin token {rotated.Info.Name}: {rotated.Revoked} revoked, {rotated.Info.Id} in {file} (mode 0600)");
            }
            else
            {
                Output.Line($"rotated the admin token {rotated.Info.Name}: {rotated.Revoked} revoked; the new token (shown only now; update CONVERGE_TOKEN or --token):");
                Output.Line(rotated.Token);
            }

            return ExitCodes.Ok;
        });

        token.Subcommands.Add(list);
        token.Subcommands.Add(create);
        token.Subcommands.Add(revoke);
        token.Subcommands.Add(rotate);
        return token;
    }
}
