using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Converge.Management.Tests;

/// <summary>
/// Debian's real Chromium (<c>/usr/bin/chromium</c>), headless, driven over the Chrome DevTools Protocol on a
/// WebSocket: navigate, evaluate JavaScript in the page, capture screenshots. Its own fresh profile directory;
/// disposing kills the browser (by PID, with the children it started).
/// </summary>
public sealed class HeadlessChromium : IAsyncDisposable
{
    public const string Binary = "/usr/bin/chromium";

    private readonly Process process;
    private readonly TempDir profile;
    private readonly ClientWebSocket socket = new();
    private readonly SemaphoreSlim sendLock = new(1, 1);
    private int nextId;

    private HeadlessChromium(Process process, TempDir profile)
    {
        this.process = process;
        this.profile = profile;
    }

    public static bool Available => File.Exists(Binary);

    public static async Task<HeadlessChromium> StartAsync()
    {
        var profile = new TempDir("converge-chromium");
        var start = new ProcessStartInfo(Binary) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var arg in new[]
        {
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
            $"--user-data-dir={profile.Path}", "--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1400,1000", "about:blank",
        })
        {
            start.ArgumentList.Add(arg);
        }

        var process = Process.Start(start) ?? throw new InvalidOperationException("could not start chromium");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var browser = new HeadlessChromium(process, profile);
        try
        {
            await browser.ConnectAsync();
            return browser;
        }
        catch
        {
            await browser.DisposeAsync();
            throw;
        }
    }

    private async Task ConnectAsync()
    {
        // Chromium writes the port it bound into DevToolsActivePort in the profile directory.
        var portFile = profile.File("DevToolsActivePort");
        var stopwatch = Stopwatch.StartNew();
        while (!File.Exists(portFile) || File.ReadAllLines(portFile).Length < 1)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"chromium exited with {process.ExitCode} before opening DevTools");
            }

            if (stopwatch.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException("chromium did not open DevTools within 30 s");
            }

            await Task.Delay(100);
        }

        var port = File.ReadAllLines(portFile)[0].Trim();
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        string? page = null;
        while (page is null)
        {
            var targets = JsonNode.Parse(await http.GetStringAsync($"http://127.0.0.1:{port}/json/list"))!.AsArray();
            page = targets.FirstOrDefault(t => (string?)t!["type"] == "page")?["webSocketDebuggerUrl"]?.GetValue<string>();
            if (page is null)
            {
                if (stopwatch.Elapsed > TimeSpan.FromSeconds(30))
                {
                    throw new TimeoutException("chromium has no page target");
                }

                await Task.Delay(100);
            }
        }

        await socket.ConnectAsync(new Uri(page), CancellationToken.None);
        await SendAsync("Page.enable");
        await SendAsync("Runtime.enable");
    }

    /// <summary>Sends one DevTools command and returns its <c>result</c> (throws on a protocol error).</summary>
    public async Task<JsonNode> SendAsync(string method, JsonObject? parameters = null, TimeSpan? timeout = null)
    {
        var id = Interlocked.Increment(ref nextId);
        var message = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? new JsonObject() };
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        await sendLock.WaitAsync(cts.Token);
        try
        {
            await socket.SendAsync(Encoding.UTF8.GetBytes(message.ToJsonString()), WebSocketMessageType.Text, true, cts.Token);

            // Replies come in order with events between them; one caller at a time, so read until our id.
            while (true)
            {
                var reply = await ReceiveAsync(cts.Token);
                if (reply["id"]?.GetValue<int>() != id)
                {
                    continue;
                }

                if (reply["error"] is { } error)
                {
                    throw new InvalidOperationException($"DevTools {method} failed: {error.ToJsonString()}");
                }

                return reply["result"] ?? new JsonObject();
            }
        }
        finally
        {
            sendLock.Release();
        }
    }

    public async Task NavigateAsync(string url)
    {
        await SendAsync("Page.navigate", new JsonObject { ["url"] = url });
    }

    /// <summary>Evaluates <paramref name="expression"/> in the page (promises awaited) and returns its JSON value.</summary>
    public async Task<JsonNode?> EvaluateAsync(string expression)
    {
        var result = await SendAsync("Runtime.evaluate", new JsonObject
        {
            ["expression"] = expression,
            ["returnByValue"] = true,
            ["awaitPromise"] = true,
        });
        if (result["exceptionDetails"] is { } exception)
        {
            throw new InvalidOperationException($"page script failed: {exception.ToJsonString()}");
        }

        return result["result"]?["value"]?.DeepClone();
    }

    public async Task<T?> EvaluateAsync<T>(string expression)
    {
        var value = await EvaluateAsync(expression);
        return value is null ? default : value.GetValue<T>();
    }

    /// <summary>Polls <paramref name="expression"/> until it is true; fails with <paramref name="what"/> and the page's text.</summary>
    public async Task WaitForAsync(string expression, string what, TimeSpan? timeout = null)
    {
        var stopwatch = Stopwatch.StartNew();
        Exception? last = null;
        while (stopwatch.Elapsed < (timeout ?? TimeSpan.FromSeconds(30)))
        {
            try
            {
                if (await EvaluateAsync<bool>($"Boolean({expression})"))
                {
                    return;
                }
            }
            catch (InvalidOperationException e)
            {
                last = e;
            }

            await Task.Delay(200);
        }

        var text = await EvaluateAsync<string>("document.body ? document.body.innerText.slice(0, 3000) : ''");
        throw new TimeoutException($"timed out waiting for the page to show {what}{(last is null ? string.Empty : $" ({last.Message})")}. Page text:\n{text}");
    }

    /// <summary>A PNG of the whole page.</summary>
    public async Task<byte[]> ScreenshotAsync()
    {
        var result = await SendAsync(
            "Page.captureScreenshot",
            new JsonObject { ["format"] = "png", ["captureBeyondViewport"] = true },
            TimeSpan.FromSeconds(60));
        return Convert.FromBase64String(result["data"]!.GetValue<string>());
    }

    private async Task<JsonNode> ReceiveAsync(CancellationToken cancellationToken)
    {
        var buffer = new byte[1 << 16];
        using var message = new MemoryStream();
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, cancellationToken);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                throw new InvalidOperationException("chromium closed the DevTools connection");
            }

            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage)
            {
                return JsonNode.Parse(message.ToArray())!;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (socket.State == WebSocketState.Open)
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", cts.Token);
            }
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException)
        {
        }

        socket.Dispose();
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await process.WaitForExitAsync(cts.Token);
            }
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or OperationCanceledException)
        {
        }

        process.Dispose();
        sendLock.Dispose();
        profile.Dispose();
    }

    internal static string Js(string value) => JsonSerializer.Serialize(value);
}
