using System.Text.RegularExpressions;

namespace Converge.Common;

/// <summary>Validation of operator-chosen names (virtual disks, policies, hosts).</summary>
public static partial class NameRules
{
    public const int MaxLength = 64;

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    public static bool IsValid(string? name, out string error)
    {
        error = string.Empty;
        if (string.IsNullOrEmpty(name))
        {
            error = "name is empty";
            return false;
        }

        if (name.Length > MaxLength)
        {
            error = $"name '{name}' is {name.Length} characters; at most {MaxLength} are allowed";
            return false;
        }

        if (!NamePattern().IsMatch(name))
        {
            error = $"name '{name}' is invalid: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit";
            return false;
        }

        return true;
    }
}
