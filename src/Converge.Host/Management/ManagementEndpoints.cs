using System.Globalization;
using Converge.Host.Cluster;
using Converge.Management.Contracts;

namespace Converge.Host.Management;

/// <summary>
/// The operator-facing additions to <c>/api/v1</c>: health checks, resync progress, performance samples, events,
/// maintenance, decommissioning, rebalance, fault domains, compliance, layouts and policy changes; the clock header; and the internal per-host views the cluster endpoints merge.
/// </summary>
internal static class ManagementEndpoints
{
    /// <summary>Every answer carries the host's clock, for the clock-skew check (the bearer-token check is <see cref="ApiSecurity"/>'s).</summary>
    public static void UseClockHeader(WebApplication app) =>
        app.Use((context, next) =>
        {
            context.Response.Headers[ClusterViews.ClockHeader] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
            return next(context);
        });

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
