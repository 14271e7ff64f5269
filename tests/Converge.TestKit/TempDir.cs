namespace Converge.TestKit;

/// <summary>A unique directory under the system temp folder, removed on dispose (unless <c>CONVERGE_KEEP_TEMP=1</c>).</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string prefix = "converge-test")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        if (Environment.GetEnvironmentVariable("CONVERGE_KEEP_TEMP") == "1")
        {
            return;
        }

        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a process that was just killed may still hold a file for a moment.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    public override string ToString() => Path;
}
