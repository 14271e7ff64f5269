namespace Converge.Cli;

/// <summary>The CLI's exit codes (docs/host-cli-api.md).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;

    /// <summary>The host refused or failed the operation; the message is on stderr.</summary>
    public const int Failed = 1;

    /// <summary>Bad arguments, size or name syntax, caught before contacting any host.</summary>
    public const int Usage = 2;

    /// <summary>The host API could not be reached.</summary>
    public const int Unreachable = 3;

    /// <summary><c>converge health</c>: the worst check is a warning.</summary>
    public const int HealthWarning = 4;

    /// <summary><c>converge health</c>: at least one check is an error.</summary>
    public const int HealthError = 5;
}

/// <summary>A usage error found while running a command (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>An operation that failed with a message for the operator (exit code 1).</summary>
internal sealed class CliFailureException(string message) : Exception(message);
