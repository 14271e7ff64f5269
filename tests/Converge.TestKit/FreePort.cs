using System.Net;
using System.Net.Sockets;

namespace Converge.TestKit;

/// <summary>
/// Loopback TCP ports nobody is listening on right now, for a process the test starts (or restarts) later.
/// </summary>
/// <remarks>
/// Taken from below the kernel's ephemeral range (<c>ip_local_port_range</c>), never from it: a port from a port-0 bind
/// is back in the ephemeral pool once closed, and any outgoing connection of the machine (the hosts' own peer, Raft and
/// HTTP clients among them) could take it before the host binds it. That failed a host start with "Address already in
/// use", and it could also take the fixed port of a host that was killed and is about to be restarted. No port is
/// handed out twice in one test process.
/// </remarks>
public static class FreePort
{
    private const int LowestPort = 10000;
    private static readonly Lock Gate = new();
    private static readonly HashSet<int> Given = [];
    private static readonly (int Low, int High) Range = NonEphemeralRange();

    public static int Allocate()
    {
        lock (Gate)
        {
            if (Range.High - Range.Low >= 1000)
            {
                for (var attempt = 0; attempt < 1000; attempt++)
                {
                    var port = Random.Shared.Next(Range.Low, Range.High);
                    if (!Given.Contains(port) && CanListen(port))
                    {
                        Given.Add(port);
                        return port;
                    }
                }
            }

            // No room below the ephemeral range (or all of it taken): what the kernel picks.
            while (true)
            {
                using var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                listener.Stop();
                if (Given.Add(port))
                {
                    return port;
                }
            }
        }
    }

    private static bool CanListen(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            listener.Stop();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>[low, high): the ports below the ephemeral range, or an empty range when it cannot be read.</summary>
    private static (int Low, int High) NonEphemeralRange()
    {
        try
        {
            var fields = File.ReadAllText("/proc/sys/net/ipv4/ip_local_port_range").Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            var ephemeralLow = int.Parse(fields[0], System.Globalization.CultureInfo.InvariantCulture);
            return (LowestPort, Math.Max(LowestPort, ephemeralLow));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return (0, 0);
        }
    }
}
