using System.Globalization;

namespace Converge.Common;

/// <summary>Parses and formats operator-facing sizes such as <c>10GiB</c>, <c>512M</c>, <c>4096</c>.</summary>
public static class ByteSize
{
    private static readonly (string Suffix, long Factor)[] Units =
    [
        ("KIB", 1L << 10), ("MIB", 1L << 20), ("GIB", 1L << 30), ("TIB", 1L << 40), ("PIB", 1L << 50),
        ("KB", 1L << 10), ("MB", 1L << 20), ("GB", 1L << 30), ("TB", 1L << 40), ("PB", 1L << 50),
        ("K", 1L << 10), ("M", 1L << 20), ("G", 1L << 30), ("T", 1L << 40), ("P", 1L << 50),
        ("B", 1),
    ];

    /// <summary>
    /// Binary units throughout (<c>1G</c> = <c>1GiB</c> = 2^30 bytes), as qemu-img and most storage tools do.
    /// </summary>
    public static bool TryParse(string? text, out long bytes, out string error)
    {
        bytes = 0;
        error = string.Empty;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "size is empty; use a number with an optional unit, e.g. 10GiB, 512M or 4096";
            return false;
        }

        var s = text.Trim().Replace("_", string.Empty, StringComparison.Ordinal).ToUpperInvariant();
        long factor = 1;
        foreach (var (suffix, f) in Units)
        {
            if (s.EndsWith(suffix, StringComparison.Ordinal))
            {
                factor = f;
                s = s[..^suffix.Length].TrimEnd();
                break;
            }
        }

        if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number) || number < 0)
        {
            error = $"'{text}' is not a size; use a number with an optional unit, e.g. 10GiB, 512M or 4096";
            return false;
        }

        decimal total;
        try
        {
            total = number * factor;
        }
        catch (OverflowException)
        {
            error = $"'{text}' is too large";
            return false;
        }

        if (total > long.MaxValue)
        {
            error = $"'{text}' is too large";
            return false;
        }

        if (total != decimal.Truncate(total))
        {
            error = $"'{text}' is not a whole number of bytes";
            return false;
        }

        bytes = (long)total;
        return true;
    }

    public static long Parse(string text) =>
        TryParse(text, out var bytes, out var error) ? bytes : throw new FormatException(error);

    /// <summary>Formats with the largest binary unit that keeps the number at or above 1, e.g. <c>1.5 GiB</c>.</summary>
    public static string Format(long bytes)
    {
        string[] names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        var unit = 0;
        while (Math.Abs(value) >= 1024 && unit < names.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.##} {names[unit]}");
    }
}
