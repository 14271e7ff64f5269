using System.Text.Json.Serialization;
using Converge.Placement;

namespace Converge.Metadata;

/// <summary>
/// A change to the cluster state. Commands are deterministic data: times and ids travel inside them, so every
/// replica applies them alike. <see cref="CommandId"/> deduplicates retried proposals.
/// </summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "$type")]
[JsonDerivedType(typeof(InitializeCluster), "initializeCluster")]
[JsonDerivedType(typeof(RegisterHost), "registerHost")]
[JsonDerivedType(typeof(UpdateHost), "updateHost")]
[JsonDerivedType(typeof(RegisterDisk), "registerDisk")]
[JsonDerivedType(typeof(UpdateDiskState), "updateDiskState")]
[JsonDerivedType(typeof(PutPolicy), "putPolicy")]
[JsonDerivedType(typeof(DeletePolicy), "deletePolicy")]
[JsonDerivedType(typeof(CreateVirtualDisk), "createVirtualDisk")]
[JsonDerivedType(typeof(ResizeVirtualDisk), "resizeVirtualDisk")]
[JsonDerivedType(typeof(DeleteVirtualDisk), "deleteVirtualDisk")]
[JsonDerivedType(typeof(AcquireLease), "acquireLease")]
[JsonDerivedType(typeof(ReleaseLease), "releaseLease")]
[JsonDerivedType(typeof(SetComponentState), "setComponentState")]
[JsonDerivedType(typeof(ReplaceComponent), "replaceComponent")]
[JsonDerivedType(typeof(SetVirtualDiskPolicy), "setVirtualDiskPolicy")]
[JsonDerivedType(typeof(BeginMove), "beginMove")]
[JsonDerivedType(typeof(CompleteMove), "completeMove")]
[JsonDerivedType(typeof(CancelMove), "cancelMove")]
[JsonDerivedType(typeof(SetRebalance), "setRebalance")]
[JsonDerivedType(typeof(CreateApiToken), "createApiToken")]
[JsonDerivedType(typeof(RevokeApiToken), "revokeApiToken")]
[JsonDerivedType(typeof(CreateJoinToken), "createJoinToken")]
[JsonDerivedType(typeof(ConsumeJoinToken), "consumeJoinToken")]
[JsonDerivedType(typeof(RecordCertificate), "recordCertificate")]
[JsonDerivedType(typeof(RevokeHostCertificates), "revokeHostCertificates")]
public abstract record MetadataCommand(Guid CommandId);

/// <summary>Creates the cluster record and its default policy. Accepted once.</summary>
/// <param name="AdminTokenHash">Unsalted SHA-256 (hex) of the founder's admin token; applying salts it into <see cref="ClusterState.ApiTokens"/>.</param>
/// <param name="CaCertificatePem">The founder's cluster CA certificate (public); <paramref name="CaFingerprint"/> its SHA-256.</param>
public sealed record InitializeCluster(
    Guid CommandId, string ClusterId, string Name, DateTimeOffset CreatedAt, StoragePolicy DefaultPolicy, int VoterTarget,
    string? AdminTokenHash = null, string? CaCertificatePem = null, string? CaFingerprint = null)
    : MetadataCommand(CommandId);

public sealed record RegisterHost(
    Guid CommandId, string HostId, string Name, string? FaultDomain, HostEndpoints Endpoints, bool Voter, DateTimeOffset JoinedAt)
    : MetadataCommand(CommandId);

/// <summary>
/// Changes the given fields of a host; null fields stay as they are. A state other than maintenance clears the
/// maintenance mode; entering maintenance records <see cref="MaintenanceMode"/> (default ensure-accessibility).
/// </summary>
public sealed record UpdateHost(
    Guid CommandId, string HostId, HostState? State = null, HostEndpoints? Endpoints = null, bool? Voter = null,
    string? FaultDomain = null, string? MaintenanceMode = null)
    : MetadataCommand(CommandId);

public sealed record RegisterDisk(Guid CommandId, string DiskId, string HostId, string Path, long CapacityBytes)
    : MetadataCommand(CommandId);

public sealed record UpdateDiskState(Guid CommandId, string DiskId, DiskState State) : MetadataCommand(CommandId);

/// <summary>Creates or replaces a policy.</summary>
public sealed record PutPolicy(Guid CommandId, StoragePolicy Policy) : MetadataCommand(CommandId);

public sealed record DeletePolicy(Guid CommandId, string Name) : MetadataCommand(CommandId);

/// <summary>Creates a virtual disk with a layout computed beforehand (placement is not run inside the state machine).</summary>
public sealed record CreateVirtualDisk(
    Guid CommandId, string Name, string PolicyName, ObjectLayout Layout, DateTimeOffset CreatedAt)
    : MetadataCommand(CommandId);

/// <summary>Grows a virtual disk to the size of <see cref="Layout"/> (compare-and-set on the generation).</summary>
public sealed record ResizeVirtualDisk(Guid CommandId, string VirtualDiskId, ObjectLayout Layout, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>Deletes a virtual disk unless a coordinator holds an unexpired lease on it at <see cref="Now"/>.</summary>
public sealed record DeleteVirtualDisk(Guid CommandId, string VirtualDiskId, DateTimeOffset Now) : MetadataCommand(CommandId);

/// <summary>
/// Takes (<see cref="RequestedEpoch"/> = current epoch + 1) or renews (<see cref="RequestedEpoch"/> = current epoch,
/// same host) the coordinator lease of a virtual disk, valid until <see cref="Now"/> + <see cref="Duration"/>.
/// A new epoch is granted only when the lease is free or expired at <see cref="Now"/>.
/// </summary>
public sealed record AcquireLease(
    Guid CommandId, string VirtualDiskId, string HostId, long RequestedEpoch, DateTimeOffset Now, TimeSpan Duration)
    : MetadataCommand(CommandId);

public sealed record ReleaseLease(Guid CommandId, string VirtualDiskId, string HostId, long Epoch) : MetadataCommand(CommandId);

/// <summary>Sets one component's state if the virtual disk is still at <see cref="ExpectedGeneration"/>; bumps it.</summary>
public sealed record SetComponentState(
    Guid CommandId, string VirtualDiskId, Guid ComponentId, ComponentState State, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>
/// Rebuild: replaces a failed component by <see cref="NewComponent"/> (same replica, stripe range and votes) if the
/// virtual disk is still at <see cref="ExpectedGeneration"/>. The new component starts <c>Stale</c> (in the write set,
/// filled by a full copy); the old one leaves the layout. Bumps the generation.
/// </summary>
public sealed record ReplaceComponent(
    Guid CommandId, string VirtualDiskId, Guid OldComponentId, ComponentPlacement NewComponent, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>
/// Points a virtual disk at another policy whose layout shape (method, failures to tolerate, stripe width) is the same
/// as its current one, if the virtual disk is still at <see cref="ExpectedGeneration"/>. The layout does not change, so
/// the generation is not bumped.
/// </summary>
public sealed record SetVirtualDiskPolicy(Guid CommandId, string VirtualDiskId, string PolicyName, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>
/// Starts a make-before-break move of an active component to <see cref="NewComponent"/> (same role, replica, stripe
/// range and votes, under a new id) if the virtual disk is still at <see cref="ExpectedGeneration"/> and moves nothing
/// else. The new component joins beside the old one as <c>Stale</c> (written, not read, filled by a full copy) with no
/// votes (<see cref="Placement.ComponentPlacement.Replaces"/> names the old one); the old one keeps serving. Bumps the
/// generation.
/// </summary>
public sealed record BeginMove(
    Guid CommandId, string VirtualDiskId, Guid OldComponentId, ComponentPlacement NewComponent, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>
/// Completes a move once its new component is active: the old component leaves the layout and the new one takes its
/// place and votes. Compare-and-set on the generation; bumps it.
/// </summary>
public sealed record CompleteMove(Guid CommandId, string VirtualDiskId, Guid NewComponentId, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>Abandons a move: its new component leaves the layout (it failed, or its target went away). Bumps the generation.</summary>
public sealed record CancelMove(Guid CommandId, string VirtualDiskId, Guid NewComponentId, long ExpectedGeneration)
    : MetadataCommand(CommandId);

/// <summary>
/// Starts (<see cref="Requested"/>) or ends a cluster rebalance: while requested, the metadata leader keeps moving
/// components, one at a time, until the rebalance plan is empty.
/// </summary>
public sealed record SetRebalance(Guid CommandId, bool Requested, DateTimeOffset At, double ThresholdPercent = 10)
    : MetadataCommand(CommandId);
