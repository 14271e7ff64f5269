using System.Buffers.Binary;

namespace Converge.Nbd.Protocol;

/// <summary>A parsed transmission-phase request header (28 bytes on the wire).</summary>
internal readonly record struct NbdRequest(uint Magic, CommandFlags Flags, NbdCommand Command, ulong Handle, ulong Offset, uint Length)
{
    public static NbdRequest Parse(ReadOnlySpan<byte> header) => new(
        BinaryPrimitives.ReadUInt32BigEndian(header),
        (CommandFlags)BinaryPrimitives.ReadUInt16BigEndian(header[4..]),
        (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(header[6..]),
        BinaryPrimitives.ReadUInt64BigEndian(header[8..]),
        BinaryPrimitives.ReadUInt64BigEndian(header[16..]),
        BinaryPrimitives.ReadUInt32BigEndian(header[24..]));

    public static void Write(Span<byte> destination, CommandFlags flags, NbdCommand command, ulong handle, ulong offset, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdConstants.RequestMagic);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)command);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], handle);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], length);
    }
}
