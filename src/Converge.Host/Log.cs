
namespace Converge.Host;

/// <summary>Every log line of the host, one event each.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "starting host {Name} (id {Id}) with data directory {DataDirectory}")]
    public static partial void HostStarting(ILogger logger, string name, Guid id, string dataDirectory);

    [LoggerMessage(2, LogLevel.Information, "disk {Path} is online: id {Id}, capacity {Capacity}, {Components} virtual disk(s)")]
    public static partial void DiskOpened(ILogger logger, string path, Guid id, string capacity, int components);

    [LoggerMessage(3, LogLevel.Information, "formatted new disk {Path}: id {Id}, capacity {Capacity}")]
    public static partial void DiskFormatted(ILogger logger, string path, Guid id, string capacity);

    [LoggerMessage(4, LogLevel.Error, "disk {Path} is {State}: {Reason}; its virtual disks are unavailable (it is never reformatted)")]
    public static partial void DiskUnavailable(ILogger logger, string path, string state, string reason);

    [LoggerMessage(5, LogLevel.Warning, "virtual disk {Name} is unavailable: its disk {Path} is {State}")]
    public static partial void VirtualDiskUnavailable(ILogger logger, string name, string path, string state);

    [LoggerMessage(6, LogLevel.Warning, "virtual disk {Name} on {Path} is ignored: a virtual disk of that name is already on {OtherPath}")]
    public static partial void DuplicateVirtualDisk(ILogger logger, string name, string path, string otherPath);

    [LoggerMessage(7, LogLevel.Warning, "virtual disk {Name} was recorded on {Path} but the disk no longer holds it; forgetting it")]
    public static partial void CatalogEntryDropped(ILogger logger, string name, string path);

    [LoggerMessage(8, LogLevel.Information, "listening NBD on {Nbd}, API on {Api}")]
    public static partial void Listening(ILogger logger, string nbd, string api);

    [LoggerMessage(9, LogLevel.Information, "ready")]
    public static partial void Ready(ILogger logger);

    [LoggerMessage(10, LogLevel.Critical, "cannot start: {Reason}")]
    public static partial void StartFailed(ILogger logger, string reason);

    [LoggerMessage(11, LogLevel.Information, "created virtual disk {Name} ({Size}) on {Path}")]
    public static partial void VirtualDiskCreated(ILogger logger, string name, string size, string path);

    [LoggerMessage(12, LogLevel.Information, "resized virtual disk {Name} from {OldSize} to {NewSize}")]
    public static partial void VirtualDiskResized(ILogger logger, string name, string oldSize, string newSize);

    [LoggerMessage(13, LogLevel.Information, "deleted virtual disk {Name} from {Path}")]
    public static partial void VirtualDiskDeleted(ILogger logger, string name, string path);

    [LoggerMessage(14, LogLevel.Information, "added disk {Path} (id {Id})")]
    public static partial void DiskAdded(ILogger logger, string path, Guid id);

    [LoggerMessage(15, LogLevel.Information, "stopping: no new connections; finishing in-flight requests (connections still open after {Seconds} s are cut)")]
    public static partial void Stopping(ILogger logger, double seconds);

    [LoggerMessage(16, LogLevel.Information, "disk {Path} flushed, checkpointed and closed")]
    public static partial void DiskClosed(ILogger logger, string path);

    [LoggerMessage(17, LogLevel.Error, "disk {Path} could not be flushed and closed cleanly: {Reason}")]
    public static partial void DiskCloseFailed(ILogger logger, Exception exception, string path, string reason);

    [LoggerMessage(18, LogLevel.Information, "stopped")]
    public static partial void Stopped(ILogger logger);

    [LoggerMessage(19, LogLevel.Error, "{Method} {Path} failed: {Reason}")]
    public static partial void RequestFailed(ILogger logger, Exception exception, string method, string path, string reason);

    [LoggerMessage(100, LogLevel.Warning, "cannot follow the cluster metadata through {Member}: {Reason}")]
    public static partial void MetadataFollowFailed(ILogger logger, string member, string reason);

    [LoggerMessage(101, LogLevel.Information, "cluster mode: {Role} of cluster {ClusterId}; peer port {Peer}, Raft {Raft}")]
    public static partial void ClusterRole(ILogger logger, string role, string clusterId, string peer, string raft);

    [LoggerMessage(102, LogLevel.Information, "joining the cluster through {Seed}")]
    public static partial void Joining(ILogger logger, string seed);

    [LoggerMessage(103, LogLevel.Warning, "cluster join through {Seed} failed, retrying: {Reason}")]
    public static partial void JoinRetry(ILogger logger, string seed, string reason);

    [LoggerMessage(104, LogLevel.Information, "coordinating virtual disk {Name} (lease epoch {Epoch}, generation {Generation})")]
    public static partial void Coordinating(ILogger logger, string name, long epoch, long generation);

    [LoggerMessage(105, LogLevel.Warning, "lease renewal of virtual disk {Name} failed: {Reason}")]
    public static partial void LeaseRenewalFailed(ILogger logger, string name, string reason);

    [LoggerMessage(106, LogLevel.Information, "stopped coordinating virtual disk {Name}: {Reason}")]
    public static partial void CoordinatorStopped(ILogger logger, string name, string reason);

    [LoggerMessage(107, LogLevel.Warning, "cluster registration not done yet, retrying: {Reason}")]
    public static partial void RegistrationRetry(ILogger logger, string reason);

    [LoggerMessage(108, LogLevel.Information, "cluster virtual disk {Name} {Action}: {Detail}")]
    public static partial void ClusterVirtualDisk(ILogger logger, string name, string action, string detail);

    [LoggerMessage(109, LogLevel.Warning, "cleanup after a failed operation on {Name} failed: {Reason}")]
    public static partial void CleanupFailed(ILogger logger, string name, string reason);

    [LoggerMessage(110, LogLevel.Warning, "virtual disk {Name}: component {ComponentId} marked {State} (generation {Generation}): {Reason}")]
    public static partial void ComponentStateChanged(ILogger logger, string name, string componentId, string state, long generation, string reason);

    [LoggerMessage(111, LogLevel.Information, "virtual disk {Name}: {Kind} of component {ComponentId} finished: {Bytes} bytes in {Seconds:0.0} s ({ContendedBytes} of them paced for busy clients; {CarriedWrites} client writes left to the copy)")]
    public static partial void CopyFinished(ILogger logger, string name, string kind, string componentId, long bytes, double seconds, long contendedBytes, long carriedWrites);

    [LoggerMessage(112, LogLevel.Warning, "virtual disk {Name}: {Kind} of component {ComponentId} stopped: {Reason}")]
    public static partial void CopyFailed(ILogger logger, string name, string kind, string componentId, string reason);

    [LoggerMessage(113, LogLevel.Warning, "host {HostName} ({HostId}) is unreachable for {Seconds:0.0} s")]
    public static partial void HostUnreachable(ILogger logger, string hostName, string hostId, double seconds);

    [LoggerMessage(114, LogLevel.Information, "host {HostName} ({HostId}) is reachable again")]
    public static partial void HostReachable(ILogger logger, string hostName, string hostId);

    [LoggerMessage(115, LogLevel.Warning, "virtual disk {Name}: checksum error on component {ComponentId} repaired from another replica ({Bytes} bytes)")]
    public static partial void Repaired(ILogger logger, string name, string componentId, long bytes);

    [LoggerMessage(116, LogLevel.Information, "virtual disk {Name}: moving component {ComponentId} to {NewComponentId} on host {HostId} disk {DiskId} (generation {Generation}): {Reason}")]
    public static partial void MoveStarted(ILogger logger, string name, string componentId, string newComponentId, string hostId, string diskId, long generation, string reason);

    [LoggerMessage(117, LogLevel.Information, "virtual disk {Name}: move of component {ComponentId} to {NewComponentId} {Outcome} (generation {Generation})")]
    public static partial void MoveEnded(ILogger logger, string name, string componentId, string newComponentId, string outcome, long generation);

    [LoggerMessage(118, LogLevel.Information, "{Kind} {Target}: {Detail}")]
    public static partial void Decommission(ILogger logger, string kind, string target, string detail);

    [LoggerMessage(119, LogLevel.Information, "rebalance: {Detail}")]
    public static partial void Rebalance(ILogger logger, string detail);

    [LoggerMessage(140, LogLevel.Information, "cluster identity: CA {CaFingerprint}, this host's certificate {Serial}; host RPC (mutual TLS) on {Rpc}")]
    public static partial void ClusterIdentity(ILogger logger, string caFingerprint, string serial, string rpc);

    [LoggerMessage(141, LogLevel.Information, "issued a certificate ({Serial}) to joining host {Name} for join token {TokenId}")]
    public static partial void CertificateIssued(ILogger logger, string serial, string name, string tokenId);

    [LoggerMessage(142, LogLevel.Warning, "refused a join certificate for host {Name}: {Reason}")]
    public static partial void JoinRefused(ILogger logger, string name, string reason);

    [LoggerMessage(143, LogLevel.Critical, "{Reason}")]
    public static partial void ClusterIdentityMismatch(ILogger logger, string reason);

    [LoggerMessage(144, LogLevel.Warning, "host RPC request {Path} from a certificate that is no longer valid refused: {Reason}")]
    public static partial void RpcCertificateRefused(ILogger logger, string path, string reason);
}
