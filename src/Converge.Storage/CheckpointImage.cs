using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Converge.Common;

namespace Converge.Storage;

/// <summary>
/// The full metadata image written to a checkpoint slot: magic, LSN, component count, then per component its id, size,
/// name and its mapped blocks as runs of consecutive logical blocks (8-byte run header, 8 bytes per block).
/// </summary>
internal static class CheckpointImage
{
    private const int MaxRun = 1 << 16;
    private static ReadOnlySpan<byte> Magic => "CVGCKPT1"u8;

    internal readonly record struct ComponentEntry(Guid Id, string Name, long Size, List<(long FirstLogical, ulong[] Entries)> Runs);

    /// <summary>Caller returns the array to <see cref="ArrayPool{T}.Shared"/>.</summary>
    public static (byte[] Buffer, int Length) Serialize(IReadOnlyCollection<StoreComponent> components, long lsn)
    {
        var w = new Writer(64 << 10);
        w.Bytes(Magic);
        w.Int64(lsn);
        w.Int64(components.Count);
        foreach (var c in components)
        {
            w.Guid(c.Id);
            w.Int64(c.Size);
            var name = Encoding.UTF8.GetBytes(c.Name);
            w.Int64(name.Length);
            w.Bytes(name);
            var countAt = w.Reserve();
            long runs = 0;
            var blocks = c.Size >> BlockGeometry.BlockShift;
            long runStart = -1;
            var runHeaderAt = 0;
            var runLength = 0;
            for (long chunk = 0; chunk << BlockMap.ChunkShift < blocks; chunk++)
            {
                var entries = c.Map.Chunk(chunk);
                if (entries is null)
                {
                    CloseRun();
                    continue;
                }

                for (var i = 0; i < entries.Length; i++)
                {
                    var e = entries[i];
                    if (e == 0)
                    {
                        CloseRun();
                        continue;
                    }

                    if (runStart < 0)
                    {
                        runStart = (chunk << BlockMap.ChunkShift) + i;
                        runHeaderAt = w.Reserve();
                        runLength = 0;
                    }

                    w.UInt64(e);
                    if (++runLength == MaxRun)
                    {
                        CloseRun();
                    }
                }
            }

            CloseRun();
            w.Patch(countAt, (ulong)runs);

            void CloseRun()
            {
                if (runStart >= 0)
                {
                    w.Patch(runHeaderAt, (ulong)runStart | ((ulong)(runLength - 1) << 48));
                    runs++;
                    runStart = -1;
                }
            }
        }

        return (w.Buffer, w.Length);
    }

    public static (long Lsn, List<ComponentEntry> Components) Parse(ReadOnlySpan<byte> image)
    {
        var r = new Reader(image);
        if (!r.Bytes(8).SequenceEqual(Magic))
        {
            throw new InvalidDataException("checkpoint image has a bad magic");
        }

        var lsn = r.Int64();
        var count = r.Int64();
        var list = new List<ComponentEntry>();
        for (long i = 0; i < count; i++)
        {
            var id = new Guid(r.Bytes(16));
            var size = r.Int64();
            var nameLength = r.Int64();
            if (size <= 0 || size % BlockGeometry.BlockSize != 0 || nameLength is < 0 or > 255)
            {
                throw new InvalidDataException($"checkpoint image has an invalid component header for {id}");
            }

            var name = Encoding.UTF8.GetString(r.Bytes((int)nameLength));
            var runCount = r.Int64();
            var runs = new List<(long, ulong[])>();
            for (long k = 0; k < runCount; k++)
            {
                var header = r.UInt64();
                var first = (long)(header & ((1UL << 48) - 1));
                var length = (int)(header >> 48) + 1;
                if (first + length > size >> BlockGeometry.BlockShift)
                {
                    throw new InvalidDataException($"checkpoint image maps blocks beyond the end of component {id}");
                }

                var entries = new ulong[length];
                for (var j = 0; j < length; j++)
                {
                    entries[j] = r.UInt64();
                }

                runs.Add((first, entries));
            }

            list.Add(new ComponentEntry(id, name, size, runs));
        }

        return (lsn, list);
    }

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;

        public ReadOnlySpan<byte> Bytes(int n)
        {
            if (n < 0 || _pos + n > _data.Length)
            {
                throw new InvalidDataException("checkpoint image is truncated");
            }

            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        public long Int64() => BinaryPrimitives.ReadInt64LittleEndian(Bytes(8));

        public ulong UInt64() => BinaryPrimitives.ReadUInt64LittleEndian(Bytes(8));
    }

    private sealed class Writer(int initial)
    {
        public byte[] Buffer { get; private set; } = ArrayPool<byte>.Shared.Rent(initial);

        public int Length { get; private set; }

        public void Bytes(ReadOnlySpan<byte> data)
        {
            Ensure(data.Length);
            data.CopyTo(Buffer.AsSpan(Length));
            Length += data.Length;
        }

        public void Int64(long value)
        {
            Ensure(8);
            BinaryPrimitives.WriteInt64LittleEndian(Buffer.AsSpan(Length), value);
            Length += 8;
        }

        public void UInt64(ulong value)
        {
            Ensure(8);
            BinaryPrimitives.WriteUInt64LittleEndian(Buffer.AsSpan(Length), value);
            Length += 8;
        }

        public void Guid(Guid value)
        {
            Ensure(16);
            value.TryWriteBytes(Buffer.AsSpan(Length));
            Length += 16;
        }

        public int Reserve()
        {
            var at = Length;
            UInt64(0);
            return at;
        }

        public void Patch(int at, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(Buffer.AsSpan(at), value);

        private void Ensure(int more)
        {
            if (Length + more <= Buffer.Length)
            {
                return;
            }

            var grown = ArrayPool<byte>.Shared.Rent(checked(Math.Max(Buffer.Length * 2, Length + more)));
            Buffer.AsSpan(0, Length).CopyTo(grown);
            ArrayPool<byte>.Shared.Return(Buffer);
            Buffer = grown;
        }
    }
}
