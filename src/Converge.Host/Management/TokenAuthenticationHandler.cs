using System.Security.Claims;
using System.Text.Encodings.Web;
using Converge.Metadata;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace Converge.Host.Management;

/// <summary>
/// <c>Authorization: Bearer TOKEN</c> against the host's <see cref="ApiTokenStore"/>. No header: anonymous (the policy
/// decides). A refusal is an RFC 7807 problem: 401 without a valid token, 403 for a read-only token on a change.
/// </summary>
internal sealed class TokenAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder, ApiTokenStore store)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "converge-token";
    public const string TokenIdClaim = "converge:token-id";
    private const string BearerPrefix = "Bearer ";

    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        var header = Request.Headers.Authorization.ToString();
        if (string.IsNullOrWhiteSpace(header))
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        if (!header.StartsWith(BearerPrefix, StringComparison.OrdinalIgnoreCase) || header.Length == BearerPrefix.Length)
        {
            return Task.FromResult(AuthenticateResult.Fail("the Authorization header must be 'Bearer TOKEN'"));
        }

        if (!store.Ready)
        {
            return Task.FromResult(AuthenticateResult.Fail("the cluster is not initialized yet, so no token can be checked; retry once the host is ready"));
        }

        if (ApiTokenHashing.Find(store.Tokens, header[BearerPrefix.Length..].Trim()) is not { } token)
        {
            return Task.FromResult(AuthenticateResult.Fail(
                "the token is wrong: it is not the admin token made when this cluster (or standalone host) was created, nor any other token not revoked ('converge token list')"));
        }

        var identity = new ClaimsIdentity(
            [new Claim(ClaimTypes.Name, token.Name), new Claim(ClaimTypes.Role, token.Role), new Claim(TokenIdClaim, token.Id)],
            SchemeName);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), SchemeName)));
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        var result = await HandleAuthenticateOnceSafeAsync().ConfigureAwait(false);
        var detail = result.Failure?.Message ?? (ApiAccess.IsRead(Request.Method)
            ? "reading this API needs a token, since it is reachable beyond loopback: send 'Authorization: Bearer TOKEN' with a read-only or admin token " +
              "(the CLI takes --token or CONVERGE_TOKEN; 'converge token create NAME --role read-only' makes one)"
            : "this call changes the cluster and needs the admin token: send 'Authorization: Bearer TOKEN' " +
              "(the CLI takes --token or CONVERGE_TOKEN; 'converge up' stored it in .converge/admin-token)");
        Response.Headers.WWWAuthenticate = "Bearer realm=\"converge\"";
        await ManagementApi.Problem(StatusCodes.Status401Unauthorized, "Unauthorized", detail).ExecuteAsync(Context).ConfigureAwait(false);
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties)
    {
        var name = Context.User.Identity?.Name ?? "?";
        var role = Context.User.FindFirstValue(ClaimTypes.Role);
        return ManagementApi.Problem(
            StatusCodes.Status403Forbidden,
            "Forbidden",
            $"this call changes the cluster and needs an admin token; the token '{name}' is {role}: it can only read").ExecuteAsync(Context);
    }
}
