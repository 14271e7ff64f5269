namespace Converge.Metadata;

/// <summary>The metadata service cannot do this now (no quorum, membership change refused, stopped); retry later.</summary>
public sealed class MetadataUnavailableException : Exception
{
    public MetadataUnavailableException()
        : this("the metadata service is unavailable")
    {
    }

    public MetadataUnavailableException(string message)
        : base(message)
    {
    }

    public MetadataUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
