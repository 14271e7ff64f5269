namespace Converge.Metadata;

/// <summary>
/// One management API token: its role and a salted hash of its secret (<see cref="ApiTokenHashing"/>); the secret itself
/// is shown once, at creation, and kept nowhere. The same record lives in the Raft metadata (cluster mode) and in a
/// standalone host's <c>api-tokens.json</c>.
/// </summary>
/// <param name="Id">12 lower-case hex characters; what <c>converge token revoke</c> takes.</param>
/// <param name="Role"><see cref="ApiTokenRoles.Admin"/> or <see cref="ApiTokenRoles.ReadOnly"/>.</param>
/// <param name="Salt">Random per token (hex). Empty only for the unsalted hash of a cluster founded before salts (<see cref="ClusterInfo.AdminTokenHash"/>).</param>
/// <param name="Hash">Lower-case hex, see <see cref="ApiTokenHashing.Hash"/>.</param>
public sealed record ApiTokenRecord(string Id, string Name, string Role, string Salt, string Hash, DateTimeOffset CreatedAt);
