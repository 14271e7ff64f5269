using System.Text.Json;
using Converge.Placement;

namespace Converge.Metadata.Tests;

/// <summary>The metadata additions of the management layer: token hash, maintenance mode, policy re-pointing.</summary>
public class ManagementCommandTests
{
    private static readonly ClusterState Bootstrapped = ClusterState.Empty.Apply(TestData.Bootstrap());

    [Fact]
    public void Initialize_keeps_the_admin_token_hash_and_it_survives_serialization()
    {
        var (state, result) = ClusterState.Empty.Apply(TestData.Initialize() with { AdminTokenHash = "abc123" });
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal("abc123", state.Cluster!.AdminTokenHash);
        var command = JsonSerializer.Deserialize(
            JsonSerializer.Serialize<MetadataCommand>(TestData.Initialize() with { AdminTokenHash = "h" }, MetadataJsonContext.Default.MetadataCommand),
            MetadataJsonContext.Default.MetadataCommand);
        Assert.Equal("h", Assert.IsType<InitializeCluster>(command).AdminTokenHash);
        Assert.Null(Bootstrapped.Cluster!.AdminTokenHash);
    }

    [Fact]
    public void Maintenance_records_its_mode_and_leaving_it_clears_the_mode()
    {
        var (entered, ok) = Bootstrapped.Apply(new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Maintenance, MaintenanceMode: MaintenanceModes.NoDataMigration));
        Assert.True(ok.Succeeded, ok.Error);
        Assert.Equal((HostState.Maintenance, MaintenanceModes.NoDataMigration), (entered.Hosts["host1"].State, entered.Hosts["host1"].MaintenanceMode));

        var (defaulted, _) = Bootstrapped.Apply(new UpdateHost(Guid.NewGuid(), "host2", State: HostState.Maintenance));
        Assert.Equal(MaintenanceModes.EnsureAccessibility, defaulted.Hosts["host2"].MaintenanceMode);

        var (left, _) = entered.Apply(new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Active));
        Assert.Equal((HostState.Active, (string?)null), (left.Hosts["host1"].State, left.Hosts["host1"].MaintenanceMode));

        var (_, bad) = Bootstrapped.Apply(new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Maintenance, MaintenanceMode: "sideways"));
        Assert.False(bad.Succeeded);
        Assert.Contains("sideways", bad.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_virtual_disk_follows_another_policy_only_when_its_layout_shape_fits()
    {
        var (state, created) = Bootstrapped.Apply(TestData.CreateDisk(Bootstrapped, "vm1"));
        Assert.True(created.Succeeded, created.Error);
        var vdisk = state.FindVirtualDiskByName("vm1")!;
        state = state.Apply(new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = "limited", IopsLimit = 100 })).State;
        state = state.Apply(new PutPolicy(Guid.NewGuid(), StoragePolicy.Default with { Name = "wide", StripeWidth = 2 })).State;

        var (changed, ok) = state.Apply(new SetVirtualDiskPolicy(Guid.NewGuid(), vdisk.VirtualDiskId, "limited", vdisk.Generation));
        Assert.True(ok.Succeeded, ok.Error);
        Assert.Equal("limited", changed.VirtualDisks[vdisk.VirtualDiskId].PolicyName);
        Assert.Equal(vdisk.Generation, changed.VirtualDisks[vdisk.VirtualDiskId].Generation);

        Assert.Contains("different layout", state.Apply(new SetVirtualDiskPolicy(Guid.NewGuid(), vdisk.VirtualDiskId, "wide", vdisk.Generation)).Result.Error, StringComparison.Ordinal);
        Assert.Contains("does not exist", state.Apply(new SetVirtualDiskPolicy(Guid.NewGuid(), vdisk.VirtualDiskId, "nope", vdisk.Generation)).Result.Error, StringComparison.Ordinal);
        Assert.Contains("generation", state.Apply(new SetVirtualDiskPolicy(Guid.NewGuid(), vdisk.VirtualDiskId, "limited", vdisk.Generation + 1)).Result.Error, StringComparison.Ordinal);
    }
}
