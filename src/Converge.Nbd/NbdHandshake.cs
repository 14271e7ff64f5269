using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using Converge.Common;
using Converge.Common.Transport;
using Converge.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Converge.Nbd;

/// <summary>What option haggling agreed on; the input to the transmission phase.</summary>
internal sealed record NegotiatedExport(
    IBlockVolume Volume,
    string ExportName,
    long Size,
    TransmissionFlags Flags,
    bool StructuredReplies,
    bool BaseAllocation);

/// <summary>Fixed-newstyle handshake and option haggling. Not a hot path: clarity over allocation-freedom.</summary>
internal sealed class NbdHandshake
{
    private const HandshakeFlags ServerHandshakeFlags = HandshakeFlags.FixedNewstyle | HandshakeFlags.NoZeroes;

    private readonly NbdConnection _connection;
    private readonly IBufferWriter<byte> _writer;
    private readonly INbdExportCatalog _catalog;
    private readonly NbdServerOptions _options;
    private readonly ILogger _logger;

    private bool _noZeroes;
    private bool _structuredReplies;

    // Who the client proved to be in the TLS handshake (null: plain, or TLS without a client certificate).
    private NbdClientIdentity? _identity;

    // NBD_OPT_SET_META_CONTEXT result: the export name it was for, and whether base:allocation was selected.
    private string? _metaContextExport;
    private bool _baseAllocationSelected;

    public NbdHandshake(NbdConnection connection, INbdExportCatalog catalog, NbdServerOptions options, ILogger logger)
    {
        _connection = connection;
        _writer = connection.Output;
        _catalog = catalog;
        _options = options;
        _logger = logger;
    }

    /// <summary>Runs the handshake; null when the session ends without entering transmission.</summary>
    public async Task<NegotiatedExport?> RunAsync(CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_options.HandshakeTimeout, _options.Time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            return await NegotiateAsync(linked.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            Log.HandshakeTimedOut(_logger, _options.HandshakeTimeout);
            return null;
        }
    }

    private async Task<NegotiatedExport?> NegotiateAsync(CancellationToken ct)
    {
        WriteGreeting();
        await _connection.FlushAsync(ct);

        var clientFlagBytes = new byte[4];
        if (!await _connection.ReadExactAsync(clientFlagBytes, ct))
        {
            return End("client closed before sending its flags");
        }

        var clientFlags = (ClientFlags)BinaryPrimitives.ReadUInt32BigEndian(clientFlagBytes);
        if ((clientFlags & ~(ClientFlags.FixedNewstyle | ClientFlags.NoZeroes)) != 0)
        {
            // Spec: the server MUST drop the connection on client flags it does not recognise.
            return End($"unknown client flags 0x{(uint)clientFlags:x8}");
        }

        _noZeroes = (clientFlags & ClientFlags.NoZeroes) != 0;

        var header = new byte[NbdConstants.OptionHeaderSize];
        while (true)
        {
            if (!await _connection.ReadExactAsync(header, ct))
            {
                return End("client closed during option haggling");
            }

            var magic = BinaryPrimitives.ReadUInt64BigEndian(header);
            var option = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(8));
            var length = BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(12));
            if (magic != NbdConstants.IHaveOpt)
            {
                return End($"bad option magic 0x{magic:x16}");
            }

            if (length > NbdConstants.MaxOptionLength)
            {
                // Spec allows a hard disconnect for payloads large enough to be a denial of service; no
                // option this server understands is anywhere near this long.
                return End($"option {option} carries {length} bytes (limit {NbdConstants.MaxOptionLength})");
            }

            var data = new byte[length];
            if (!await _connection.ReadExactAsync(data, ct))
            {
                return End("client closed inside an option");
            }

            var outcome = await HandleOptionAsync((NbdOption)option, data, ct);
            if (outcome.End)
            {
                return outcome.Export;
            }
        }
    }

    private readonly record struct OptionOutcome(bool End, NegotiatedExport? Export)
    {
        public static readonly OptionOutcome Continue = new(false, null);
        public static readonly OptionOutcome Close = new(true, null);
    }

    private async ValueTask<OptionOutcome> HandleOptionAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        if (_options.TlsMode == NbdTlsMode.Require && !_connection.Transport.IsTls && option is not (NbdOption.StartTls or NbdOption.Abort))
        {
            // Spec (FORCEDTLS): every other option gets TLS_REQD, so nothing is served in the clear; EXPORT_NAME
            // cannot be answered with an error, so the session ends.
            if (option == NbdOption.ExportName)
            {
                End("NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS, and TLS is required");
                return OptionOutcome.Close;
            }

            WriteError(option, OptionReplyType.ErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first");
            await _connection.FlushAsync(ct);
            return OptionOutcome.Continue;
        }

        switch (option)
        {
            case NbdOption.StartTls:
                return await HandleStartTlsAsync(data, ct) ? OptionOutcome.Continue : OptionOutcome.Close;

            case NbdOption.ExportName:
                var selected = await HandleExportNameAsync(data, ct);
                if (selected.Export is not null)
                {
                    await _connection.FlushAsync(ct);
                }

                return selected;

            case NbdOption.Abort:
                // Spec: MUST reply ACK; the client may already have gone, which is fine.
                WriteReply(option, OptionReplyType.Ack);
                await TryFlushAsync(ct);
                End("client sent NBD_OPT_ABORT");
                return OptionOutcome.Close;

            case NbdOption.List:
                HandleList(data);
                break;

            case NbdOption.Info:
            case NbdOption.Go:
                var export = await HandleInfoOrGoAsync(option, data, ct);
                if (option == NbdOption.Go && export is not null)
                {
                    await _connection.FlushAsync(ct);
                    return new OptionOutcome(true, export);
                }

                break;

            case NbdOption.StructuredReply:
                if (data.Length != 0)
                {
                    WriteError(option, OptionReplyType.ErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
                }
                else
                {
                    _structuredReplies = true;
                    WriteReply(option, OptionReplyType.Ack);
                }

                break;

            case NbdOption.ListMetaContext:
            case NbdOption.SetMetaContext:
                await HandleMetaContextAsync(option, data, ct);
                break;

            default:
                // Unknown options (and EXTENDED_HEADERS: not offered) are refused and haggling continues.
                Log.OptionRejected(_logger, (uint)option, (uint)data.Length, nameof(OptionReplyType.ErrUnsup));
                WriteError(option, OptionReplyType.ErrUnsup, $"option {(uint)option} is not supported by this server");
                break;
        }

        await _connection.FlushAsync(ct);
        return OptionOutcome.Continue;
    }

    /// <summary>NBD_OPT_STARTTLS: ACK, then the TLS handshake on the socket. False when the session must end.</summary>
    private async ValueTask<bool> HandleStartTlsAsync(byte[] data, CancellationToken ct)
    {
        var tls = _options.Tls;
        if (data.Length != 0)
        {
            WriteError(NbdOption.StartTls, OptionReplyType.ErrInvalid, "NBD_OPT_STARTTLS takes no data");
        }
        else if (_options.TlsMode == NbdTlsMode.Off || tls is null)
        {
            // Spec (NOTLS): POLICY when TLS is not offered by configuration.
            WriteError(NbdOption.StartTls, OptionReplyType.ErrPolicy, "TLS is not enabled on this server");
        }
        else if (_connection.Transport.IsTls)
        {
            WriteError(NbdOption.StartTls, OptionReplyType.ErrInvalid, "TLS is already active on this connection");
        }
        else
        {
            WriteReply(NbdOption.StartTls, OptionReplyType.Ack);
            await _connection.FlushAsync(ct);
            if (_connection.Buffered != 0)
            {
                // The client must wait for the ACK before its TLS hello; bytes here would be lost to the handshake.
                End("client sent data after NBD_OPT_STARTTLS before the TLS handshake");
                return false;
            }

            try
            {
                await _connection.Transport.AuthenticateAsServerAsync(tls, _options.HandshakeTimeout, _options.Time, ct);
            }
            catch (Exception ex) when (ex is AuthenticationException or IOException or TimeoutException or SocketException)
            {
                // Spec: after the ACK there is no going back to plain text.
                End($"TLS handshake failed: {ex.Message}");
                return false;
            }

            var cn = TlsCredentials.CommonName(_connection.Transport.RemoteCertificate);
            _identity = cn is null ? null : new NbdClientIdentity(cn, NbdIdentityKind.Certificate);
            var session = _connection.Transport.Tls!;
            Log.TlsEstablished(_logger, session.SslProtocol.ToString(), session.NegotiatedCipherSuite.ToString(), _identity?.ToString() ?? "no client certificate");

            // Nothing negotiated in the clear carries over into the TLS session (a man in the middle could have sent it).
            _structuredReplies = false;
            _metaContextExport = null;
            _baseAllocationSelected = false;
            return true;
        }

        await _connection.FlushAsync(ct);
        return true;
    }

    private bool Allowed(string exportName) => _options.Authorizer?.IsAllowed(exportName, _identity) ?? true;

    private void WriteRefused(NbdOption option, string exportName)
    {
        Log.ExportRefused(_logger, exportName, _identity?.ToString() ?? "no client identity");
        WriteError(option, OptionReplyType.ErrPolicy, _identity is null
            ? $"export '{exportName}' needs a client certificate it admits"
            : $"export '{exportName}' does not admit {_identity}");
    }

    private async ValueTask<OptionOutcome> HandleExportNameAsync(byte[] data, CancellationToken ct)
    {
        if (!TryDecodeString(data, out var name))
        {
            End("NBD_OPT_EXPORT_NAME with an invalid name");
            return OptionOutcome.Close;
        }

        if (!Allowed(name))
        {
            // This option cannot return an error either.
            Log.ExportRefused(_logger, name, _identity?.ToString() ?? "no client identity");
            return OptionOutcome.Close;
        }

        var volume = await _catalog.FindExportAsync(name, ct);
        if (volume is null)
        {
            // Spec: this option cannot return an error, so the server MUST terminate the session.
            Log.ExportNotFound(_logger, name);
            return OptionOutcome.Close;
        }

        var export = Negotiate(volume, name);
        Span<byte> reply = stackalloc byte[8 + 2 + 124];
        reply.Clear();
        BinaryPrimitives.WriteInt64BigEndian(reply, export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply[8..], (ushort)export.Flags);
        _writer.Write(_noZeroes ? reply[..10] : reply);
        return new OptionOutcome(true, export);
    }

    private void HandleList(byte[] data)
    {
        if (data.Length != 0)
        {
            WriteError(NbdOption.List, OptionReplyType.ErrInvalid, "NBD_OPT_LIST takes no data");
            return;
        }

        foreach (var export in _catalog.ListExports())
        {
            if (!Allowed(export.Name))
            {
                // An export the client may not use is not listed either.
                continue;
            }

            var name = Encoding.UTF8.GetBytes(export.Name);
            var description = Encoding.UTF8.GetBytes(export.Description ?? string.Empty);
            var payload = new byte[4 + name.Length + description.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)name.Length);
            name.CopyTo(payload, 4);
            description.CopyTo(payload, 4 + name.Length);
            WriteReply(NbdOption.List, OptionReplyType.Server, payload);
        }

        WriteReply(NbdOption.List, OptionReplyType.Ack);
    }

    private async ValueTask<NegotiatedExport?> HandleInfoOrGoAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        // Data: u32 name length, name, u16 number of info requests, u16 x n requests.
        var span = data.AsSpan();
        if (span.Length < 6)
        {
            WriteError(option, OptionReplyType.ErrInvalid, "option data shorter than 6 bytes");
            return null;
        }

        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(span);
        if (nameLength > (uint)span.Length - 6 || !TryDecodeString(span.Slice(4, (int)nameLength), out var name))
        {
            WriteError(option, OptionReplyType.ErrInvalid, "export name length is invalid");
            return null;
        }

        var rest = span[(4 + (int)nameLength)..];
        var requestCount = BinaryPrimitives.ReadUInt16BigEndian(rest);
        rest = rest[2..];
        if (rest.Length != requestCount * 2)
        {
            WriteError(option, OptionReplyType.ErrInvalid, "information request count does not match the option length");
            return null;
        }

        var wantName = false;
        var wantDescription = false;
        for (var i = 0; i < requestCount; i++)
        {
            switch ((InfoType)BinaryPrimitives.ReadUInt16BigEndian(rest[(i * 2)..]))
            {
                case InfoType.Name:
                    wantName = true;
                    break;
                case InfoType.Description:
                    wantDescription = true;
                    break;
                default:
                    // NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE are always sent; unknown requests are ignored.
                    break;
            }
        }

        if (!Allowed(name))
        {
            WriteRefused(option, name);
            return null;
        }

        var volume = await _catalog.FindExportAsync(name, ct);
        if (volume is null)
        {
            Log.ExportNotFound(_logger, name);
            WriteError(option, OptionReplyType.ErrUnknown, name.Length == 0 ? "there is no default export" : $"export '{name}' does not exist");
            return null;
        }

        var export = Negotiate(volume, name);

        Span<byte> info = stackalloc byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)InfoType.Export);
        BinaryPrimitives.WriteInt64BigEndian(info[2..], export.Size);
        BinaryPrimitives.WriteUInt16BigEndian(info[10..], (ushort)export.Flags);
        WriteReply(option, OptionReplyType.Info, info[..12]);

        // Always sent (the spec lets the server volunteer information); the values are the spec defaults
        // except for the maximum payload, which the server enforces on READ and WRITE.
        BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)InfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(info[2..], 1);
        BinaryPrimitives.WriteUInt32BigEndian(info[6..], BlockGeometry.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(info[10..], (uint)_options.MaxRequestBytes);
        WriteReply(option, OptionReplyType.Info, info);

        if (wantName)
        {
            WriteInfoString(option, InfoType.Name, volume.Name);
        }

        if (wantDescription)
        {
            var description = DescriptionOf(volume.Name);
            if (!string.IsNullOrEmpty(description))
            {
                WriteInfoString(option, InfoType.Description, description);
            }
        }

        WriteReply(option, OptionReplyType.Ack);
        return export;
    }

    private async ValueTask HandleMetaContextAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        var isSet = option == NbdOption.SetMetaContext;
        if (isSet)
        {
            // Spec: SET replaces the previous selection, including when it fails.
            _metaContextExport = null;
            _baseAllocationSelected = false;
            if (!_structuredReplies)
            {
                WriteError(option, OptionReplyType.ErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first");
                return;
            }
        }

        if (!TryParseMetaContextRequest(data, out var exportName, out var queries))
        {
            WriteError(option, OptionReplyType.ErrInvalid, "malformed meta context request");
            return;
        }

        if (!Allowed(exportName))
        {
            WriteRefused(option, exportName);
            return;
        }

        if (await _catalog.FindExportAsync(exportName, ct) is null)
        {
            WriteError(option, OptionReplyType.ErrUnknown, $"export '{exportName}' does not exist");
            return;
        }

        var baseAllocation = false;
        if (queries.Count == 0)
        {
            // LIST with no queries lists everything; SET with no queries selects nothing.
            baseAllocation = !isSet;
        }

        foreach (var query in queries)
        {
            var colon = query.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                WriteError(option, OptionReplyType.ErrInvalid, $"meta context query '{query}' has no namespace");
                return;
            }

            if (query == NbdConstants.BaseAllocation || (!isSet && query == "base:"))
            {
                baseAllocation = true;
            }

            // Anything else (other namespaces, unknown base: leaves) is ignored, as the spec requires.
        }

        if (baseAllocation)
        {
            var name = Encoding.UTF8.GetBytes(NbdConstants.BaseAllocation);
            var payload = new byte[4 + name.Length];
            BinaryPrimitives.WriteUInt32BigEndian(payload, isSet ? NbdConstants.BaseAllocationContextId : 0);
            name.CopyTo(payload, 4);
            WriteReply(option, OptionReplyType.MetaContext, payload);
        }

        if (isSet)
        {
            _metaContextExport = exportName;
            _baseAllocationSelected = baseAllocation;
        }

        WriteReply(option, OptionReplyType.Ack);
    }

    private static bool TryParseMetaContextRequest(byte[] data, out string exportName, out List<string> queries)
    {
        exportName = string.Empty;
        queries = [];
        var span = data.AsSpan();
        if (span.Length < 8)
        {
            return false;
        }

        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(span);
        if (nameLength > (uint)span.Length - 8 || !TryDecodeString(span.Slice(4, (int)nameLength), out exportName))
        {
            return false;
        }

        span = span[(4 + (int)nameLength)..];
        var count = BinaryPrimitives.ReadUInt32BigEndian(span);
        span = span[4..];
        for (var i = 0u; i < count; i++)
        {
            if (span.Length < 4)
            {
                return false;
            }

            var length = BinaryPrimitives.ReadUInt32BigEndian(span);
            if (length > (uint)span.Length - 4 || !TryDecodeString(span.Slice(4, (int)length), out var query))
            {
                return false;
            }

            queries.Add(query);
            span = span[(4 + (int)length)..];
        }

        return span.IsEmpty;
    }

    private NegotiatedExport Negotiate(IBlockVolume volume, string requestedName)
    {
        var caps = volume.Capabilities;
        var readOnly = (caps & VolumeCapabilities.ReadOnly) != 0;
        var flags = TransmissionFlags.HasFlags | TransmissionFlags.SendCache;
        if (readOnly)
        {
            flags |= TransmissionFlags.ReadOnly;
        }

        if ((caps & VolumeCapabilities.Flush) != 0)
        {
            flags |= TransmissionFlags.SendFlush;
        }

        if (!readOnly)
        {
            if ((caps & VolumeCapabilities.Fua) != 0)
            {
                flags |= TransmissionFlags.SendFua;
            }

            if ((caps & VolumeCapabilities.Trim) != 0)
            {
                flags |= TransmissionFlags.SendTrim;
            }

            if ((caps & VolumeCapabilities.WriteZeroes) != 0)
            {
                flags |= TransmissionFlags.SendWriteZeroes;
                if ((caps & VolumeCapabilities.FastZero) != 0)
                {
                    flags |= TransmissionFlags.SendFastZero;
                }
            }
        }

        if ((caps & VolumeCapabilities.MultiConn) != 0)
        {
            flags |= TransmissionFlags.CanMultiConn;
        }

        if (_structuredReplies)
        {
            // Every read is answered with a single content chunk, so "don't fragment" is free.
            flags |= TransmissionFlags.SendDf;
        }

        var baseAllocation = _structuredReplies
            && _baseAllocationSelected
            && string.Equals(_metaContextExport, requestedName, StringComparison.Ordinal);
        return new NegotiatedExport(volume, requestedName, volume.Size, flags, _structuredReplies, baseAllocation);
    }

    private string? DescriptionOf(string volumeName)
    {
        foreach (var export in _catalog.ListExports())
        {
            if (string.Equals(export.Name, volumeName, StringComparison.Ordinal))
            {
                return export.Description;
            }
        }

        return null;
    }

    private static bool TryDecodeString(ReadOnlySpan<byte> bytes, out string value)
    {
        value = string.Empty;
        if (bytes.Length > NbdConstants.MaxStringLength || bytes.Contains((byte)0))
        {
            return false;
        }

        try
        {
            value = new UTF8Encoding(false, true).GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            return false;
        }
    }

    private void WriteGreeting()
    {
        Span<byte> greeting = stackalloc byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(greeting, NbdConstants.NbdMagic);
        BinaryPrimitives.WriteUInt64BigEndian(greeting[8..], NbdConstants.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(greeting[16..], (ushort)ServerHandshakeFlags);
        _writer.Write(greeting);
    }

    private void WriteInfoString(NbdOption option, InfoType type, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        var payload = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)type);
        bytes.CopyTo(payload, 2);
        WriteReply(option, OptionReplyType.Info, payload);
    }

    private void WriteError(NbdOption option, OptionReplyType type, string message)
    {
        Log.OptionRejected(_logger, (uint)option, 0, type.ToString());
        WriteReply(option, type, Encoding.UTF8.GetBytes(message));
    }

    private void WriteReply(NbdOption option, OptionReplyType type, ReadOnlySpan<byte> payload = default)
    {
        Span<byte> header = stackalloc byte[NbdConstants.OptionReplyHeaderSize];
        BinaryPrimitives.WriteUInt64BigEndian(header, NbdConstants.OptionReplyMagic);
        BinaryPrimitives.WriteUInt32BigEndian(header[8..], (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(header[12..], (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(header[16..], (uint)payload.Length);
        _writer.Write(header);
        _writer.Write(payload);
    }

    private async ValueTask TryFlushAsync(CancellationToken ct)
    {
        try
        {
            await _connection.FlushAsync(ct);
        }
        catch (IOException)
        {
            // The client may abort and close without waiting for the ACK.
        }
    }

    private NegotiatedExport? End(string reason)
    {
        Log.HandshakeEnded(_logger, reason);
        return null;
    }
}
