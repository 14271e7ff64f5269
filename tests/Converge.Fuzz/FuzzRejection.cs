namespace Converge.Fuzz;

/// <summary>The exceptions a decoder may throw for bad input (its documented clean rejection); anything else is a crash.</summary>
public static class FuzzRejection
{
    public static bool IsClean(Exception exception) => exception is
        System.Text.Json.JsonException or
        NotSupportedException or
        Common.VolumeException;
}
