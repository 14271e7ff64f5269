using System.Buffers.Binary;
using System.Security.Cryptography;
using Converge.Common;

namespace Converge.Placement;

public sealed record PlacementResult(ObjectLayout? Layout, string? Error)
{
    public bool Succeeded => Layout is not null;

    public static PlacementResult Fail(string error) => new(null, error);
}

/// <summary>
/// Decides where an object's components live. Pure and deterministic: the same object, policy, topology and
/// options always give the same layout, whatever order hosts and disks are listed in.
/// </summary>
/// <remarks>
/// Each replica lives in its own fault domain, so losing one domain costs at most one replica. Every replica
/// carries the same number of votes (one per data component) and each witness carries as many as a replica,
/// so with FTT replicas' worth of witnesses on further domains, any FTT failed domains leave a strict majority.
/// </remarks>
public static class PlacementEngine
{
    public static PlacementResult Place(
        Guid objectId, long sizeBytes, StoragePolicy policy, ClusterTopology topology, PlacementOptions? options = null)
    {
        options ??= new PlacementOptions();
        var ruleErrors = policy.Validate();
        if (ruleErrors.Count > 0)
        {
            return PlacementResult.Fail($"policy '{policy.Name}' is invalid: {string.Join("; ", ruleErrors)}");
        }

        if (sizeBytes <= 0 || sizeBytes % BlockGeometry.BlockSize != 0)
        {
            return PlacementResult.Fail($"size must be a positive multiple of {BlockGeometry.BlockSize} bytes; got {sizeBytes}");
        }

        if (policy.Method != FailureToleranceMethod.Mirroring)
        {
            return PlacementResult.Fail($"{policy.MethodLabel} erasure coding is not available yet; use RAID-1 mirroring");
        }

        var domains = BuildDomains(topology);
        var ftt = policy.FailuresToTolerate;
        var needed = policy.RequiredFaultDomains;
        if (domains.Count < needed)
        {
            return PlacementResult.Fail(
                $"FTT={ftt} with {policy.MethodLabel} needs {needed} fault domains; cluster has {domains.Count}" +
                " (counting only hosts that are usable and have a usable disk)");
        }

        var shape = StripeShape.For(sizeBytes, policy.StripeWidth, options);
        var replicaCount = ftt + 1;
        var votesPerDomain = shape.ComponentsPerReplica;
        var components = new List<ComponentPlacement>();
        var failures = new List<string>();

        // Roomiest domains first: balances capacity across the cluster and keeps the choice deterministic.
        var ordered = domains.OrderByDescending(d => d.FreeBytes).ThenBy(d => d.Name, StringComparer.Ordinal).ToList();
        var used = new HashSet<string>(StringComparer.Ordinal);
        for (var replica = 0; replica < replicaCount; replica++)
        {
            var placed = false;
            foreach (var domain in ordered.Where(d => !used.Contains(d.Name)))
            {
                if (TryPlaceReplica(objectId, replica, domain, shape, policy, out var replicaComponents, out var why))
                {
                    components.AddRange(replicaComponents);
                    used.Add(domain.Name);
                    placed = true;
                    break;
                }

                failures.Add(why);
            }

            if (!placed)
            {
                return PlacementResult.Fail(
                    $"not enough free capacity for {replicaCount} replicas of {ByteSize.Format(sizeBytes)} on distinct fault domains: " +
                    string.Join("; ", failures.Distinct()));
            }
        }

        for (var witness = 0; witness < ftt; witness++)
        {
            var placed = false;
            foreach (var domain in ordered.Where(d => !used.Contains(d.Name)))
            {
                var disk = domain.Disks
                    .Where(d => d.Remaining >= options.WitnessBytes)
                    .OrderByDescending(d => d.Remaining).ThenBy(d => d.Disk.DiskId, StringComparer.Ordinal)
                    .FirstOrDefault();
                if (disk is null)
                {
                    continue;
                }

                disk.Remaining -= options.WitnessBytes;
                components.Add(new ComponentPlacement(
                    DeriveId(objectId, ComponentRole.Witness, witness, 0, 0), ComponentRole.Witness, -1, -1, 0, 0,
                    disk.Disk.HostId, domain.Name, disk.Disk.DiskId, votesPerDomain, options.WitnessBytes));
                used.Add(domain.Name);
                placed = true;
                break;
            }

            if (!placed)
            {
                return PlacementResult.Fail(
                    $"FTT={ftt} needs {ftt} witness(es) on fault domains without a replica, each with {ByteSize.Format(options.WitnessBytes)} free; not enough such domains");
            }
        }

        return new PlacementResult(
            new ObjectLayout(objectId, sizeBytes, replicaCount, policy.StripeWidth, options.StripeUnitBytes, shape.StripeLength, components),
            null);
    }

    private static bool TryPlaceReplica(
        Guid objectId, int replica, Domain domain, StripeShape shape, StoragePolicy policy,
        out List<ComponentPlacement> placed, out string why)
    {
        placed = [];
        why = string.Empty;

        // Plan on copies so a replica that does not fit leaves the domain untouched for the next attempt.
        var disks = domain.Disks.Select(d => new DiskPlan(d.Disk) { Remaining = d.Remaining }).ToList();
        var usedByReplica = new HashSet<string>(StringComparer.Ordinal);
        for (var stripe = 0; stripe < shape.StripeWidth; stripe++)
        {
            for (var piece = 0; piece < shape.PiecesPerStripe; piece++)
            {
                var (offset, length) = shape.Piece(piece);
                var reserve = (long)Math.Ceiling(length * (policy.ObjectSpaceReservationPercent / 100.0));

                // Distinct disks for the replica's components where possible, then the least loaded disk.
                var disk = disks
                    .Where(d => d.Remaining >= length)
                    .OrderBy(d => usedByReplica.Contains(d.Disk.DiskId) ? 1 : 0)
                    .ThenByDescending(d => d.Remaining)
                    .ThenBy(d => d.Disk.DiskId, StringComparer.Ordinal)
                    .FirstOrDefault();
                if (disk is null)
                {
                    why = $"fault domain '{domain.Name}' has no disk with {ByteSize.Format(length)} free " +
                          $"(largest free: {ByteSize.Format(disks.Count == 0 ? 0 : disks.Max(d => d.Remaining))})";
                    placed = [];
                    return false;
                }

                disk.Remaining -= length;
                usedByReplica.Add(disk.Disk.DiskId);
                placed.Add(new ComponentPlacement(
                    DeriveId(objectId, ComponentRole.Data, replica, stripe, piece), ComponentRole.Data, replica, stripe,
                    offset, length, disk.Disk.HostId, domain.Name, disk.Disk.DiskId, 1, reserve));
            }
        }

        // Commit the plan to the shared view so later replicas and witnesses see the space as taken.
        foreach (var planned in disks)
        {
            domain.Disks.Single(d => d.Disk.DiskId == planned.Disk.DiskId).Remaining = planned.Remaining;
        }

        return true;
    }

    private static List<Domain> BuildDomains(ClusterTopology topology)
    {
        var hosts = topology.Hosts.Where(h => h.Usable).ToDictionary(h => h.HostId, StringComparer.Ordinal);
        return topology.Disks
            .Where(d => d.Usable && d.FreeBytes > 0 && hosts.ContainsKey(d.HostId))
            .GroupBy(d => hosts[d.HostId].EffectiveFaultDomain, StringComparer.Ordinal)
            .Select(g => new Domain(
                g.Key,
                g.OrderBy(d => d.DiskId, StringComparer.Ordinal).Select(d => new DiskPlan(d) { Remaining = d.FreeBytes }).ToList()))
            .ToList();
    }

    /// <summary>Component ids derive from the object id and position, so replanning the same input is idempotent.</summary>
    private static Guid DeriveId(Guid objectId, ComponentRole role, int replica, int stripe, int piece)
    {
        Span<byte> input = stackalloc byte[32];
        objectId.TryWriteBytes(input);
        BinaryPrimitives.WriteInt32LittleEndian(input[16..], (int)role);
        BinaryPrimitives.WriteInt32LittleEndian(input[20..], replica);
        BinaryPrimitives.WriteInt32LittleEndian(input[24..], stripe);
        BinaryPrimitives.WriteInt32LittleEndian(input[28..], piece);
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(input, hash);
        hash[7] = (byte)((hash[7] & 0x0F) | 0x80); // mark as a name-based (v8) id
        return new Guid(hash[..16]);
    }

    private sealed class DiskPlan(DiskCandidate disk)
    {
        public DiskCandidate Disk { get; } = disk;

        public long Remaining { get; set; }
    }

    private sealed record Domain(string Name, List<DiskPlan> Disks)
    {
        public long FreeBytes => Disks.Sum(d => d.Remaining);
    }

    /// <summary>How an object of a given size cuts into stripes and bounded components.</summary>
    private readonly record struct StripeShape(int StripeWidth, long StripeLength, int PiecesPerStripe, long PieceLength)
    {
        public int ComponentsPerReplica => StripeWidth * PiecesPerStripe;

        public static StripeShape For(long sizeBytes, int stripeWidth, PlacementOptions options)
        {
            long unit = options.StripeUnitBytes;
            var units = (sizeBytes + unit - 1) / unit;
            var unitsPerStripe = (units + stripeWidth - 1) / stripeWidth;

            // A single stripe need not round up to a whole unit: it holds exactly the object.
            var stripeLength = stripeWidth == 1 ? sizeBytes : unitsPerStripe * unit;
            var maxPiece = Math.Max(unit, options.MaxComponentBytes / unit * unit);
            var pieces = (int)((stripeLength + maxPiece - 1) / maxPiece);
            var pieceLength = (stripeLength + pieces - 1) / pieces;
            pieceLength = (pieceLength + unit - 1) / unit * unit;
            pieces = (int)((stripeLength + pieceLength - 1) / pieceLength);
            return new StripeShape(stripeWidth, stripeLength, pieces, pieceLength);
        }

        public (long Offset, long Length) Piece(int index)
        {
            var offset = index * PieceLength;
            return (offset, Math.Min(PieceLength, StripeLength - offset));
        }
    }
}
