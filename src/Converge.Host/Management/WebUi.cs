using System.Reflection;

namespace Converge.Host.Management;

/// <summary>The web UI: static files embedded in this assembly (no build step, no separate install), served at <c>/</c>.</summary>
internal static class WebUi
{
    private static readonly Dictionary<string, string> ContentTypes = new(StringComparer.Ordinal)
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
        [".svg"] = "image/svg+xml",
    };

    public static void Map(WebApplication app)
    {
        var assembly = typeof(WebUi).Assembly;
        app.MapGet("/", () => Serve(assembly, "index.html")).ExcludeFromDescription();
        app.MapGet("/ui/{file}", (string file) => Serve(assembly, file)).ExcludeFromDescription();
    }

    private static IResult Serve(Assembly assembly, string file)
    {
        var extension = Path.GetExtension(file);
        if (file.Contains('/', StringComparison.Ordinal) || !ContentTypes.TryGetValue(extension, out var contentType) ||
            assembly.GetManifestResourceStream("ui/" + file) is not { } stream)
        {
            return ManagementApi.Problem(StatusCodes.Status404NotFound, "Not found", $"the web UI has no file '{file}'");
        }

        return Results.Stream(stream, contentType);
    }
}
