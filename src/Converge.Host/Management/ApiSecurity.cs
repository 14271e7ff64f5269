using System.Net;
using System.Net.NetworkInformation;
using System.Security.Cryptography.X509Certificates;
using Converge.Host.Cluster;

namespace Converge.Host.Management;

/// <summary>
/// What guards the management API besides its routes: bearer-token authentication and the <see cref="ApiAccess"/>
/// policy, host filtering, the browser-safety checks of changes, and HTTPS (docs/security/api.md).
/// </summary>
internal static class ApiSecurity
{
    /// <summary>Sent by the CLI and the web UI with every call; a cross-site HTML form cannot set it.</summary>
    public const string ClientHeader = Converge.Management.Contracts.ConvergeApiClient.ClientHeader;

    public static void AddServices(IServiceCollection services, HostOptions options)
    {
        if (options.IsCluster)
        {
            services.AddSingleton<ApiTokenStore>(sp => new ClusterTokenStore(sp.GetRequiredService<ClusterNode>()));
        }
        else
        {
            services.AddSingleton<ApiTokenStore>(sp => new StandaloneTokenStore(options));
        }

        // Not AddAuthentication(): it brings data protection, which bearer tokens never use and which would write a
        // key ring to ~/.aspnet at start.
        services.AddAuthenticationCore(o => o.DefaultScheme = TokenAuthenticationHandler.SchemeName);
        services.AddWebEncoders();
        new Microsoft.AspNetCore.Authentication.AuthenticationBuilder(services)
            .AddScheme<Microsoft.AspNetCore.Authentication.AuthenticationSchemeOptions, TokenAuthenticationHandler>(TokenAuthenticationHandler.SchemeName, null);
        services.AddAuthorizationBuilder()
            .AddPolicy(ApiAccess.Policy, p => p.AddRequirements(new ApiAccess(options.ApiAnonymousReadEffective)));
    }

    /// <summary>Loopback names and addresses, the bound address (every local address for a wildcard bind) and <c>--api-allowed-host</c>.</summary>
    public static List<string> AllowedHosts(HostOptions options)
    {
        var hosts = new List<string> { "localhost", "127.0.0.1", "[::1]" };
        var bound = options.ApiEndPoint.Address;
        IEnumerable<IPAddress> addresses = [bound];
        if (bound.Equals(IPAddress.Any) || bound.Equals(IPAddress.IPv6Any))
        {
            hosts.Add(Dns.GetHostName());
            addresses = NetworkInterface.GetAllNetworkInterfaces().SelectMany(i => i.GetIPProperties().UnicastAddresses).Select(a => a.Address);
        }

        foreach (var address in addresses)
        {
            var text = address.ToString();
            hosts.Add(address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{text}]" : text);
        }

        hosts.AddRange(options.ApiAllowedHosts.Select(h => h.Trim()));
        return [.. hosts.Distinct(StringComparer.OrdinalIgnoreCase)];
    }

    /// <summary>
    /// Before routing: refuse a Host header that is not this API's (DNS rebinding). Only on the API port: the host RPC
    /// listener trusts client certificates, not names, and a joining host sends the server name <c>converge-join</c>.
    /// </summary>
    /// <remarks>
    /// Not ASP.NET's AddHostFiltering: its options also feed the host-filtering startup filter that the web host puts
    /// in front of every listener, the RPC one included.
    /// </remarks>
    public static void UseHostFiltering(WebApplication app, HostOptions options)
    {
        var allowed = new HashSet<string>(AllowedHosts(options), StringComparer.OrdinalIgnoreCase);
        app.UseWhen(
            context => options.RpcEndPoint is not { } rpc || context.Connection.LocalPort != rpc.Port,
            api => api.Use(async (context, next) =>
            {
                var host = context.Request.Host;
                if (host.HasValue && !allowed.Contains(host.Host) && !allowed.Contains($"[{host.Host}]"))
                {
                    context.Response.StatusCode = StatusCodes.Status400BadRequest;
                    return;
                }

                await next(context).ConfigureAwait(false);
            }));
    }

    /// <summary>After routing: authentication, the policy, then the browser-safety checks of changes.</summary>
    public static void UseAccessChecks(WebApplication app)
    {
        app.UseAuthentication();
        app.UseAuthorization();
        app.Use(async (context, next) =>
        {
            if (BrowserRefusal(context.Request) is { } refusal)
            {
                await refusal.ExecuteAsync(context).ConfigureAwait(false);
                return;
            }

            await next(context).ConfigureAwait(false);
        });
    }

    /// <summary>
    /// A change must not come from a page of another site: such a page can send a form POST (no custom headers, no JSON
    /// content type, without CORS preflight) and its Origin is not ours. Host-to-host calls (/internal) are not browsers'.
    /// </summary>
    private static IResult? BrowserRefusal(HttpRequest request)
    {
        if (ApiAccess.IsRead(request.Method) || HttpMethods.IsOptions(request.Method) ||
            request.Path.StartsWithSegments("/internal", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var origin = request.Headers.Origin.ToString();
        if (origin.Length > 0 && !string.Equals(origin, $"{request.Scheme}://{request.Host}", StringComparison.OrdinalIgnoreCase))
        {
            return ManagementApi.Problem(
                StatusCodes.Status403Forbidden,
                "Cross-origin request refused",
                $"this change comes from a page of {origin}, not of this API ({request.Scheme}://{request.Host}); the API takes changes only from its own web UI, the CLI and other non-browser clients");
        }

        if (!request.HasJsonContentType() && !request.Headers.ContainsKey(ClientHeader))
        {
            return ManagementApi.Problem(
                StatusCodes.Status415UnsupportedMediaType,
                "Unsupported media type",
                $"changes must be sent with 'Content-Type: application/json' or the header '{ClientHeader}: 1' " +
                $"(the CLI and the web UI send it); got {(request.ContentType is { Length: > 0 } type ? $"'{type}'" : "no content type")}, as a cross-site form would");
        }

        return null;
    }

    /// <summary>The API's HTTPS certificate from its PEM files.</summary>
    /// <exception cref="HostStartException">The files are not a certificate and its key.</exception>
    public static X509Certificate2 LoadCertificate(HostOptions options)
    {
        try
        {
            using var pem = X509Certificate2.CreateFromPemFile(options.ApiTlsCertificatePath!, options.ApiTlsKeyPath);

            // Kestrel needs the key in a form the TLS stack can use on every platform: export and reimport once.
            return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (Exception e) when (e is System.Security.Cryptography.CryptographicException or IOException or ArgumentException)
        {
            throw new HostStartException($"--api-tls-cert {options.ApiTlsCertificatePath} / --api-tls-key {options.ApiTlsKeyPath}: not a PEM certificate and its private key ({e.Message})", e);
        }
    }
}
