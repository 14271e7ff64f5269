namespace Converge.Management.Tests;

/// <summary>One 3-host cluster shared by the tests of a class, with virtual disk <c>alpha</c> (default policy).</summary>
public sealed class ApiClusterFixture : IAsyncLifetime
{
    private TestCluster? cluster;

    public TestCluster Cluster => cluster ?? throw new InvalidOperationException("not started");

    public async Task InitializeAsync()
    {
        cluster = await TestCluster.StartAsync(3);
        await cluster[0].Api.CreateVirtualDiskAsync("alpha", "64MiB");
    }

    public async Task DisposeAsync()
    {
        if (cluster is not null)
        {
            await cluster.DisposeAsync();
        }
    }
}
