using Converge.Common;

namespace Converge.Placement;

public enum FailureToleranceMethod
{
    /// <summary>RAID-1: FTT+1 full copies.</summary>
    Mirroring,

    /// <summary>RAID-5 (FTT=1, 3 data + 1 parity). Reserved: placement refuses it until the erasure-coded I/O path exists.</summary>
    Raid5,

    /// <summary>RAID-6 (FTT=2, 4 data + 2 parity). Reserved, as <see cref="Raid5"/>.</summary>
    Raid6,
}

/// <summary>The rules a virtual disk is placed and served by.</summary>
public sealed record StoragePolicy
{
    public const int MaxFailuresToTolerate = 3;
    public const int MaxStripeWidth = 12;

    public static readonly StoragePolicy Default = new() { Name = "default" };

    public required string Name { get; init; }

    /// <summary>Host (fault domain) or disk failures the object survives without losing data or access.</summary>
    public int FailuresToTolerate { get; init; } = 1;

    public FailureToleranceMethod Method { get; init; } = FailureToleranceMethod.Mirroring;

    /// <summary>Components (on distinct disks where possible) each replica is striped over.</summary>
    public int StripeWidth { get; init; } = 1;

    /// <summary>Share of the size reserved up front: 0 is thin, 100 is thick.</summary>
    public int ObjectSpaceReservationPercent { get; init; }

    public bool ChecksumEnabled { get; init; } = true;

    /// <summary>Per-object IOPS limit; 0 means unlimited.</summary>
    public int IopsLimit { get; init; }

    /// <summary>Rule-level checks that need no cluster: each failure says which rule and why.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (!NameRules.IsValid(Name, out var nameError))
        {
            errors.Add($"policy {nameError}");
        }

        if (FailuresToTolerate is < 0 or > MaxFailuresToTolerate)
        {
            errors.Add($"failures to tolerate must be 0 to {MaxFailuresToTolerate}; got {FailuresToTolerate}");
        }

        if (StripeWidth is < 1 or > MaxStripeWidth)
        {
            errors.Add($"stripe width must be 1 to {MaxStripeWidth}; got {StripeWidth}");
        }

        if (ObjectSpaceReservationPercent is < 0 or > 100)
        {
            errors.Add($"object space reservation must be 0 to 100 %; got {ObjectSpaceReservationPercent}");
        }

        if (IopsLimit < 0)
        {
            errors.Add($"IOPS limit must be 0 (unlimited) or positive; got {IopsLimit}");
        }

        if (Method == FailureToleranceMethod.Raid5 && FailuresToTolerate != 1)
        {
            errors.Add($"RAID-5 tolerates exactly 1 failure; got FTT={FailuresToTolerate}");
        }

        if (Method == FailureToleranceMethod.Raid6 && FailuresToTolerate != 2)
        {
            errors.Add($"RAID-6 tolerates exactly 2 failures; got FTT={FailuresToTolerate}");
        }

        return errors;
    }

    /// <summary>Fault domains a layout of this policy needs: replicas plus enough witnesses for a strict majority.</summary>
    public int RequiredFaultDomains => Method switch
    {
        FailureToleranceMethod.Raid5 => 4,
        FailureToleranceMethod.Raid6 => 6,
        _ => (2 * FailuresToTolerate) + 1,
    };

    public string MethodLabel => Method switch
    {
        FailureToleranceMethod.Raid5 => "RAID-5",
        FailureToleranceMethod.Raid6 => "RAID-6",
        _ => "RAID-1",
    };
}
