using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Converge.Common;
using Converge.Host.Cluster;
using Converge.Host.Management;
using Converge.Management.Contracts;
using Converge.Metadata;

namespace Converge.Host;

/// <summary>The REST API (<c>/api/v1</c>). Every error is an RFC 7807 problem whose <c>detail</c> is the operator message.</summary>
internal static class ManagementApi
{
    private const string ProblemContentType = "application/problem+json";

    /// <summary>
    /// Reads through any host see every change committed through any other host before them (a policy updated via h1
    /// then shown via h2). Without a metadata quorum the local view is still served after a second: an operator needs
    /// to see the cluster most when it is in trouble.
    /// </summary>
    private static async Task ReadBarrierAsync(ClusterNode cluster, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(1));
        try
        {
            await cluster.Metadata.Service.BarrierAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is MetadataUnavailableException or HttpRequestException or InvalidOperationException ||
                                  (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
        }
    }

    public static void Map(WebApplication app)
    {
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(ConvergeHost.LogCategory);
        app.Use(async (context, next) =>
        {
            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (Exception e) when (!context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested)
            {
                var result = ToProblem(e, out var unexpected);
                if (unexpected)
                {
                    Log.RequestFailed(logger, e, context.Request.Method, context.Request.Path, e.Message);
                }

                await result.ExecuteAsync(context).ConfigureAwait(false);
            }
        });

        ApiSecurity.UseHostFiltering(app, app.Services.GetRequiredService<HostOptions>());
        ManagementEndpoints.UseClockHeader(app);
        var cluster = app.Services.GetService<ClusterNode>();
        if (cluster is not null)
        {
            app.Use(async (context, next) =>
            {
                var request = context.Request;
                if (HttpMethods.IsGet(request.Method) && cluster.Registered &&
                    request.Path.StartsWithSegments("/api/v1", StringComparison.OrdinalIgnoreCase) &&
                    !request.Path.StartsWithSegments("/api/v1/health", StringComparison.OrdinalIgnoreCase))
                {
                    await ReadBarrierAsync(cluster, context.RequestAborted).ConfigureAwait(false);
                }

                await next(context).ConfigureAwait(false);
            });
        }

        app.UseRouting();
        ApiSecurity.UseAccessChecks(app);

        // Deny by default: every route of the group, including one added later, needs what ApiAccess asks (a token
        // for reads beyond loopback, an admin token for any change); only the two below are open.
        var api = app.MapGroup("/api/v1").RequireAuthorization(ApiAccess.Policy);
        api.MapGet("/health", (HostRuntime runtime) => runtime.Ready && (cluster is null || cluster.Registered)
            ? Json(new HealthInfo { Status = "ready" }, ContractsJsonContext.Default.HealthInfo)
            : Json(new HealthInfo { Status = "starting" }, ContractsJsonContext.Default.HealthInfo, StatusCodes.Status503ServiceUnavailable))
            .AllowAnonymous(); // Probes and 'converge up' wait on it.

        api.MapGet("/host", (HostInventory inventory, HostRuntime runtime, HostOptions options) => Json(
            new HostInfo
            {
                Id = inventory.HostId.ToString(),
                Name = inventory.HostName,
                Version = ConvergeHost.Version,
                NbdEndpoint = inventory.NbdEndpoint,
                ApiEndpoint = runtime.ApiEndpoint,
                StartedAt = runtime.StartedAt,
                DiskCount = inventory.DiskCount,
                VirtualDiskCount = cluster is null ? inventory.VirtualDiskCount : cluster.Metadata.Current.VirtualDisks.Count,
                DataDirectory = Path.GetFullPath(options.DataDirectory),
            },
            ContractsJsonContext.Default.HostInfo));

        api.MapGet("/disks", (HostInventory inventory) =>
            Json(inventory.ListDisks(), ContractsJsonContext.Default.IReadOnlyListDiskInfo));

        api.MapPost("/disks", async (HttpContext context, HostInventory inventory) =>
        {
            var request = await ReadBodyAsync(context, ContractsJsonContext.Default.AddDiskRequest).ConfigureAwait(false);
            var disk = await inventory.AddDiskAsync(request.Path, request.Size, context.RequestAborted).ConfigureAwait(false);
            context.Response.Headers.Location = "/api/v1/disks";
            return Json(disk, ContractsJsonContext.Default.DiskInfo, StatusCodes.Status201Created);
        });

        if (cluster is not null)
        {
            ClusterApi.Map(app, api, cluster);
        }
        else
        {
            MapStandaloneVirtualDisks(api);
        }

        ManagementEndpoints.Map(app, api);
        TokenEndpoints.Map(api);
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapGet("/metrics", async (HttpContext context) =>
        {
            context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
        }).ExcludeFromDescription();
        WebUi.Map(app);

        app.MapFallback((HttpContext context) => Problem(
            StatusCodes.Status404NotFound,
            "Not found",
            $"there is no endpoint {context.Request.Method} {context.Request.Path}; the API is under /api/v1 (health, host, disks, vdisks{(cluster is null ? string.Empty : ", policies, hosts, cluster, events")}, health/checks, resync, perf, tokens), described by /openapi/v1.json; the web UI is at /")).ExcludeFromDescription();
    }

    private static void MapStandaloneVirtualDisks(RouteGroupBuilder api)
    {
        api.MapGet("/vdisks", (HostInventory inventory) =>
            Json(inventory.ListVirtualDisks(), ContractsJsonContext.Default.IReadOnlyListVirtualDiskInfo));

        api.MapGet("/vdisks/{name}", (string name, HostInventory inventory) =>
            Json(inventory.GetVirtualDisk(name), ContractsJsonContext.Default.VirtualDiskInfo));

        api.MapPost("/vdisks", async (HttpContext context, HostInventory inventory) =>
        {
            var request = await ReadBodyAsync(context, ContractsJsonContext.Default.CreateVirtualDiskRequest).ConfigureAwait(false);
            var created = await inventory.CreateVirtualDiskAsync(request.Name, request.Size, context.RequestAborted).ConfigureAwait(false);
            context.Response.Headers.Location = "/api/v1/vdisks/" + Uri.EscapeDataString(created.Name);
            return Json(created, ContractsJsonContext.Default.VirtualDiskInfo, StatusCodes.Status201Created);
        });

        api.MapPatch("/vdisks/{name}", async (string name, HttpContext context, HostInventory inventory) =>
        {
            var request = await ReadBodyAsync(context, ContractsJsonContext.Default.ResizeVirtualDiskRequest).ConfigureAwait(false);
            var resized = await inventory.ResizeVirtualDiskAsync(name, request.Size, context.RequestAborted).ConfigureAwait(false);
            return Json(resized, ContractsJsonContext.Default.VirtualDiskInfo);
        });

        api.MapDelete("/vdisks/{name}", async (string name, HttpContext context, HostInventory inventory) =>
        {
            await inventory.DeleteVirtualDiskAsync(name, context.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });
    }

    internal static async Task<T> ReadBodyAsync<T>(HttpContext context, JsonTypeInfo<T> typeInfo)
        where T : class
    {
        try
        {
            return await context.Request.ReadFromJsonAsync(typeInfo, context.RequestAborted).ConfigureAwait(false)
                ?? throw new BadRequestException("the request body is empty; send a JSON object");
        }
        catch (JsonException e)
        {
            throw new BadRequestException($"the request body is not a valid {typeof(T).Name}: {e.Message}");
        }
        catch (InvalidOperationException e) when (!context.Request.HasJsonContentType())
        {
            throw new BadRequestException($"send the request body as application/json ({e.Message})");
        }
    }

    private static IResult ToProblem(Exception e, out bool unexpected)
    {
        unexpected = false;
        switch (e)
        {
            case HostOperationException op:
                return op.Kind switch
                {
                    HostErrorKind.Invalid => Problem(StatusCodes.Status400BadRequest, "Invalid request", op.Message),
                    HostErrorKind.NotFound => Problem(StatusCodes.Status404NotFound, "Not found", op.Message),
                    HostErrorKind.Conflict => Problem(StatusCodes.Status409Conflict, "Conflict", op.Message),
                    _ => Problem(StatusCodes.Status507InsufficientStorage, "Insufficient storage", op.Message),
                };
            case ClusterOperationException op:
                return op.Kind switch
                {
                    HostErrorKind.Invalid => Problem(StatusCodes.Status400BadRequest, "Invalid request", op.Message),
                    HostErrorKind.NotFound => Problem(StatusCodes.Status404NotFound, "Not found", op.Message),
                    HostErrorKind.Conflict => Problem(StatusCodes.Status409Conflict, "Conflict", op.Message),
                    HostErrorKind.InsufficientCapacity => Problem(StatusCodes.Status507InsufficientStorage, "Insufficient storage", op.Message),
                    _ => Problem(StatusCodes.Status503ServiceUnavailable, "Unavailable", op.Message),
                };
            case MetadataUnavailableException or NotLeaderException:
                return Problem(StatusCodes.Status503ServiceUnavailable, "Unavailable", e.Message);
            case VolumeException { Error: VolumeError.Unavailable } unavailable:
                return Problem(StatusCodes.Status503ServiceUnavailable, "Unavailable", unavailable.Message);
            case BadRequestException bad:
                return Problem(StatusCodes.Status400BadRequest, "Invalid request", bad.Message);
            case BadHttpRequestException bad:
                return Problem(bad.StatusCode, "Invalid request", bad.Message);
            case VolumeException { Error: VolumeError.NoSpace } full:
                return Problem(StatusCodes.Status507InsufficientStorage, "Insufficient storage", full.Message);
            default:
                unexpected = true;
                return Problem(StatusCodes.Status500InternalServerError, "Internal error", $"the host failed: {e.Message}");
        }
    }

    internal static IResult Problem(int status, string title, string detail) => Results.Json(
        new ProblemInfo
        {
            Type = status switch
            {
                400 => "https://tools.ietf.org/html/rfc9110#section-15.5.1",
                404 => "https://tools.ietf.org/html/rfc9110#section-15.5.5",
                409 => "https://tools.ietf.org/html/rfc9110#section-15.5.10",
                401 => "https://tools.ietf.org/html/rfc9110#section-15.5.2",
                403 => "https://tools.ietf.org/html/rfc9110#section-15.5.4",
                415 => "https://tools.ietf.org/html/rfc9110#section-15.5.16",
                507 => "https://tools.ietf.org/html/rfc4918#section-11.5",
                503 => "https://tools.ietf.org/html/rfc9110#section-15.6.4",
                _ => "https://tools.ietf.org/html/rfc9110#section-15.6.1",
            },
            Title = title,
            Status = status,
            Detail = detail,
        },
        ContractsJsonContext.Default.ProblemInfo,
        ProblemContentType,
        status);

    internal static IResult Json<T>(T value, JsonTypeInfo<T> typeInfo, int status = StatusCodes.Status200OK) =>
        Results.Json(value, typeInfo, contentType: null, statusCode: status);

    private sealed class BadRequestException(string message) : Exception(message);
}
