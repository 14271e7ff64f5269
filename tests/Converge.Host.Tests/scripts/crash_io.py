#!/usr/bin/python3
"""Crash consistency workload and checker for one Converge export.

  crash_io.py write  URI SEED [FLUSH_EVERY] [FUA_PERCENT] [DEPTH]
  crash_io.py verify URI SEED WRITER_LOG

write: up to DEPTH requests in flight (default 1; never two to the same block, since NBD does not order
overlapping in-flight writes), writes 4 KiB blocks at offsets drawn from random.Random(SEED), forever (until the
connection dies). Every block is self-describing: 256 copies of a 16-byte record
(seq u64, block u32, crc32(seq, block) u32). Some writes carry FUA, and every FLUSH_EVERY writes a flush is sent.
It prints, flushed, one line per acknowledged durability point:
  FLUSHED <seq>   every write with a sequence number <= seq is durable
  FUA <seq>       write seq is durable
and when the connection fails:  STOPPED <last attempted seq> <error>

verify: replays the same random sequence up to the last attempted write and reads every block back. A block must
be internally consistent (all 256 records equal and valid), name its own block number, and hold either the last
write known durable for it or a later write to that block; a block never durably written may also read as zeros.
Any read error (e.g. a checksum error) fails. Prints "VERIFIED blocks=.. written=.. durable=.." on success.
"""
import random
import struct
import sys
import zlib

import nbd

BLOCK = 4096
RECORD = struct.Struct("<QII")


def block_content(seq, block):
    record = RECORD.pack(seq, block, zlib.crc32(struct.pack("<QI", seq, block)))
    return record * (BLOCK // RECORD.size)


def plan(seed, blocks):
    """Yields (seq, block, fua) forever; seq starts at 1."""
    rng = random.Random(seed)
    seq = 0
    while True:
        seq += 1
        yield seq, rng.randrange(blocks), rng.random()


def write(uri, seed, flush_every, fua_percent, depth):
    h = nbd.NBD()
    h.connect_uri(uri)
    blocks = h.get_size() // BLOCK
    inflight = {}  # cookie -> (seq, block, fua)
    busy = set()
    seq = 0

    def reap():
        for cookie in list(inflight):
            if h.aio_command_completed(cookie):  # raises if the write failed
                done_seq, block, fua = inflight.pop(cookie)
                busy.discard(block)
                if fua:
                    print("FUA %d" % done_seq, flush=True)

    try:
        for seq, block, r in plan(seed, blocks):
            while len(inflight) >= depth or block in busy:
                h.poll(-1)
                reap()
            fua = r * 100 < fua_percent
            cookie = h.aio_pwrite(block_content(seq, block), block * BLOCK, flags=nbd.CMD_FLAG_FUA if fua else 0)
            inflight[cookie] = (seq, block, fua)
            busy.add(block)
            if seq % flush_every == 0:
                while inflight:
                    h.poll(-1)
                    reap()
                h.flush()
                print("FLUSHED %d" % seq, flush=True)
    except (nbd.Error, OSError) as e:
        print("STOPPED %d %s" % (seq, str(e).replace("\n", " ")), flush=True)
        return 0
    return 0


def verify(uri, seed, writer_log):
    flushed = 0
    fua = set()
    attempted = None
    with open(writer_log) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "FLUSHED":
                flushed = max(flushed, int(parts[1]))
            elif parts[0] == "FUA":
                fua.add(int(parts[1]))
            elif parts[0] == "STOPPED":
                attempted = int(parts[1])
    if attempted is None:
        raise SystemExit("writer log has no STOPPED line: the writer did not see the crash")

    h = nbd.NBD()
    h.connect_uri(uri)
    blocks = h.get_size() // BLOCK

    # For every block: the sequence numbers written to it (ascending), and the newest durable one.
    writes = {}
    required = {}
    for seq, block, _ in plan(seed, blocks):
        if seq > attempted:
            break
        writes.setdefault(block, set()).add(seq)
        if seq <= flushed or seq in fua:
            required[block] = seq

    zero = bytes(BLOCK)
    errors = []
    chunk = 256  # blocks per read (1 MiB)
    for first in range(0, blocks, chunk):
        count = min(chunk, blocks - first)
        try:
            data = h.pread(count * BLOCK, first * BLOCK)
        except nbd.Error as e:
            errors.append("read of blocks %d..%d failed: %s" % (first, first + count - 1, e.string))
            continue
        for i in range(count):
            block = first + i
            content = data[i * BLOCK:(i + 1) * BLOCK]
            need = required.get(block)
            if content == zero:
                if need is not None:
                    errors.append("block %d reads zeros, but write %d to it was durable" % (block, need))
                continue
            seq, named, crc = RECORD.unpack_from(content, 0)
            if content != content[:RECORD.size] * (BLOCK // RECORD.size):
                errors.append("block %d is torn: its records differ (first says seq %d)" % (block, seq))
                continue
            if crc != zlib.crc32(struct.pack("<QI", seq, named)) or named != block:
                errors.append("block %d holds a bad or misplaced record (seq %d, block %d)" % (block, seq, named))
                continue
            if seq not in writes.get(block, ()):
                errors.append("block %d holds seq %d, which never targeted it" % (block, seq))
                continue
            if need is not None and seq < need:
                errors.append("block %d holds seq %d, older than durable write %d" % (block, seq, need))
        if len(errors) > 20:
            break

    if errors:
        for e in errors[:20]:
            print("ERROR", e, flush=True)
        return 1
    print("VERIFIED blocks=%d written=%d durable=%d flushed=%d fua=%d" % (
        blocks, attempted, len(required), flushed, len(fua)), flush=True)
    return 0


def main():
    mode = sys.argv[1]
    if mode == "write":
        flush_every = int(sys.argv[4]) if len(sys.argv) > 4 else 64
        fua_percent = float(sys.argv[5]) if len(sys.argv) > 5 else 5
        depth = int(sys.argv[6]) if len(sys.argv) > 6 else 1
        return write(sys.argv[2], int(sys.argv[3]), flush_every, fua_percent, depth)
    if mode == "verify":
        return verify(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
