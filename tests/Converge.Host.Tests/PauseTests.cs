namespace Converge.Host.Tests;

/// <summary>A host frozen with SIGSTOP (a stalled VM, a long GC pause) picks up where it left off after SIGCONT.</summary>
public sealed class PauseTests : IAsyncLifetime
{
    private readonly TempDir dir = new("converge-pause");
    private HostProcess? host;

    private HostProcess Host => host!;

    public async Task InitializeAsync() => host = await HostProcess.StartAsync(dir.File("host"), "1GiB");

    public async Task DisposeAsync()
    {
        if (host is not null)
        {
            if (host.IsRunning)
            {
                await host.ResumeAsync();
            }

            await host.DisposeAsync();
        }

        dir.Dispose();
    }

    [Fact]
    public async Task Requests_sent_while_paused_complete_after_resume()
    {
        var vdisk = await Host.Api.CreateVirtualDiskAsync("paused", "64MiB");
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["write -P 0x21 0 4M"]), Host);

        await Host.PauseAsync();
        Task<ToolResult> client;
        try
        {
            // The kernel still accepts the connection; nothing answers until the process runs again.
            client = NbdClients.QemuIoAsync(vdisk.NbdUri, ["read -P 0x21 0 4M", "write -P 0x22 4M 4M", "flush", "read -P 0x22 4M 4M"]);
            var first = await Task.WhenAny(client, Task.Delay(TimeSpan.FromSeconds(2)));
            Assert.False(first == client, "the client finished while the host was stopped");
        }
        finally
        {
            await Host.ResumeAsync();
        }

        Check.Succeeded(await client, Host);
        await Host.WaitReadyAsync(TimeSpan.FromSeconds(30));
        Check.Succeeded(await NbdClients.QemuIoAsync(vdisk.NbdUri, ["read -P 0x21 0 4M", "read -P 0x22 4M 4M"]), Host);
    }
}
