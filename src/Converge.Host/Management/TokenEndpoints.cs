using System.Security.Claims;
using Converge.Management.Contracts;
using Converge.Metadata;

namespace Converge.Host.Management;

/// <summary>
/// <c>/api/v1/tokens</c>: list (ids, names, roles, never hashes), create (the secret shown once), revoke by id, and
/// rotate the admin token the caller used. Changes need an admin token, like every change of the group.
/// </summary>
internal static class TokenEndpoints
{
    public static void Map(RouteGroupBuilder api)
    {
        api.MapGet("/tokens", (ApiTokenStore store) =>
            ManagementApi.Json(store.Tokens.Select(Info).OrderBy(t => t.Name, StringComparer.Ordinal).ToList(), ContractsJsonContext.Default.IReadOnlyListApiTokenInfo));

        api.MapPost("/tokens", async (HttpContext context, ApiTokenStore store, TimeProvider time) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.CreateApiTokenRequest).ConfigureAwait(false);
            if (!Common.NameRules.IsValid(request.Name, out var nameError))
            {
                throw new HostOperationException(HostErrorKind.Invalid, $"token {nameError}");
            }

            if (!ApiTokenRoles.IsValid(request.Role))
            {
                throw new HostOperationException(HostErrorKind.Invalid, $"token role '{request.Role}' is not one of {ApiTokenRoles.Admin}, {ApiTokenRoles.ReadOnly}");
            }

            var (record, secret) = ApiTokenStore.NewToken(request.Name!, request.Role!, time.GetUtcNow());
            await store.AddAsync(record, replaces: null, context.RequestAborted).ConfigureAwait(false);
            context.Response.Headers.Location = "/api/v1/tokens";
            return ManagementApi.Json(new CreatedApiTokenInfo { Info = Info(record), Token = secret }, ContractsJsonContext.Default.CreatedApiTokenInfo, StatusCodes.Status201Created);
        });

        api.MapDelete("/tokens/{id}", async (string id, ApiTokenStore store, CancellationToken ct) =>
        {
            await store.RevokeAsync(id, ct).ConfigureAwait(false);
            return Results.NoContent();
        });

        api.MapPost("/tokens/admin/rotate", async (HttpContext context, ApiTokenStore store, TimeProvider time) =>
        {
            // The policy let only an admin token through; that is the one replaced.
            var id = context.User.FindFirstValue(TokenAuthenticationHandler.TokenIdClaim)
                ?? throw new HostOperationException(HostErrorKind.Invalid, "rotation replaces the admin token the call is made with; send one");
            var old = store.Tokens.FirstOrDefault(t => t.Id == id)
                ?? throw new HostOperationException(HostErrorKind.Conflict, $"token {id} was revoked meanwhile");
            var (record, secret) = ApiTokenStore.NewToken(old.Name, ApiTokenRoles.Admin, time.GetUtcNow());
            await store.AddAsync(record, replaces: id, context.RequestAborted).ConfigureAwait(false);
            return ManagementApi.Json(new CreatedApiTokenInfo { Info = Info(record), Token = secret, Revoked = id }, ContractsJsonContext.Default.CreatedApiTokenInfo);
        });
    }

    private static ApiTokenInfo Info(ApiTokenRecord t) => new() { Id = t.Id, Name = t.Name, Role = t.Role, CreatedAt = t.CreatedAt };
}
