using System.CommandLine;
using Converge.Cli;

var root = CliCommands.Build();
var parseResult = root.Parse(args);
if (parseResult.Errors.Count > 0)
{
    foreach (var error in parseResult.Errors)
    {
        Console.Error.WriteLine($"error: {error.Message}");
    }

    Console.Error.WriteLine("run 'converge --help' (or 'converge COMMAND --help') for usage");
    return ExitCodes.Usage;
}

// No process-termination handling here: `host run` handles SIGTERM/SIGINT itself (graceful shutdown can take
// longer than System.CommandLine's termination timeout), and the other commands are short.
return await parseResult.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, CancellationToken.None);
