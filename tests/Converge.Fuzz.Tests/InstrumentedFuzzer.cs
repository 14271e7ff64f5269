namespace Converge.Fuzz.Tests;

/// <summary>
/// A copy of the Converge.Fuzz build whose assemblies under test are instrumented for AFL++ (<c>dotnet sharpfuzz</c>,
/// from the repository's tool manifest), made once for the test class; the build output itself stays as built.
/// </summary>
public sealed class InstrumentedFuzzer : IAsyncLifetime
{
    private static readonly string[] Instrumented = ["Converge.Common", "Converge.Nbd", "Converge.Coordinator", "Converge.Metadata"];

    private readonly TempDir dir = new("converge-afl");

    public string Directory => Path.Combine(dir.Path, "bin");

    public string Entry => Path.Combine(Directory, "Converge.Fuzz.dll");

    public string Work => dir.Path;

    public async Task InitializeAsync()
    {
        var built = Path.Combine(RepoPaths.RepoRoot, "tests", "Converge.Fuzz", "bin", RepoPaths.Configuration, new DirectoryInfo(AppContext.BaseDirectory).Name);
        Assert.True(File.Exists(Path.Combine(built, "Converge.Fuzz.dll")), $"Converge.Fuzz is not built at {built}");
        Copy(built, Directory);
        foreach (var assembly in Instrumented)
        {
            var result = await Tool.RunAsync("dotnet", ["sharpfuzz", Path.Combine(Directory, assembly + ".dll")], TimeSpan.FromMinutes(2), workingDirectory: RepoPaths.RepoRoot);
            Assert.True(result.ExitCode == 0, $"instrumenting {assembly} failed (is the tool restored? `dotnet tool restore`)\n{result}");
        }
    }

    public Task DisposeAsync()
    {
        dir.Dispose();
        return Task.CompletedTask;
    }

    private static void Copy(string from, string to)
    {
        System.IO.Directory.CreateDirectory(to);
        foreach (var file in System.IO.Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            System.IO.Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
