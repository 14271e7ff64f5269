namespace Converge.Nbd;

/// <summary>Whether the NBD port speaks TLS (NBD_OPT_STARTTLS), in the spec's terms.</summary>
public enum NbdTlsMode
{
    /// <summary>NOTLS: STARTTLS is refused with NBD_REP_ERR_POLICY.</summary>
    Off,

    /// <summary>SELECTIVETLS with no TLS-only export: the client chooses; plain and TLS clients both work.</summary>
    On,

    /// <summary>FORCEDTLS: every option before STARTTLS except ABORT gets NBD_REP_ERR_TLS_REQD, so nothing (not even the export list) is served in the clear.</summary>
    Require,
}
