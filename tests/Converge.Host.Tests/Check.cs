namespace Converge.Host.Tests;

internal static class Check
{
    /// <summary>Asserts exit code 0, showing the command, its output and the host log tail otherwise.</summary>
    public static ToolResult Succeeded(ToolResult result, HostProcess? host = null)
    {
        Assert.True(result.ExitCode == 0, result + (host is null ? string.Empty : "\n" + host.LogTail()));
        return result;
    }

    public static ToolResult ExitCode(int expected, ToolResult result)
    {
        Assert.True(result.ExitCode == expected, $"expected exit code {expected}\n{result}");
        return result;
    }
}
