using System.Globalization;
using Xunit.Abstractions;

namespace Converge.Cluster.Tests;

/// <summary>
/// A cluster as it runs on separate machines: three hosts, each in a network namespace of its own with its own address
/// on one LAN, joined with join tokens, every host-to-host link on mutual TLS, and a client in a fourth namespace. With
/// no options beyond the addresses, NBD requires TLS and a client certificate from the cluster CA, and the API is
/// HTTPS. The client writes and reads over <c>nbds://</c>; from the same machine, a process without a cluster
/// certificate gets nothing from any NBD, peer, Raft or RPC port.
/// </summary>
public sealed class LanTests(ITestOutputHelper output)
{
    private const long MiB = FaultKit.MiB;
    private readonly FaultLog log = new(output);

    [Fact]
    public async Task Lan_cluster_serves_nbds_to_a_certified_client_and_nothing_to_an_uncertified_one()
    {
        await using var lan = await NetworkLan.CreateAsync(["h1", "h2", "h3", "client"]);
        await using var cluster = await TestCluster.StartAsync(3, configure: h =>
        {
            (h.NetworkNamespace, h.Address) = lan.Members[h.Name];
        });
        log.Line($"hosts on {string.Join(", ", cluster.Hosts.Select(h => $"{h.Name} {h.Address}"))}; client on {lan.Members["client"].Address}");
        Assert.StartsWith("https://", cluster[0].ApiUrl, StringComparison.Ordinal);
        await cluster[0].Api.CreateVirtualDiskAsync("lan", 32 * MiB);

        // The client's credentials, in the layout qemu and libnbd read: the cluster CA and a certificate it issued.
        var tls = Path.Combine(cluster[0].DataDir, "tls");
        var certified = cluster.TempPath("client-pki");
        var caOnly = cluster.TempPath("ca-only-pki");
        Directory.CreateDirectory(certified);
        Directory.CreateDirectory(caOnly);
        File.Copy(Path.Combine(tls, "ca.crt"), Path.Combine(certified, "ca-cert.pem"));
        File.Copy(Path.Combine(tls, "host.crt"), Path.Combine(certified, "client-cert.pem"));
        File.Copy(Path.Combine(tls, "host.key"), Path.Combine(certified, "client-key.pem"));
        File.Copy(Path.Combine(tls, "ca.crt"), Path.Combine(caOnly, "ca-cert.pem"));

        // Written through h2, read back through h3, from the client's namespace, over TLS.
        var creds = $"tls-creds-x509,id=tls0,dir={certified},endpoint=client";
        string Target(ClusterHost h) => $"driver=raw,file.driver=nbd,file.host={h.Address},file.port={h.NbdPort.ToString(CultureInfo.InvariantCulture)},file.export=lan,file.tls-creds=tls0";
        var write = await lan.ExecAsync("client", "qemu-io", ["--object", creds, "--image-opts", Target(cluster[1]), "-c", "write -P 0x5c 1M 4M", "-c", "flush"], TimeSpan.FromMinutes(2));
        Assert.True(write.ExitCode == 0, $"write over TLS through h2:\n{write}");
        var read = await lan.ExecAsync("client", "qemu-io", ["--object", creds, "--image-opts", Target(cluster[2]), "-c", "read -P 0x5c 1M 4M"], TimeSpan.FromMinutes(2));
        Assert.True(read.ExitCode == 0 && !read.ToString().Contains("Pattern verification failed", StringComparison.Ordinal), $"read over TLS through h3:\n{read}");
        var info = await lan.ExecAsync("client", "nbdinfo", [$"nbds://{cluster[0].Address}:{cluster[0].NbdPort}/lan?tls-certificates={certified}"], TimeSpan.FromMinutes(1));
        Assert.True(info.ExitCode == 0 && info.ToString().Contains("33554432", StringComparison.Ordinal), $"nbdinfo over TLS through h1:\n{info}");
        log.Line("certified client: wrote through h2, read back through h3, nbdinfo through h1, all over nbds://");

        // Without a client certificate: plain NBD gets TLS_REQD, TLS without a certificate is refused.
        foreach (var host in cluster.Hosts)
        {
            var plain = await lan.ExecAsync("client", "nbdinfo", [$"nbd://{host.Address}:{host.NbdPort}/lan"], TimeSpan.FromMinutes(1));
            Assert.True(plain.ExitCode != 0, $"plain nbdinfo through {host.Name} got an answer:\n{plain}");
            var anonymous = await lan.ExecAsync("client", "nbdinfo", [$"nbds://{host.Address}:{host.NbdPort}/lan?tls-certificates={caOnly}"], TimeSpan.FromMinutes(1));
            Assert.True(anonymous.ExitCode != 0, $"nbdinfo over TLS without a client certificate through {host.Name} got an answer:\n{anonymous}");
            var list = await lan.ExecAsync("client", "nbdinfo", ["--list", $"nbd://{host.Address}:{host.NbdPort}"], TimeSpan.FromMinutes(1));
            Assert.DoesNotContain("lan", list.Stdout, StringComparison.Ordinal);

            // Peer, Raft and RPC ports: a TLS client without a certificate (and a plain one) gets no byte of protocol.
            foreach (var (what, port) in new[] { ("peer", host.PeerPort), ("raft", host.RaftPort), ("rpc", host.RpcPort) })
            {
                var probe = await lan.ExecAsync("client", NbdClients.SystemPython, ["-c", ProbeScript, host.Address, port.ToString(CultureInfo.InvariantCulture)], TimeSpan.FromMinutes(1));
                Assert.True(probe.ExitCode == 0, $"{what} port of {host.Name} answered a client without a certificate:\n{probe}");
            }
        }

        log.Survive("a client without a cluster certificate got nothing from the NBD, peer, Raft and RPC ports of any host");
    }

    /// <summary>
    /// Connects with TLS and no client certificate, sends a request, and exits 0 when nothing came back but a TLS alert
    /// or a closed connection; then the same over plain TCP.
    /// </summary>
    private const string ProbeScript = """
        import socket, ssl, sys
        host, port = sys.argv[1], int(sys.argv[2])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((host, port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname='converge-peer') as s:
                    s.sendall(b'GET /internal/v1/metadata/state HTTP/1.1\r\nHost: x\r\n\r\n' + b'\0' * 64)
                    data = s.recv(4096)
                    if data:
                        sys.exit('TLS without a certificate got %r' % data[:80])
        except (ssl.SSLError, ConnectionError, socket.timeout, OSError):
            pass
        with socket.create_connection((host, port), timeout=10) as raw:
            raw.sendall(b'GET /internal/v1/metadata/state HTTP/1.1\r\nHost: x\r\n\r\n' + b'\0' * 64)
            try:
                data = raw.recv(4096)
            except (ConnectionError, socket.timeout, OSError):
                data = b''
            if data and not data.startswith(b'\x15') and not data.startswith(b'\x16'):
                sys.exit('plain TCP got %r' % data[:80])
        print('nothing')
        """;
}
