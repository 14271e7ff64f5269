namespace Converge.Nbd;

/// <summary>How a client's identity was established.</summary>
public enum NbdIdentityKind
{
    /// <summary>The subject common name (CN) of a client certificate that chained to the configured CA.</summary>
    Certificate,

    /// <summary>A TLS-PSK user name (not offered yet: .NET's SslStream has no PSK API).</summary>
    PskUser,
}

/// <summary>Who is on the other end of an NBD connection, as TLS proved it; per-export access lists match <see cref="Name"/>.</summary>
public sealed record NbdClientIdentity(string Name, NbdIdentityKind Kind)
{
    public override string ToString() => Kind == NbdIdentityKind.Certificate ? $"certificate CN={Name}" : $"PSK user {Name}";
}
