using System.Text.Json;
using Converge.Placement;

namespace Converge.Metadata.Tests;

/// <summary>The metadata additions of the management layer: token hash, maintenance mode, policy re-pointing.</summary>
public class ManagementCommandTests
{
    private static readonly ClusterState Bootstrapped = ClusterState.Empty.Apply(TestData.Bootstrap());

    [Fact]
    public void Initialize_keeps_the_admin_token_salted_and_it_survives_serialization()
    {
        var unsalted = ApiTokenHashing.UnsaltedHash("cvg_secret");
        var (state, result) = ClusterState.Empty.Apply(TestData.Initialize() with { AdminTokenHash = unsalted });
        Assert.True(result.Succeeded, result.Error);
        Assert.Null(state.Cluster!.AdminTokenHash);
        var token = Assert.Single(state.ApiTokens.Values);
        Assert.Equal(ApiTokenRoles.Admin, token.Role);
        Assert.NotEqual(unsalted, token.Hash);
        Assert.True(ApiTokenHashing.Matches(token, "cvg_secret"));
        Assert.False(ApiTokenHashing.Matches(token, "cvg_other"));
        var restored = ClusterState.FromJson(state.ToJson());
        Assert.Equal(token, Assert.Single(restored.ApiTokens.Values));
        var command = JsonSerializer.Deserialize(
            JsonSerializer.Serialize<MetadataCommand>(TestData.Initialize() with { AdminTokenHash = "h" }, MetadataJsonContext.Default.MetadataCommand),
            MetadataJsonContext.Default.MetadataCommand);
        Assert.Equal("h", Assert.IsType<InitializeCluster>(command).AdminTokenHash);
        Assert.Null(Bootstrapped.Cluster!.AdminTokenHash);
    }

    [Fact]
    public void Api_tokens_are_created_validated_rotated_and_revoked()
    {
        static ApiTokenRecord Token(string name, string role, string secret, string? id = null)
        {
            var salt = ApiTokenHashing.NewSalt();
            return new ApiTokenRecord(id ?? ApiTokenHashing.NewId(), name, role, salt, ApiTokenHashing.Hash(salt, secret), DateTimeOffset.UnixEpoch);
        }

        var viewer = Token("viewer", ApiTokenRoles.ReadOnly, "s1");
        var (state, ok) = Bootstrapped.Apply(new CreateApiToken(Guid.NewGuid(), viewer));
        Assert.True(ok.Succeeded, ok.Error);
        Assert.Same(viewer, ApiTokenHashing.Find(state.AllApiTokens(), "s1"));

        foreach (var (bad, error) in new[]
        {
            (Token("viewer", ApiTokenRoles.Admin, "s2"), "already exists"),
            (Token("Bad Name", ApiTokenRoles.Admin, "s2"), "invalid"),
            (Token("other", "root", "s2"), "'root' is not one of admin, read-only"),
            (Token("other", ApiTokenRoles.Admin, "s2", viewer.Id), "already used"),
        })
        {
            var (same, refused) = state.Apply(new CreateApiToken(Guid.NewGuid(), bad));
            Assert.False(refused.Succeeded);
            Assert.Contains(error, refused.Error, StringComparison.Ordinal);
            Assert.Same(state, same);
        }

        var (_, unknown) = state.Apply(new RevokeApiToken(Guid.NewGuid(), "nope"));
        Assert.Contains("there is no token with id 'nope'", unknown.Error, StringComparison.Ordinal);
        var (_, unknownReplace) = state.Apply(new CreateApiToken(Guid.NewGuid(), Token("x", ApiTokenRoles.Admin, "s3"), Replaces: "nope"));
        Assert.False(unknownReplace.Succeeded);

        // Rotation: the new token under the old name, the old one gone, in one command.
        var rotated = Token("viewer", ApiTokenRoles.ReadOnly, "s4");
        var (after, rotatedOk) = state.Apply(new CreateApiToken(Guid.NewGuid(), rotated, Replaces: viewer.Id));
        Assert.True(rotatedOk.Succeeded, rotatedOk.Error);
        Assert.Null(ApiTokenHashing.Find(after.AllApiTokens(), "s1"));
        Assert.Same(rotated, ApiTokenHashing.Find(after.AllApiTokens(), "s4"));

        var (revoked, revokedOk) = after.Apply(new RevokeApiToken(Guid.NewGuid(), rotated.Id));
        Assert.True(revokedOk.Succeeded, revokedOk.Error);
        Assert.Empty(revoked.ApiTokens);
    }

    [Fact]
    public void A_cluster_founded_before_salted_tokens_keeps_its_token_until_it_is_rotated()
    {
        var unsalted = ApiTokenHashing.UnsaltedHash("cvg_old");
        var old = Bootstrapped with { Cluster = Bootstrapped.Cluster! with { AdminTokenHash = unsalted } };
        var legacy = ApiTokenHashing.Find(old.AllApiTokens(), "cvg_old");
        Assert.Equal(ApiTokenRoles.LegacyAdminId, legacy?.Id);
        var salt = ApiTokenHashing.NewSalt();
        var fresh = new ApiTokenRecord(ApiTokenHashing.NewId(), "admin", ApiTokenRoles.Admin, salt, ApiTokenHashing.Hash(salt, "cvg_new"), DateTimeOffset.UnixEpoch);
        var (rotated, ok) = old.Apply(new CreateApiToken(Guid.NewGuid(), fresh, Replaces: ApiTokenRoles.LegacyAdminId));
        Assert.True(ok.Succeeded, ok.Error);
        Assert.Null(rotated.Cluster!.AdminTokenHash);
        Assert.Null(ApiTokenHashing.Find(rotated.AllApiTokens(), "cvg_old"));
        Assert.NotNull(ApiTokenHashing.Find(rotated.AllApiTokens(), "cvg_new"));
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
