namespace Converge.Nbd;

/// <summary>Per-export access control: decides, during option haggling, whether a client may see and attach an export.</summary>
public interface INbdExportAuthorizer
{
    /// <summary>
    /// Whether <paramref name="client"/> may use <paramref name="exportName"/>. <paramref name="client"/> is null for a
    /// client that proved no identity (plain connection, or TLS without a client certificate).
    /// </summary>
    bool IsAllowed(string exportName, NbdClientIdentity? client);
}
