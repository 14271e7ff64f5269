namespace Converge.Common.Transport;

/// <summary>TLS material that cannot be used (a missing file, a key that does not match); the message is meant for the operator.</summary>
public sealed class TlsConfigurationException(string message, Exception? inner = null) : Exception(message, inner);
