using System.Buffers.Binary;
using System.Reflection;
using System.Text.Json;
using Converge.Common;
using Converge.Coordinator;
using Converge.Coordinator.Peer;
using Converge.Metadata;
using Converge.Nbd.Protocol;

namespace Converge.Fuzz;

/// <summary>
/// One entry point per decoder, taking arbitrary bytes. A harness returns normally or throws a clean rejection
/// (<see cref="FuzzRejection"/>); any other exception is a crash.
/// </summary>
public static class Harnesses
{
    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>(StringComparer.Ordinal)
    {
        ["peer-request"] = PeerRequest,
        ["peer-reply"] = PeerReply,
        ["peer-payload"] = PeerPayload,
        ["nbd-request"] = NbdRequestHeader,
        ["nbd-meta-context"] = NbdMetaContext,
        ["metadata-command"] = MetadataCommandJson,
    };

    // The peer handler's ENSURE_COMPONENT payload decoder (private to the handler, which these harnesses must not change).
    private static readonly DecodeEnsureFunction DecodeEnsure =
        (typeof(ComponentPeerHandler).GetMethod("DecodeEnsure", BindingFlags.NonPublic | BindingFlags.Static)
         ?? throw new InvalidOperationException("ComponentPeerHandler.DecodeEnsure is gone; update the peer-payload harness"))
        .CreateDelegate<DecodeEnsureFunction>();

    private delegate (Guid DiskId, long Size, string Name) DecodeEnsureFunction(ReadOnlySpan<byte> payload);

    /// <summary>
    /// A peer request header. An input longer than a header gets its CRC recomputed over the fuzzed bytes first, or
    /// nearly every input would stop at the checksum and the field checks behind it would go untested.
    /// </summary>
    public static void PeerRequest(byte[] input)
    {
        var header = Frame(input, PeerRequestHeader.Size, 64);
        if (PeerRequestHeader.TryRead(header, out var parsed))
        {
            // What the session does next with a parsed header.
            _ = parsed.PayloadLength;
            if (parsed.Length < 0 || parsed.Offset < 0 || parsed.PayloadLength < 0)
            {
                throw new InvalidOperationException($"TryRead accepted a negative field: {parsed}");
            }

            Span<byte> again = stackalloc byte[PeerRequestHeader.Size];
            parsed.Write(again);
            if (!PeerRequestHeader.TryRead(again, out var reparsed) || reparsed != parsed)
            {
                throw new InvalidOperationException($"a parsed header does not round-trip: {parsed}");
            }
        }
    }

    public static void PeerReply(byte[] input)
    {
        var header = Frame(input, PeerReplyHeader.Size, 24);
        if (PeerReplyHeader.TryRead(header, out var parsed) && parsed.Length < 0)
        {
            throw new InvalidOperationException($"TryRead accepted a negative length: {parsed}");
        }
    }

    /// <summary>Payload decoders: ENSURE_COMPONENT (handler side), changed ranges and extents (client side); byte 0 picks.</summary>
    public static void PeerPayload(byte[] input)
    {
        if (input.Length == 0)
        {
            return;
        }

        var payload = input.AsSpan(1);
        switch (input[0] % 3)
        {
            case 0:
                _ = DecodeEnsure(payload);
                break;
            case 1:
                _ = RemoteComponent.DecodeRanges(payload);
                break;
            default:
                _ = RemoteComponent.DecodeExtents(payload);
                break;
        }
    }

    /// <summary>The NBD transmission request header (28 bytes), as the transmission reader parses it.</summary>
    public static void NbdRequestHeader(byte[] input)
    {
        if (input.Length < NbdConstants.RequestHeaderSize)
        {
            return;
        }

        var request = NbdRequest.Parse(input.AsSpan(0, NbdConstants.RequestHeaderSize));
        Span<byte> again = stackalloc byte[NbdConstants.RequestHeaderSize];
        NbdRequest.Write(again, request.Flags, request.Command, request.Handle, request.Offset, request.Length);
        if (request.Magic == NbdConstants.RequestMagic && !again.SequenceEqual(input.AsSpan(0, NbdConstants.RequestHeaderSize)))
        {
            throw new InvalidOperationException("an NBD request header does not round-trip");
        }
    }

    /// <summary>
    /// The payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: the only option parser the handshake has as
    /// a function of its own (the others parse inline in methods that need a connection; see
    /// docs/security/limits-files-fuzzing.md). Private to <c>NbdHandshake</c>, so reached by reflection.
    /// </summary>
    public static void NbdMetaContext(byte[] input)
    {
        metaContextParser ??= (typeof(NbdRequest).Assembly.GetType("Converge.Nbd.NbdHandshake")
                ?.GetMethod("TryParseMetaContextRequest", BindingFlags.NonPublic | BindingFlags.Static)
            ?? throw new InvalidOperationException("NbdHandshake.TryParseMetaContextRequest is gone; update the nbd-meta-context harness"))
            .CreateDelegate<MetaContextParser>();
        if (metaContextParser(input, out var exportName, out var queries) && (exportName is null || queries is null || queries.Any(q => q is null)))
        {
            throw new InvalidOperationException("a parsed meta context request has null parts");
        }
    }

    private delegate bool MetaContextParser(byte[] data, out string exportName, out List<string> queries);

    private static MetaContextParser? metaContextParser;

    /// <summary>A metadata command as a log entry carries it: decoded, then applied to an empty and to an initialized state.</summary>
    public static void MetadataCommandJson(byte[] input)
    {
        var command = JsonSerializer.Deserialize(input, MetadataJsonContext.Default.MetadataCommand);
        if (command is null)
        {
            return;
        }

        _ = ClusterState.Empty.Apply(command);

        // Built at the first call, not in the type initializer: instrumented code must not run before SharpFuzz has
        // set up its coverage map.
        initialized ??= ClusterState.Empty.Apply(new InitializeCluster(
            Guid.Parse("00000000-0000-0000-0000-000000000001"), "c1", "fuzz", DateTimeOffset.UnixEpoch, Placement.StoragePolicy.Default, 3)).State;
        _ = initialized.Apply(command);
    }

    private static ClusterState? initialized;

    /// <summary>
    /// The first <paramref name="size"/> bytes (zero-padded); when the input is longer than a header, the header's CRC
    /// at <paramref name="crcAt"/> is made valid.
    /// </summary>
    private static byte[] Frame(byte[] input, int size, int crcAt)
    {
        var frame = new byte[size];
        input.AsSpan(0, Math.Min(size, input.Length)).CopyTo(frame);
        if (input.Length > size)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(crcAt), Checksums.Crc32C(frame.AsSpan(0, crcAt)));
        }

        return frame;
    }
}
