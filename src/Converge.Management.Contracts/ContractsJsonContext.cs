using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Converge.Management.Contracts;

/// <summary>Source-generated serialization of every DTO: camelCase names, case-insensitive reads.</summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(HealthInfo))]
[JsonSerializable(typeof(HostInfo))]
[JsonSerializable(typeof(DiskInfo))]
[JsonSerializable(typeof(IReadOnlyList<DiskInfo>))]
[JsonSerializable(typeof(VirtualDiskInfo))]
[JsonSerializable(typeof(IReadOnlyList<VirtualDiskInfo>))]
[JsonSerializable(typeof(CreateVirtualDiskRequest))]
[JsonSerializable(typeof(ResizeVirtualDiskRequest))]
[JsonSerializable(typeof(AddDiskRequest))]
[JsonSerializable(typeof(ProblemInfo))]
[JsonSerializable(typeof(StatusInfo))]
[JsonSerializable(typeof(ClusterFile))]
[JsonSerializable(typeof(ComponentInfo))]
[JsonSerializable(typeof(PolicyInfo))]
[JsonSerializable(typeof(IReadOnlyList<PolicyInfo>))]
[JsonSerializable(typeof(ClusterHostInfo))]
[JsonSerializable(typeof(IReadOnlyList<ClusterHostInfo>))]
[JsonSerializable(typeof(ClusterDiskInfo))]
[JsonSerializable(typeof(ClusterStatusInfo))]
[JsonSerializable(typeof(JoinRequest))]
[JsonSerializable(typeof(JoinResponse))]
[JsonSerializable(typeof(CreateJoinTokenRequest))]
[JsonSerializable(typeof(JoinTokenInfo))]
[JsonSerializable(typeof(JoinCertificateRequest))]
[JsonSerializable(typeof(JoinCertificateResponse))]
[JsonSerializable(typeof(RevokeHostInfo))]
[JsonSerializable(typeof(ComponentDigestInfo))]
[JsonSerializable(typeof(MaintenanceRequest))]
[JsonSerializable(typeof(DecommissionInfo))]
[JsonSerializable(typeof(RebalanceRequest))]
[JsonSerializable(typeof(RebalanceInfo))]
[JsonSerializable(typeof(SetPolicyRequest))]
[JsonSerializable(typeof(IReadOnlyList<FaultDomainInfo>))]
[JsonSerializable(typeof(IReadOnlyList<ComplianceInfo>))]
[JsonSerializable(typeof(IReadOnlyList<EventInfo>))]
[JsonSerializable(typeof(HealthReport))]
[JsonSerializable(typeof(ResyncReport))]
[JsonSerializable(typeof(HostResyncState))]
[JsonSerializable(typeof(PerfReport))]
[JsonSerializable(typeof(HostPerfInfo))]
[JsonSerializable(typeof(IReadOnlyList<ComponentInfo>))]
[JsonSerializable(typeof(ApiTokenInfo))]
[JsonSerializable(typeof(IReadOnlyList<ApiTokenInfo>))]
[JsonSerializable(typeof(CreateApiTokenRequest))]
[JsonSerializable(typeof(CreatedApiTokenInfo))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(long))]
public sealed partial class ContractsJsonContext : JsonSerializerContext
{
    private static ContractsJsonContext? indented;

    /// <summary>The same contract, indented and without needless escaping: for files people read and for <c>--json</c> output.</summary>
    public static ContractsJsonContext Indented =>
        indented ??= new ContractsJsonContext(new JsonSerializerOptions(JsonSerializerDefaults.Web)
        {
            WriteIndented = true,
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        });
}
