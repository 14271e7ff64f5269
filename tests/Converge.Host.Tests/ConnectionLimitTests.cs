using System.Net;
using System.Net.Sockets;

namespace Converge.Host.Tests;

/// <summary>
/// Connection floods against a real host's NBD port (loopback only): the connections over the per-address and
/// per-listener limits are closed at once, and the other clients' I/O goes on. The flood comes from other loopback
/// addresses (127.0.0.2, ...), so the well-behaved client on 127.0.0.1 counts as another address.
/// </summary>
public sealed class ConnectionLimitTests
{
    private static readonly TimeSpan FloodTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Flood_from_one_address_is_capped_per_address_and_other_clients_keep_working()
    {
        using var dir = new TempDir("converge-flood");
        await using var host = await HostProcess.StartAsync(dir.Path, "1GiB");
        var vdisk = await host.Api.CreateVirtualDiskAsync("flood", "16MiB");
        var sockets = new List<Socket>();
        try
        {
            // 300 idle connections from 127.0.0.2: the default allows 64 per client address.
            var (greeted, closed) = await FloodAsync(host.NbdPort, IPAddress.Parse("127.0.0.2"), 300, sockets);
            Assert.Equal(64, greeted);
            Assert.Equal(236, closed);

            // Another client's I/O works while the flood holds its 64 connections.
            Check.Succeeded(await NbdClients.QemuIoAsync(host.NbdUri(vdisk.Name), ["write -P 0x5a 0 1M", "read -P 0x5a 0 1M"]), host);
            Assert.True(host.IsRunning);
            Assert.Contains("over the connection limits", host.ReadLog(), StringComparison.Ordinal);
        }
        finally
        {
            CloseAll(sockets);
        }

        // The flood's slots come back when it goes: a new connection from the flooding address is served again.
        await PollAsync(async () => await TryGreetingAsync(host.NbdPort, IPAddress.Parse("127.0.0.2")), "a connection from 127.0.0.2 is served again");
    }

    [Fact]
    public async Task Flood_from_many_addresses_is_capped_per_listener_and_the_host_recovers()
    {
        using var dir = new TempDir("converge-flood");
        await using var host = await HostProcess.StartAsync(
            dir.Path, [new DiskSpec(Path.Combine(dir.Path, "d1.img"), "1GiB")], null, ["--max-connections", "100"]);
        var vdisk = await host.Api.CreateVirtualDiskAsync("flood", "16MiB");
        var sockets = new List<Socket>();
        try
        {
            var greeted = 0;
            var closed = 0;
            for (var i = 2; i <= 5; i++)
            {
                var (g, c) = await FloodAsync(host.NbdPort, IPAddress.Parse($"127.0.0.{i}"), 50, sockets);
                greeted += g;
                closed += c;
            }

            Assert.Equal(100, greeted);
            Assert.Equal(100, closed);

            // Full: a newcomer is closed at once, with nothing sent (not left hanging).
            Assert.False(await TryGreetingAsync(host.NbdPort, IPAddress.Loopback));
            Assert.True(host.IsRunning);
        }
        finally
        {
            CloseAll(sockets);
        }

        var uri = host.NbdUri(vdisk.Name);
        await PollAsync(async () => (await NbdClients.QemuIoAsync(uri, ["write -P 0x11 0 64k", "read -P 0x11 0 64k"])).ExitCode == 0, "qemu-io works again after the flood");
    }

    /// <summary>Opens <paramref name="count"/> connections from <paramref name="source"/>; counts those greeted and those closed without a greeting.</summary>
    private static async Task<(int Greeted, int Closed)> FloodAsync(int port, IPAddress source, int count, List<Socket> keep)
    {
        using var cts = new CancellationTokenSource(FloodTimeout);
        var greeted = 0;
        var closed = 0;
        var connected = new List<Socket>();
        for (var i = 0; i < count; i++)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            keep.Add(socket);
            socket.Bind(new IPEndPoint(source, 0));
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), cts.Token);
                connected.Add(socket);
            }
            catch (SocketException)
            {
                // Reset by the server before the connect was reported: refused.
                closed++;
            }
        }

        // Every accepted connection gets the 18-byte greeting at once; a refused one is reset without a byte.
        foreach (var socket in connected)
        {
            if (await ReadGreetingAsync(socket, cts.Token))
            {
                greeted++;
            }
            else
            {
                closed++;
            }
        }

        return (greeted, closed);
    }

    private static async Task<bool> ReadGreetingAsync(Socket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[18];
        var read = 0;
        try
        {
            while (read < buffer.Length)
            {
                var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, cancellationToken);
                if (n == 0)
                {
                    return false;
                }

                read += n;
            }

            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static async Task<bool> TryGreetingAsync(int port, IPAddress source)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(source, 0));
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), cts.Token);
        }
        catch (SocketException)
        {
            return false;
        }

        return await ReadGreetingAsync(socket, cts.Token);
    }

    private static async Task PollAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(200);
        }
    }

    private static void CloseAll(List<Socket> sockets)
    {
        foreach (var socket in sockets)
        {
            socket.Dispose();
        }

        sockets.Clear();
    }
}
