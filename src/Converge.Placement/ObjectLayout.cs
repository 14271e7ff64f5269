namespace Converge.Placement;

public enum ComponentRole
{
    Data,
    Witness,
}

/// <summary>
/// One component: a contiguous piece of one stripe of one replica, or a witness.
/// <see cref="StripeOffset"/> and <see cref="Length"/> are in the stripe's own address space.
/// </summary>
/// <param name="Replaces">
/// Set while this component is the incoming copy of a make-before-break move of component <c>Replaces</c> (same role,
/// replica and stripe range): it is written but not read, carries no votes and does not count towards a complete copy,
/// until the move completes and it takes the old component's place and votes.
/// </param>
public sealed record ComponentPlacement(
    Guid ComponentId,
    ComponentRole Role,
    int Replica,
    int Stripe,
    long StripeOffset,
    long Length,
    string HostId,
    string FaultDomain,
    string DiskId,
    int Votes,
    long ReservedBytes,
    Guid? Replaces = null)
{
    /// <summary>The incoming copy of a move (see <see cref="Replaces"/>).</summary>
    public bool IsIncoming => Replaces is not null;
}

/// <summary>
/// RAID-1 over <see cref="ReplicaCount"/> replicas, each RAID-0 over <see cref="StripeWidth"/> stripes of
/// <see cref="StripeUnitBytes"/> units, each stripe a concatenation of bounded components; plus witnesses.
/// </summary>
public sealed record ObjectLayout(
    Guid ObjectId,
    long SizeBytes,
    int ReplicaCount,
    int StripeWidth,
    int StripeUnitBytes,
    long StripeLength,
    IReadOnlyList<ComponentPlacement> Components)
{
    public IEnumerable<ComponentPlacement> DataComponents => Components.Where(c => c.Role == ComponentRole.Data);

    /// <summary>Data components that hold their replica's range (not the incoming copies of moves).</summary>
    public IEnumerable<ComponentPlacement> PrimaryDataComponents => Components.Where(c => c.Role == ComponentRole.Data && c.Replaces is null);

    /// <summary>The incoming copy of a move of <paramref name="componentId"/>, if one is under way.</summary>
    public ComponentPlacement? IncomingFor(Guid componentId) => Components.FirstOrDefault(c => c.Replaces == componentId);

    public IEnumerable<ComponentPlacement> Witnesses => Components.Where(c => c.Role == ComponentRole.Witness);

    public int TotalVotes => Components.Sum(c => c.Votes);

    public IEnumerable<ComponentPlacement> ReplicaComponents(int replica) =>
        DataComponents.Where(c => c.Replica == replica);

    /// <summary>
    /// Accessible (DESIGN.md): more than half of all votes reachable and, for every stripe, at least one
    /// replica whose components covering that stripe are all reachable. The incoming copy of a move carries no votes
    /// and is not part of its replica until the move completes, so it changes neither count.
    /// </summary>
    public bool IsAccessible(Func<ComponentPlacement, bool> reachable)
    {
        var reachableVotes = Components.Where(reachable).Sum(c => c.Votes);
        if (2 * reachableVotes <= TotalVotes)
        {
            return false;
        }

        for (var stripe = 0; stripe < StripeWidth; stripe++)
        {
            var s = stripe;
            var complete = Enumerable.Range(0, ReplicaCount).Any(r =>
                PrimaryDataComponents.Where(c => c.Replica == r && c.Stripe == s).All(reachable));
            if (!complete)
            {
                return false;
            }
        }

        return true;
    }
}
