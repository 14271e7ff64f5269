using System.Globalization;
using Converge.Host.Cluster;
using Converge.Management.Contracts;

namespace Converge.Host.Management;

/// <summary>
/// The operator-facing additions to <c>/api/v1</c>: health checks, resync progress, performance samples, events,
/// maintenance, decommissioning, rebalance, fault domains, compliance, layouts and policy changes; the bearer-token check of mutating calls;
/// the clock header; and the internal per-host views the cluster endpoints merge.
/// </summary>
internal static class ManagementEndpoints
{
    /// <summary>Mutating <c>/api/v1</c> calls need <c>Authorization: Bearer TOKEN</c>; the join stays open (host-to-host).</summary>
    public static void UseAdminToken(WebApplication app)
    {
        var verifier = app.Services.GetRequiredService<AdminTokenVerifier>();
        app.Use(async (context, next) =>
        {
            context.Response.Headers[ClusterViews.ClockHeader] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
            var request = context.Request;
            if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method) && !HttpMethods.IsOptions(request.Method) &&
                // Case-insensitive, as routing matches: "/API/v1/vdisks" reaches the same endpoint as "/api/v1/vdisks".
                request.Path.StartsWithSegments("/api/v1", StringComparison.OrdinalIgnoreCase) &&
                !request.Path.Equals("/api/v1/cluster/join", StringComparison.OrdinalIgnoreCase))
            {
                var refusal = Check(request.Headers.Authorization.ToString(), verifier);
                if (refusal is not null)
                {
                    context.Response.Headers.WWWAuthenticate = "Bearer realm=\"converge\"";
                    await ManagementApi.Problem(StatusCodes.Status401Unauthorized, "Unauthorized", refusal).ExecuteAsync(context).ConfigureAwait(false);
                    return;
                }
            }

            await next(context).ConfigureAwait(false);
        });
    }

    private static string? Check(string header, AdminTokenVerifier verifier)
    {
        var expected = verifier.ExpectedHash;
        if (expected is null)
        {
            return verifier.LegacyOpen
                ? null
                : "the cluster is not initialized yet, so no admin token can be checked; retry once the host is ready";
        }

        if (string.IsNullOrWhiteSpace(header))
        {
            return "this call changes the cluster and needs the admin token: send 'Authorization: Bearer TOKEN' " +
                   "(the CLI takes --token or CONVERGE_TOKEN; 'converge up' stored it in .converge/admin-token)";
        }

        const string Scheme = "Bearer ";
        if (!header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase) || header.Length == Scheme.Length)
        {
            return "the Authorization header must be 'Bearer TOKEN'";
        }

        return AdminToken.Matches(header[Scheme.Length..].Trim(), expected)
            ? null
            : "the admin token is wrong: it is not the one made when this cluster (or standalone host) was created";
    }

    public static void Map(WebApplication app, RouteGroupBuilder api)
    {
        var views = app.Services.GetRequiredService<ClusterViews>();
        var checks = app.Services.GetRequiredService<HealthChecks>();
        var cluster = app.Services.GetService<ClusterNode>();

        api.MapGet("/health/checks", async (CancellationToken ct) =>
            ManagementApi.Json(await checks.RunAsync(ct).ConfigureAwait(false), ContractsJsonContext.Default.HealthReport));
        api.MapGet("/resync", async (CancellationToken ct) =>
            ManagementApi.Json(await views.ResyncAsync(ct).ConfigureAwait(false), ContractsJsonContext.Default.ResyncReport));
        api.MapGet("/perf", async (int? seconds, CancellationToken ct) =>
            ManagementApi.Json(await views.PerfAsync(seconds ?? 120, ct).ConfigureAwait(false), ContractsJsonContext.Default.PerfReport));

        // Per-host views the cluster endpoints merge (/internal/v1/resync is ClusterApi's, beside the copies it describes).
        var internalApi = app.MapGroup("/internal/v1").ExcludeFromDescription();
        internalApi.MapGet("/perf", (int? seconds) => ManagementApi.Json(views.LocalPerf(Math.Clamp(seconds ?? 120, 1, IoMeters.WindowSeconds - 1)), ContractsJsonContext.Default.HostPerfInfo));

        if (cluster is null)
        {
            return;
        }

        var manager = cluster.Manager;
        api.MapGet("/events", (long? after, int? limit) =>
        {
            if (limit is < 1 or > 1000)
            {
                throw new ClusterOperationException(HostErrorKind.Invalid, $"limit {limit} must be between 1 and 1000");
            }

            return ManagementApi.Json(cluster.Events.List(after ?? 0, limit ?? 200), ContractsJsonContext.Default.IReadOnlyListEventInfo);
        });
        api.MapGet("/hosts/{name}", async (string name, CancellationToken ct) =>
            ManagementApi.Json(await manager.GetHostAsync(name, ct).ConfigureAwait(false), ContractsJsonContext.Default.ClusterHostInfo));
        api.MapPost("/hosts/{name}/maintenance", async (string name, HttpContext context) =>
        {
            var request = context.Request.ContentLength is 0 || (context.Request.ContentLength is null && !context.Request.HasJsonContentType())
                ? new MaintenanceRequest()
                : await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.MaintenanceRequest).ConfigureAwait(false);
            return ManagementApi.Json(await manager.EnterMaintenanceAsync(name, request.Mode, context.RequestAborted).ConfigureAwait(false), ContractsJsonContext.Default.ClusterHostInfo);
        });
        api.MapDelete("/hosts/{name}/maintenance", async (string name, CancellationToken ct) =>
            ManagementApi.Json(await manager.ExitMaintenanceAsync(name, ct).ConfigureAwait(false), ContractsJsonContext.Default.ClusterHostInfo));
        api.MapPost("/hosts/{name}/decommission", async (string name, CancellationToken ct) =>
            ManagementApi.Json(await manager.DecommissionHostAsync(name, ct).ConfigureAwait(false), ContractsJsonContext.Default.DecommissionInfo, StatusCodes.Status202Accepted));
        api.MapGet("/hosts/{name}/decommission", (string name) =>
            ManagementApi.Json(manager.GetHostDecommission(name), ContractsJsonContext.Default.DecommissionInfo));
        api.MapPost("/cluster/disks/{id}/decommission", async (string id, CancellationToken ct) =>
            ManagementApi.Json(await manager.DecommissionDiskAsync(id, ct).ConfigureAwait(false), ContractsJsonContext.Default.DecommissionInfo, StatusCodes.Status202Accepted));
        api.MapGet("/cluster/disks/{id}/decommission", (string id) =>
            ManagementApi.Json(manager.GetDiskDecommission(id), ContractsJsonContext.Default.DecommissionInfo));
        api.MapGet("/cluster/rebalance", async (CancellationToken ct) =>
            ManagementApi.Json(await manager.GetRebalanceAsync(ct).ConfigureAwait(false), ContractsJsonContext.Default.RebalanceInfo));
        api.MapPost("/cluster/rebalance", async (HttpContext context) =>
        {
            var request = context.Request.ContentLength is 0 || (context.Request.ContentLength is null && !context.Request.HasJsonContentType())
                ? new RebalanceRequest()
                : await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.RebalanceRequest).ConfigureAwait(false);
            return ManagementApi.Json(await manager.RebalanceAsync(request, context.RequestAborted).ConfigureAwait(false), ContractsJsonContext.Default.RebalanceInfo);
        });
        api.MapDelete("/cluster/rebalance", async (CancellationToken ct) =>
            ManagementApi.Json(await manager.StopRebalanceAsync(ct).ConfigureAwait(false), ContractsJsonContext.Default.RebalanceInfo));
        api.MapGet("/fault-domains", () => ManagementApi.Json(manager.FaultDomains(), ContractsJsonContext.Default.IReadOnlyListFaultDomainInfo));
        api.MapGet("/compliance", () => ManagementApi.Json(manager.Compliance(), ContractsJsonContext.Default.IReadOnlyListComplianceInfo));
        api.MapGet("/vdisks/{name}/layout", (string name) =>
            ManagementApi.Json(manager.GetVirtualDisk(name).Layout ?? [], ContractsJsonContext.Default.IReadOnlyListComponentInfo));
        api.MapPut("/vdisks/{name}/policy", async (string name, HttpContext context) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.SetPolicyRequest).ConfigureAwait(false);
            return ManagementApi.Json(await manager.SetPolicyAsync(name, request.Policy, context.RequestAborted).ConfigureAwait(false), ContractsJsonContext.Default.VirtualDiskInfo);
        });
    }
}
