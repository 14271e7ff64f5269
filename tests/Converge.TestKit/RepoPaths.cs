namespace Converge.TestKit;

/// <summary>Where the repository and the built <c>converge</c> binary are, found from the running test assembly.</summary>
public static class RepoPaths
{
    private static readonly Lazy<string> Root = new(FindRoot);

    /// <summary>The directory holding <c>Converge.sln</c>.</summary>
    public static string RepoRoot => Root.Value;

    /// <summary><c>Release</c> or <c>Debug</c>: the configuration the tests themselves were built in.</summary>
    public static string Configuration
    {
        get
        {
            var dir = AppContext.BaseDirectory.Replace('\\', '/');
            return dir.Contains("/bin/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
        }
    }

    /// <summary>
    /// The <c>converge</c> apphost. <c>CONVERGE_BIN</c> overrides; otherwise the build of the same configuration as the
    /// tests, else the other one.
    /// </summary>
    public static string ConvergeBinary
    {
        get
        {
            var fromEnv = Environment.GetEnvironmentVariable("CONVERGE_BIN");
            if (!string.IsNullOrEmpty(fromEnv))
            {
                return fromEnv;
            }

            string[] configurations = Configuration == "Debug" ? ["Debug", "Release"] : ["Release", "Debug"];
            foreach (var configuration in configurations)
            {
                var candidate = Path.Combine(RepoRoot, "src", "Converge.Cli", "bin", configuration, "net10.0", "converge");
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }

            throw new FileNotFoundException(
                $"The converge binary is not built under {Path.Combine(RepoRoot, "src", "Converge.Cli", "bin")}; " +
                "run 'dotnet build Converge.sln -c Release' first.");
        }
    }

    /// <summary>A file shipped next to the test assembly (scripts are copied to the output directory).</summary>
    public static string TestAsset(params string[] parts) => Path.Combine([AppContext.BaseDirectory, .. parts]);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Converge.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException($"No Converge.sln above {AppContext.BaseDirectory}");
    }
}
