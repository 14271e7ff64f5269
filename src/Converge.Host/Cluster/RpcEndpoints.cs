using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

namespace Converge.Host.Cluster;

/// <summary>
/// The host RPC listener (<c>--rpc-listen</c>): HTTPS where the TLS handshake requires a client certificate signed by
/// the cluster CA and not revoked, so a client without one is refused before any request is read. The one exception
/// is a joining host, which asks for the server name <see cref="ClusterTls.JoinServerName"/>: it gets TLS without a
/// client certificate and may only fetch the CA certificate and trade a join token for a certificate.
/// </summary>
internal static class RpcEndpoints
{
    private const string JoinConnection = "converge.join";

    public static void Listen(KestrelServerOptions kestrel, HostOptions options)
    {
        kestrel.Listen(options.RpcEndPoint!, listen =>
        {
            listen.Protocols = HttpProtocols.Http1;
            listen.UseHttps(new TlsHandshakeCallbackOptions
            {
                HandshakeTimeout = TimeSpan.FromSeconds(10),
                OnConnection = context =>
                {
                    var node = kestrel.ApplicationServices.GetRequiredService<ClusterNode>();
                    var join = string.Equals(context.ClientHelloInfo.ServerName, ClusterTls.JoinServerName, StringComparison.OrdinalIgnoreCase);
                    if (join)
                    {
                        context.Connection.Items[JoinConnection] = true;
                    }

                    return ValueTask.FromResult(ClusterTls.ServerOptions(node.Identity, join));
                },
            });
        });
    }

    /// <summary>
    /// Keeps the two listeners apart: <c>/internal</c> only on the RPC port (404 on the API port, whatever the case of
    /// the path), and only <c>/internal</c> there. Re-checks the client certificate per request, so a host revoked
    /// after its handshake is refused (and its connection closed) at its next request.
    /// </summary>
    public static void Use(WebApplication app, HostOptions options)
    {
        var rpcPort = options.RpcEndPoint!.Port;
        var node = app.Services.GetRequiredService<ClusterNode>();
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(ConvergeHost.LogCategory);
        app.Use(async (context, next) =>
        {
            var onRpc = context.Connection.LocalPort == rpcPort;
            var path = context.Request.Path;
            var isInternal = path.StartsWithSegments("/internal", StringComparison.OrdinalIgnoreCase);
            if (onRpc != isInternal)
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return;
            }

            if (onRpc)
            {
                var certificate = context.Connection.ClientCertificate;
                if (certificate is null)
                {
                    var joinOnly = context.Features.Get<IConnectionItemsFeature>()?.Items.ContainsKey(JoinConnection) == true &&
                                   ((HttpMethods.IsGet(context.Request.Method) && path.Equals("/internal/v1/cluster/ca", StringComparison.OrdinalIgnoreCase)) ||
                                    (HttpMethods.IsPost(context.Request.Method) && path.Equals("/internal/v1/cluster/certificate", StringComparison.OrdinalIgnoreCase)));
                    if (!joinOnly)
                    {
                        await ManagementApi.Problem(
                            StatusCodes.Status403Forbidden, "Forbidden", "host RPC needs a cluster certificate; a joining host may only fetch the CA and send its join token")
                            .ExecuteAsync(context).ConfigureAwait(false);
                        return;
                    }
                }
                else if (!node.Identity.Validator.Validate(certificate, out var reason))
                {
                    Log.RpcCertificateRefused(logger, path, reason);
                    context.Response.StatusCode = StatusCodes.Status403Forbidden;
                    context.Response.Headers.Connection = "close";
                    context.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
                    return;
                }
            }

            await next(context).ConfigureAwait(false);
        });
    }
}
