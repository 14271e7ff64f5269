using System.Security.Claims;
using Converge.Metadata;
using Microsoft.AspNetCore.Authorization;

namespace Converge.Host.Management;

/// <summary>
/// The one policy of the <c>/api/v1</c> group, so that every route, including one added later, is covered: reads need
/// any valid token (none while anonymous reads are allowed), everything else needs an admin token.
/// </summary>
internal sealed class ApiAccess(bool anonymousRead) : AuthorizationHandler<ApiAccess>, IAuthorizationRequirement
{
    public const string Policy = "converge-api";

    public bool AnonymousRead { get; } = anonymousRead;

    public static bool IsRead(string method) => HttpMethods.IsGet(method) || HttpMethods.IsHead(method);

    protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, ApiAccess requirement)
    {
        if (context.Resource is not HttpContext http)
        {
            return Task.CompletedTask;
        }

        var authenticated = context.User.Identity?.IsAuthenticated == true;
        if (IsRead(http.Request.Method))
        {
            // A token that is sent must be valid even where reads are open: the web UI learns early that it is wrong.
            if (authenticated || (requirement.AnonymousRead && string.IsNullOrEmpty(http.Request.Headers.Authorization)))
            {
                context.Succeed(requirement);
            }
        }
        else if (authenticated && context.User.FindFirstValue(ClaimTypes.Role) == ApiTokenRoles.Admin)
        {
            context.Succeed(requirement);
        }

        return Task.CompletedTask;
    }
}
