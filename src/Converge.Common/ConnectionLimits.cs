namespace Converge.Common;

/// <summary>
/// How many connections a <see cref="SocketListener"/> serves at once, in total and per client address. A connection
/// beyond either limit is closed as soon as it is accepted, so a flood costs an accept and a close, never a session.
/// </summary>
public sealed record ConnectionLimits
{
    /// <summary>1024 per listener, 64 per client address.</summary>
    public static ConnectionLimits Default { get; } = new();

    /// <summary>Connections served at once on the listener (at least 1).</summary>
    public int MaxConnections { get; init; } = 1024;

    /// <summary>Connections served at once from one client IP address (at least 1).</summary>
    public int MaxConnectionsPerAddress { get; init; } = 64;

    /// <summary>Throws <see cref="ArgumentException"/> with an operator-readable message when a value is out of range.</summary>
    public void Validate()
    {
        if (MaxConnections < 1)
        {
            throw new ArgumentException($"the maximum connections per listener is {MaxConnections}; it must be at least 1");
        }

        if (MaxConnectionsPerAddress < 1)
        {
            throw new ArgumentException($"the maximum connections per client address is {MaxConnectionsPerAddress}; it must be at least 1");
        }
    }
}
