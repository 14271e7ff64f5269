using System.Net;
using System.Net.Sockets;

namespace Converge.TestKit;

/// <summary>Loopback TCP ports nobody is listening on right now: bind port 0, read the port, close.</summary>
public static class FreePort
{
    public static int Allocate()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
