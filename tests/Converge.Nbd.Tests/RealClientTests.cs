using System.Text.Json;
using Converge.Common;

namespace Converge.Nbd.Tests;

/// <summary>The handler inside Kestrel, driven by real NBD clients (libnbd's nbdinfo and Python bindings, qemu-io).</summary>
public sealed class RealClientTests : IClassFixture<NbdTestServer>
{
    private readonly NbdTestServer _server;

    public RealClientTests(NbdTestServer server)
    {
        _server = server;
    }

    private string NewExport(long size = 64 << 20, VolumeCapabilities caps = TestVolume.AllCapabilities, string description = "")
    {
        var name = "v" + Guid.NewGuid().ToString("N")[..12];
        _server.Catalog.Add(name, size, caps, description);
        return name;
    }

    [Fact]
    public async Task Nbdinfo_lists_exports_and_reports_flags_as_json()
    {
        var a = NewExport(description: "alpha disk");
        var ro = NewExport(1 << 20, VolumeCapabilities.ReadOnly | VolumeCapabilities.Flush);

        var list = await Tools.RunAsync("nbdinfo", ["--list", "--json", $"nbd://127.0.0.1:{_server.Port}"]);
        Assert.True(list.ExitCode == 0, list.ToString());
        var exports = JsonDocument.Parse(list.Stdout).RootElement.GetProperty("exports").EnumerateArray()
            .ToDictionary(e => e.GetProperty("export-name").GetString()!, e => e);
        Assert.Equal("alpha disk", exports[a].GetProperty("description").GetString());
        Assert.True(exports.ContainsKey(ro));

        var info = await Tools.RunAsync("nbdinfo", ["--json", _server.Uri(a)]);
        Assert.True(info.ExitCode == 0, info.ToString());
        var e = JsonDocument.Parse(info.Stdout).RootElement.GetProperty("exports")[0];
        Assert.Equal(64L << 20, e.GetProperty("export-size").GetInt64());
        foreach (var flag in new[] { "can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn" })
        {
            Assert.True(e.GetProperty(flag).GetBoolean(), flag);
        }

        Assert.False(e.GetProperty("is_read_only").GetBoolean());
        Assert.Equal(1, e.GetProperty("block_size_minimum").GetInt32());
        Assert.Equal(4096, e.GetProperty("block_size_preferred").GetInt32());
        Assert.Equal(32 << 20, e.GetProperty("block_size_maximum").GetInt32());
        Assert.Contains("base:allocation", e.GetProperty("contexts").EnumerateArray().Select(c => c.GetString()));

        var roInfo = await Tools.RunAsync("nbdinfo", ["--json", _server.Uri(ro)]);
        Assert.True(roInfo.ExitCode == 0, roInfo.ToString());
        var r = JsonDocument.Parse(roInfo.Stdout).RootElement.GetProperty("exports")[0];
        Assert.True(r.GetProperty("is_read_only").GetBoolean());
        Assert.False(r.GetProperty("can_multi_conn").GetBoolean());
        Assert.False(r.GetProperty("can_trim").GetBoolean());
    }

    [Fact]
    public async Task Libnbd_structured_io_block_status_trim_zero_cache_flush_fua()
    {
        var name = NewExport();
        var result = await Tools.PythonAsync("""
            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_uri(uri)
            assert h.get_structured_replies_negotiated()
            assert h.can_meta_context("base:allocation")
            assert h.can_multi_conn() and h.can_fua() and h.can_flush() and h.can_cache() and h.can_fast_zero()
            size = h.get_size()
            assert size == 64 << 20

            buf = bytes([0xab]) * 65536
            h.pwrite(buf, 0)
            h.pwrite(buf, 65536, nbd.CMD_FLAG_FUA)
            assert h.pread(131072, 0) == buf * 2
            h.flush()

            def status(length, offset, flags=0):
                got = []
                def cb(meta, off, entries, err):
                    assert meta == "base:allocation"
                    got.extend(zip(entries[0::2], entries[1::2]))
                    return 0
                h.block_status(length, offset, cb, flags)
                return got

            ext = status(1 << 20, 0)
            assert ext[0] == (131072, 0), ext
            assert ext[1][1] == 3, ext
            one = status(1 << 20, 0, nbd.CMD_FLAG_REQ_ONE)
            assert len(one) == 1, one

            h.trim(65536, 0)
            assert h.pread(65536, 0) == bytes(65536)
            assert status(65536, 0)[0] == (65536, 3)

            h.pwrite(buf, 0)
            h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)
            assert h.pread(4096, 0) == bytes(4096)
            assert status(4096, 0)[0] == (4096, 0)
            h.zero(8192, 8192, nbd.CMD_FLAG_FAST_ZERO)
            assert h.pread(8192, 8192) == bytes(8192)
            expect_errno(errno.ENOTSUP, h.zero, 4096, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
            h.cache(65536, 0)

            # 32 MiB in one request each way.
            big = bytes(range(256)) * (131072)
            h.pwrite(big, 0)
            assert h.pread(len(big), 0) == big

            # Out of range: with client-side checks off the server must answer EINVAL and stay usable.
            h.set_strict_mode(0) if hasattr(h, "set_strict_mode") else None
            expect_errno(errno.EINVAL, h.pread, 4096, size)
            expect_errno(errno.EINVAL, h.trim, 8192, size - 4096)
            assert h.pread(4, 0) == big[:4]
            h.shutdown()
            print("ok")
            """, _server.Uri(name), TimeSpan.FromSeconds(40));
        Assert.True(result.ExitCode == 0 && result.Stdout.Contains("ok", StringComparison.Ordinal), result.ToString());
    }

    [Fact]
    public async Task Libnbd_without_structured_replies_uses_simple_replies()
    {
        var name = NewExport(1 << 20);
        var result = await Tools.PythonAsync("""
            h = nbd.NBD()
            h.set_request_structured_replies(False)
            h.connect_uri(uri)
            assert not h.get_structured_replies_negotiated()
            h.pwrite(b"hello", 10)
            assert h.pread(5, 10) == b"hello"
            h.set_strict_mode(0)
            expect_errno(errno.EINVAL, h.pread, 8, (1 << 20) - 4)
            assert h.pread(5, 10) == b"hello"
            h.shutdown()
            print("ok")
            """, _server.Uri(name));
        Assert.True(result.ExitCode == 0 && result.Stdout.Contains("ok", StringComparison.Ordinal), result.ToString());
    }

    [Fact]
    public async Task Libnbd_pipelined_aio_requests_and_many_concurrent_clients()
    {
        var names = Enumerable.Range(0, 4).Select(_ => NewExport(16 << 20)).ToList();
        var script = """
            h = nbd.NBD()
            h.connect_uri(uri)
            n = 64
            bufs = [bytes([i]) * 65536 for i in range(n)]
            cookies = [h.aio_pwrite(bufs[i], i * 65536) for i in range(n)]
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for c in cookies:
                assert h.aio_command_completed(c)
            outs = [nbd.Buffer(65536) for i in range(n)]
            cookies = [h.aio_pread(outs[i], i * 65536) for i in range(n)]
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for i in range(n):
                assert h.aio_command_completed(cookies[i])
                assert outs[i].to_bytearray() == bufs[i], i
            h.shutdown()
            print("ok")
            """;

        // Two clients per export (they are multi-conn capable), all at once.
        var runs = names.SelectMany(n => new[] { n, n }).Select((n, i) => Tools.PythonAsync(script, _server.Uri(n), TimeSpan.FromSeconds(40))).ToList();
        foreach (var result in await Task.WhenAll(runs))
        {
            Assert.True(result.ExitCode == 0 && result.Stdout.Contains("ok", StringComparison.Ordinal), result.ToString());
        }
    }

    [Fact]
    public async Task Libnbd_pipelined_large_and_small_writes_keep_their_framing()
    {
        // Large payloads are received straight from the socket and the receive after one takes at most 4 KiB into the
        // connection buffer; requests of every size queued back to back must still be parsed exactly.
        var name = NewExport(64 << 20);
        var script = """
            import os
            h = nbd.NBD()
            h.connect_uri(uri)
            sizes = [1 << 20, 4096, 512 << 10, 512, 4096 * 3, 1 << 20, 8192, 300 << 10, 4096, (1 << 20) - 4096]
            writes = []
            offset = 0
            for i in range(48):
                size = sizes[i % len(sizes)]
                data = os.urandom(size)
                writes.append((offset, data, h.aio_pwrite(data, offset)))
                offset += size + 4096 * (i % 3)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for off, data, c in writes:
                assert h.aio_command_completed(c)
            for off, data, c in writes:
                assert h.pread(len(data), off) == data, off
            h.shutdown()
            print("ok")
            """;
        var result = await Tools.PythonAsync(script, _server.Uri(name), TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0 && result.Stdout.Contains("ok", StringComparison.Ordinal), result.ToString());
    }

    [Fact]
    public async Task Nbdsh_reads_and_writes()
    {
        var name = NewExport(1 << 20);
        var result = await Tools.RunAsync("nbdsh", ["-u", _server.Uri(name), "-c", "h.pwrite(b'x' * 512, 512); assert h.pread(512, 512) == b'x' * 512; print('ok')"]);
        Assert.True(result.ExitCode == 0 && result.Stdout.Contains("ok", StringComparison.Ordinal), result.ToString());
    }

    [Fact]
    public async Task Qemu_io_pattern_write_and_read()
    {
        var name = NewExport(8 << 20);
        var result = await Tools.RunAsync("qemu-io", [
            "-f", "raw",
            "-c", "write -P 0x5a 0 1M",
            "-c", "write -z 1M 64k",
            "-c", "write -P 0x33 4M 3M",
            "-c", "read -P 0x5a 0 1M",
            "-c", "read -P 0x00 1M 64k",
            "-c", "read -P 0x33 4M 3M",
            "-c", "flush",
            "-c", "discard 0 64k",
            _server.Uri(name)]);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.DoesNotContain("fail", result.Stdout + result.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("read 3145728/3145728 bytes", result.Stdout, StringComparison.Ordinal);
    }
}
