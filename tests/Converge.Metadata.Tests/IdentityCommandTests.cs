namespace Converge.Metadata.Tests;

/// <summary>Join tokens (single use, expiry) and certificate revocation in the replicated state.</summary>
public sealed class IdentityCommandTests
{
    private static readonly ClusterState Bootstrapped = ClusterState.Empty.Apply(TestData.Bootstrap());
    private static readonly DateTimeOffset T0 = TestData.T0;

    [Fact]
    public void A_join_token_is_used_once_and_not_after_it_expired()
    {
        var state = Bootstrapped.Apply([new CreateJoinToken(Guid.NewGuid(), "t1", "salt", "hash", T0, T0.AddHours(1))]);
        Assert.Equal("hash", state.JoinTokens["t1"].Hash);

        var (used, ok) = state.Apply(new ConsumeJoinToken(Guid.NewGuid(), "t1", "host9", "h9", "AA01", T0.AddMinutes(1)));
        Assert.True(ok.Succeeded, ok.Error);
        Assert.Equal("h9", used.JoinTokens["t1"].UsedBy);
        Assert.Equal("host9", used.Certificates["AA01"].HostId);

        var (_, again) = used.Apply(new ConsumeJoinToken(Guid.NewGuid(), "t1", "host8", "h8", "AA02", T0.AddMinutes(2)));
        Assert.False(again.Succeeded);
        Assert.Contains("already used", again.Error, StringComparison.Ordinal);

        var (_, late) = state.Apply(new ConsumeJoinToken(Guid.NewGuid(), "t1", "host8", "h8", "AA02", T0.AddHours(1)));
        Assert.False(late.Succeeded);
        Assert.Contains("expired", late.Error, StringComparison.Ordinal);

        var (_, unknown) = state.Apply(new ConsumeJoinToken(Guid.NewGuid(), "nope", "host8", "h8", "AA02", T0));
        Assert.False(unknown.Succeeded);
    }

    [Fact]
    public void Revoking_or_decommissioning_a_host_revokes_its_certificates()
    {
        var state = Bootstrapped.Apply([
            new RecordCertificate(Guid.NewGuid(), "host1", "host1", "C1", T0),
            new RecordCertificate(Guid.NewGuid(), "host2", "host2", "C2", T0),
        ]);
        Assert.False(state.IsRevoked("C1"));

        var (revoked, result) = state.Apply(new RevokeHostCertificates(Guid.NewGuid(), "host2", T0.AddMinutes(1), "operator"));
        Assert.True(result.Succeeded, result.Error);
        Assert.True(revoked.IsRevoked("C2"));
        Assert.False(revoked.IsRevoked("C1"));

        var decommissioned = state.Apply([
            new UpdateHost(Guid.NewGuid(), "host1", Voter: false),
            new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Decommissioning),
            new UpdateHost(Guid.NewGuid(), "host1", State: HostState.Decommissioned),
        ]);
        Assert.True(decommissioned.IsRevoked("C1"));
        Assert.Equal("decommissioned", decommissioned.Certificates["C1"].RevokedReason);

        // The revocation survives a snapshot round trip.
        Assert.True(ClusterState.FromJson(decommissioned.ToJson()).IsRevoked("C1"));
    }
}
