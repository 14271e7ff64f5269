using System.Text.Json;
using Converge.Management.Contracts;
using Converge.Metadata;

namespace Converge.Host.Cluster;

/// <summary>
/// The cluster-mode endpoints: virtual disks placed across hosts, policies, hosts, the cluster view, join tokens, and
/// the host-to-host endpoints under <c>/internal/v1</c>, served only on the RPC listener (mutual TLS, <see cref="RpcEndpoints"/>).
/// </summary>
internal static class ClusterApi
{
    public static void Map(WebApplication app, RouteGroupBuilder api, ClusterNode node)
    {
        var manager = node.Manager;
        api.MapGet("/vdisks", () => ManagementApi.Json(manager.ListVirtualDisks(), ContractsJsonContext.Default.IReadOnlyListVirtualDiskInfo));
        api.MapGet("/vdisks/{name}", (string name) => ManagementApi.Json(manager.GetVirtualDisk(name), ContractsJsonContext.Default.VirtualDiskInfo));
        api.MapPost("/vdisks", async (HttpContext context) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.CreateVirtualDiskRequest).ConfigureAwait(false);
            var created = await manager.CreateVirtualDiskAsync(request, context.RequestAborted).ConfigureAwait(false);
            context.Response.Headers.Location = "/api/v1/vdisks/" + Uri.EscapeDataString(created.Name);
            return ManagementApi.Json(created, ContractsJsonContext.Default.VirtualDiskInfo, StatusCodes.Status201Created);
        });
        api.MapPatch("/vdisks/{name}", async (string name, HttpContext context) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.ResizeVirtualDiskRequest).ConfigureAwait(false);
            return ManagementApi.Json(
                await manager.ResizeVirtualDiskAsync(name, request.Size, context.RequestAborted).ConfigureAwait(false),
                ContractsJsonContext.Default.VirtualDiskInfo);
        });
        api.MapDelete("/vdisks/{name}", async (string name, HttpContext context) =>
        {
            await manager.DeleteVirtualDiskAsync(name, context.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });

        api.MapGet("/policies", () => ManagementApi.Json(manager.ListPolicies(), ContractsJsonContext.Default.IReadOnlyListPolicyInfo));
        api.MapGet("/policies/{name}", (string name) => ManagementApi.Json(manager.GetPolicy(name), ContractsJsonContext.Default.PolicyInfo));
        api.MapPut("/policies/{name}", async (string name, HttpContext context) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.PolicyInfo).ConfigureAwait(false);
            return ManagementApi.Json(await manager.PutPolicyAsync(name, request, context.RequestAborted).ConfigureAwait(false), ContractsJsonContext.Default.PolicyInfo);
        });
        api.MapDelete("/policies/{name}", async (string name, HttpContext context) =>
        {
            await manager.DeletePolicyAsync(name, context.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });

        api.MapGet("/hosts", async (CancellationToken cancellationToken) =>
            ManagementApi.Json(await manager.ListHostsAsync(cancellationToken).ConfigureAwait(false), ContractsJsonContext.Default.IReadOnlyListClusterHostInfo));
        api.MapGet("/cluster", async (CancellationToken cancellationToken) =>
            ManagementApi.Json(await manager.StatusAsync(cancellationToken).ConfigureAwait(false), ContractsJsonContext.Default.ClusterStatusInfo));
        // Cluster identity (docs/security/identity.md): mutating, so the admin token guards them like every /api/v1 change.
        api.MapPost("/cluster/join-tokens", async (HttpContext context) =>
        {
            var request = context.Request.ContentLength is 0 or null && !context.Request.HasJsonContentType()
                ? new CreateJoinTokenRequest()
                : await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.CreateJoinTokenRequest).ConfigureAwait(false);
            var ttl = TimeSpan.FromHours(1);
            if (request.Ttl is not null)
            {
                try
                {
                    ttl = HostOptions.ParseDuration(request.Ttl, "ttl");
                }
                catch (HostOptionsException e)
                {
                    throw new ClusterOperationException(HostErrorKind.Invalid, e.Message);
                }
            }

            if (ttl < TimeSpan.FromSeconds(1) || ttl > TimeSpan.FromDays(7))
            {
                throw new ClusterOperationException(HostErrorKind.Invalid, $"ttl {request.Ttl}: give between 1s and 7 days (168h)");
            }

            return ManagementApi.Json(await node.CreateJoinTokenAsync(ttl, context.RequestAborted).ConfigureAwait(false), ContractsJsonContext.Default.JoinTokenInfo, StatusCodes.Status201Created);
        });
        api.MapPost("/hosts/{name}/revoke", async (string name, HttpContext context) =>
            ManagementApi.Json(await node.RevokeHostAsync(name, context.RequestAborted).ConfigureAwait(false), ContractsJsonContext.Default.RevokeHostInfo));

        // Host-to-host RPC: served only on the RPC listener (mutual TLS, see RpcEndpoints), never on the API port.
        var internalApi = app.MapGroup("/internal/v1").ExcludeFromDescription();

        // A joining host's connection (TLS without a client certificate) may use these two and nothing else.
        internalApi.MapGet("/cluster/ca", () => Results.Text(node.Identity.CaCertificate.ExportCertificatePem(), "application/x-pem-file"));
        internalApi.MapPost("/cluster/certificate", async (HttpContext context) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.JoinCertificateRequest).ConfigureAwait(false);
            try
            {
                var forwarded = context.Connection.ClientCertificate is not null && context.Request.Headers.ContainsKey(ClusterMetadata.ForwardedHeader);
                return ManagementApi.Json(
                    await node.HandleCertificateAsync(request, forwarded, context.RequestAborted).ConfigureAwait(false),
                    ContractsJsonContext.Default.JoinCertificateResponse);
            }
            catch (JoinRefusedException e)
            {
                return ManagementApi.Problem(StatusCodes.Status403Forbidden, "Join refused", e.Message);
            }
        });
        internalApi.MapPost("/cluster/join", async (HttpContext context) =>
        {
            var request = await ManagementApi.ReadBodyAsync(context, ContractsJsonContext.Default.JoinRequest).ConfigureAwait(false);
            var forwarded = context.Request.Headers.ContainsKey(ClusterMetadata.ForwardedHeader);

            // A host joins as the host its certificate was issued to (a forwarding member vouches for the joiner).
            var serial = context.Connection.ClientCertificate?.SerialNumber;
            var issued = serial is null ? null : node.Metadata.Current.Certificates.GetValueOrDefault(serial);
            if (!forwarded && issued?.HostId != request.HostId)
            {
                return ManagementApi.Problem(
                    StatusCodes.Status403Forbidden, "Join refused", $"the client certificate was not issued to host {request.HostId}; join with its own certificate");
            }

            return ManagementApi.Json(
                await node.HandleJoinAsync(request, forwarded, context.RequestAborted).ConfigureAwait(false),
                ContractsJsonContext.Default.JoinResponse);
        });
        internalApi.MapGet("/metadata/state", async (HttpContext context, long? after, bool? barrier) =>
        {
            var since = after ?? -1;
            if (barrier == true && node.Metadata.Raft is { } raft)
            {
                // A client's linearizable read: everything committed before the request is in the state returned.
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
                timeout.CancelAfter(TimeSpan.FromSeconds(5));
                await raft.BarrierAsync(timeout.Token).ConfigureAwait(false);
            }

            var deadline = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(10);
            while (node.Metadata.Current.AppliedIndex <= since && DateTimeOffset.UtcNow < deadline)
            {
                await Task.Delay(25, context.RequestAborted).ConfigureAwait(false);
            }

            var state = node.Metadata.Current;
            if (node.Metadata.Service.LeaderRaftEndpoint is { } leader)
            {
                context.Response.Headers[RemoteMetadataService.LeaderHeader] = leader;
            }

            return state.AppliedIndex <= since ? Results.NoContent() : Results.Bytes(state.ToJson(), "application/json");
        });
        internalApi.MapPost("/metadata/propose", async (HttpContext context) =>
        {
            MetadataCommand? command;
            try
            {
                command = await JsonSerializer.DeserializeAsync(context.Request.Body, MetadataJsonContext.Default.MetadataCommand, context.RequestAborted).ConfigureAwait(false);
            }
            catch (Exception e) when (e is JsonException or NotSupportedException or ArgumentException)
            {
                // Without a known "$type" the serializer cannot pick a command type and throws NotSupportedException,
                // which used to surface as HTTP 500.
                throw new ClusterOperationException(HostErrorKind.Invalid, $"not a metadata command: {e.Message}");
            }

            if (command is null)
            {
                throw new ClusterOperationException(HostErrorKind.Invalid, "empty metadata command");
            }

            var forwarded = context.Request.Headers.ContainsKey(ClusterMetadata.ForwardedHeader);
            CommandResult result;
            if (node.Metadata.Raft is { IsLeader: true } raft)
            {
                result = await raft.ProposeAsync(command, context.RequestAborted).ConfigureAwait(false);
            }
            else if (forwarded)
            {
                throw new ClusterOperationException(HostErrorKind.Unavailable, "this host is not the metadata leader");
            }
            else
            {
                result = await node.Metadata.ProposeAsync(command, context.RequestAborted).ConfigureAwait(false);
            }

            return Results.Bytes(JsonSerializer.SerializeToUtf8Bytes(result, MetadataJsonContext.Default.CommandResult), "application/json");
        });
        internalApi.MapPost("/vdisks/{id}/release", async (string id, HttpContext context) =>
        {
            await node.Coordinators.ReleaseAsync(id, context.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });
        internalApi.MapGet("/resync", (Management.ClusterViews views) =>
            ManagementApi.Json(views.LocalResyncState(), ContractsJsonContext.Default.HostResyncState));
        internalApi.MapPost("/test/disks/{id}/{action}", async (string id, string action, HttpContext context) =>
        {
            if (!node.FaultInjectionEnabled)
            {
                throw new ClusterOperationException(HostErrorKind.NotFound, "fault injection is not enabled on this host (--enable-fault-injection)");
            }

            if (!Guid.TryParse(id, out var diskId) || action is not ("fail" or "heal"))
            {
                throw new ClusterOperationException(HostErrorKind.Invalid, "use POST /internal/v1/test/disks/{diskId}/fail or /heal");
            }

            node.Local.InjectDiskFailure(diskId, action == "fail");
            await node.Metadata.ProposeAsync(
                new UpdateDiskState(Guid.NewGuid(), diskId.ToString("N"), action == "fail" ? DiskState.Failed : DiskState.Online), context.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });
        internalApi.MapGet("/components/{id}/digest", async (string id, HttpContext context) =>
        {
            if (!Guid.TryParse(id, out var componentId) || node.Local.FindComponent(componentId) is not { } component)
            {
                throw new ClusterOperationException(HostErrorKind.NotFound, $"component '{id}' is not on this host");
            }

            var digest = await node.Local.DigestAsync(component, context.RequestAborted).ConfigureAwait(false);
            return ManagementApi.Json(
                new ComponentDigestInfo { ComponentId = componentId.ToString("N"), Name = component.Name, SizeBytes = component.Size, Sha256 = digest },
                ContractsJsonContext.Default.ComponentDigestInfo);
        });
    }
}
