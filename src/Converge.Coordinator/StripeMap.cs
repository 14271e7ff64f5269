using Converge.Placement;

namespace Converge.Coordinator;

/// <summary>One piece of a request that falls within a single component range of every replica.</summary>
/// <param name="ObjectOffset">Where the piece starts in the object.</param>
/// <param name="BufferOffset">Where the piece starts in the request's buffer.</param>
/// <param name="Stripe">The stripe it falls in.</param>
/// <param name="StripeOffset">Where it starts in the stripe's address space.</param>
public readonly record struct Segment(long ObjectOffset, int BufferOffset, int Length, int Stripe, long StripeOffset);

/// <summary>
/// RAID-0 address arithmetic of a layout: object offsets to (stripe, stripe offset) and on to components.
/// Pure; see docs/io-path.md.
/// </summary>
public sealed class StripeMap
{
    private readonly ObjectLayout _layout;
    private readonly ComponentPlacement[][][] _byReplicaStripe;
    private readonly Dictionary<Guid, ComponentPlacement> _incoming;

    public StripeMap(ObjectLayout layout)
    {
        _layout = layout;
        _byReplicaStripe = new ComponentPlacement[layout.ReplicaCount][][];
        for (var r = 0; r < layout.ReplicaCount; r++)
        {
            _byReplicaStripe[r] = new ComponentPlacement[layout.StripeWidth][];
            for (var s = 0; s < layout.StripeWidth; s++)
            {
                var replica = r;
                var stripe = s;
                _byReplicaStripe[r][s] = [.. layout.PrimaryDataComponents
                    .Where(c => c.Replica == replica && c.Stripe == stripe)
                    .OrderBy(c => c.StripeOffset)];
            }
        }

        // The new copy of a move is written beside the component it replaces (same range) until the move completes.
        _incoming = layout.DataComponents.Where(c => c.Replaces is not null).ToDictionary(c => c.Replaces!.Value);
    }

    public ObjectLayout Layout => _layout;

    /// <summary>The incoming copy of a move of <paramref name="componentId"/>, if one is under way.</summary>
    public ComponentPlacement? IncomingFor(Guid componentId) => _incoming.Count > 0 && _incoming.TryGetValue(componentId, out var c) ? c : null;

    /// <summary>Cuts [offset, offset+length) at stripe-unit and component boundaries, in object order.</summary>
    public void Split(long offset, long length, List<Segment> segments)
    {
        segments.Clear();
        var unit = (long)_layout.StripeUnitBytes;
        var width = _layout.StripeWidth;
        var position = offset;
        var end = offset + length;
        while (position < end)
        {
            int stripe;
            long stripeOffset;
            long room;
            if (width == 1)
            {
                stripe = 0;
                stripeOffset = position;
                room = end - position;
            }
            else
            {
                var unitIndex = position / unit;
                var withinUnit = position % unit;
                stripe = (int)(unitIndex % width);
                stripeOffset = (unitIndex / width * unit) + withinUnit;
                room = unit - withinUnit;
            }

            // Stay inside one component of replica 0; all replicas share the same component boundaries.
            var component = Find(0, stripe, stripeOffset);
            room = Math.Min(room, component.StripeOffset + component.Length - stripeOffset);
            var take = (int)Math.Min(room, end - position);
            segments.Add(new Segment(position, (int)(position - offset), take, stripe, stripeOffset));
            position += take;
        }
    }

    /// <summary>The component of <paramref name="replica"/> holding <paramref name="stripeOffset"/> of <paramref name="stripe"/>.</summary>
    public ComponentPlacement Find(int replica, int stripe, long stripeOffset)
    {
        var pieces = _byReplicaStripe[replica][stripe];
        foreach (var piece in pieces)
        {
            if (stripeOffset < piece.StripeOffset + piece.Length)
            {
                return piece;
            }
        }

        throw new ArgumentOutOfRangeException(nameof(stripeOffset), $"stripe offset {stripeOffset} is beyond stripe {stripe}");
    }
}
