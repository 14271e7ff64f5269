using Converge.Management.Contracts;

namespace Converge.Host.Tests;

/// <summary>One running host (one 4 GiB sparse disk) shared by the tests of a class; each test makes its own virtual disks.</summary>
public sealed class HostFixture : IAsyncLifetime
{
    private TempDir? dir;
    private HostProcess? host;
    private int counter;

    public HostProcess Host => host ?? throw new InvalidOperationException("The host fixture is not initialized.");

    public string DataDir => dir?.Path ?? throw new InvalidOperationException("The host fixture is not initialized.");

    public async Task InitializeAsync()
    {
        dir = new TempDir("converge-e2e");
        host = await HostProcess.StartAsync(dir.Path, "4GiB");
    }

    public async Task DisposeAsync()
    {
        if (host is not null)
        {
            await host.DisposeAsync();
        }

        dir?.Dispose();
    }

    /// <summary>Creates a virtual disk with a name unique in this fixture and returns its info.</summary>
    public Task<VirtualDiskInfo> CreateVirtualDiskAsync(string prefix, string size = "64MiB") =>
        Host.Api.CreateVirtualDiskAsync($"{prefix}-{Interlocked.Increment(ref counter)}", size);
}
