using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

namespace Converge.Nbd.Tests;

/// <summary><see cref="NbdListener"/> start and stop: binding errors, and in-flight requests answered on stop.</summary>
public sealed class ListenerTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(10);
    private readonly TestCatalog _catalog = new();
    private readonly TestVolume _volume;

    public ListenerTests()
    {
        _volume = _catalog.Add("disk", 1 << 20);
    }

    public void Dispose() => _volume.Dispose();

    [Fact]
    public async Task Stop_stops_reading_but_answers_the_requests_in_flight_then_closes()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _volume.WriteGate = gate.Task;
        await using var listener = new NbdListener(new IPEndPoint(IPAddress.Loopback, 0), _catalog, new NbdServerOptions(), NullLogger<NbdListener>.Instance);
        await listener.StartAsync(CancellationToken.None);
        await using var client = await RawNbdClient.ConnectAsync(((IPEndPoint)listener.LocalEndPoint).Port);
        await client.HandshakeAsync("disk", structured: false);
        await client.SendRequestAsync(0, 1, 1, 0, 4096, new byte[4096]); // held by the gate
        await Task.Delay(200);

        var stopping = listener.StopAsync(CancellationToken.None);
        await Task.Delay(200);
        Assert.False(stopping.IsCompleted);

        gate.SetResult();
        var reply = await client.ReadReplyAsync();
        Assert.Equal((1ul, 0u), (reply.Handle, reply.Error));
        Assert.True(await client.WaitForCloseAsync(Deadline));
        await stopping.WaitAsync(Deadline);
    }

    [Fact]
    public async Task Stop_cuts_connections_still_answering_when_its_token_fires()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _volume.WriteGate = gate.Task;
        await using var listener = new NbdListener(new IPEndPoint(IPAddress.Loopback, 0), _catalog, new NbdServerOptions(), NullLogger<NbdListener>.Instance);
        await listener.StartAsync(CancellationToken.None);
        await using var client = await RawNbdClient.ConnectAsync(((IPEndPoint)listener.LocalEndPoint).Port);
        await client.HandshakeAsync("disk", structured: false);
        await client.SendRequestAsync(0, 1, 1, 0, 4096, new byte[4096]); // held by the gate
        await Task.Delay(200);

        using var timeout = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var stopping = listener.StopAsync(timeout.Token);
        Assert.True(await client.WaitForCloseAsync(Deadline));
        gate.SetResult();
        await stopping.WaitAsync(Deadline);
    }

    [Fact]
    public async Task A_port_in_use_is_an_IOException_naming_the_address()
    {
        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen(1);
        var endPoint = (IPEndPoint)taken.LocalEndPoint!;
        await using var listener = new NbdListener(endPoint, _catalog, new NbdServerOptions(), NullLogger<NbdListener>.Instance);
        var error = await Assert.ThrowsAsync<IOException>(() => listener.StartAsync(CancellationToken.None));
        Assert.Contains(endPoint.ToString(), error.Message, StringComparison.Ordinal);
    }
}
