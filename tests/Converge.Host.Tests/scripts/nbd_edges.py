#!/usr/bin/python3
"""NBD protocol edges end to end with libnbd against a running Converge export.

usage: nbd_edges.py URI
The export must be at least 64 MiB and freshly created (all zeros, nothing allocated).
Prints one line per check; any failure raises (exit code 1).
"""
import errno
import os
import sys

import nbd

MiB = 1 << 20
HOLE = nbd.STATE_HOLE
ZERO = nbd.STATE_ZERO


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def extents(h, length, offset):
    """[(offset, length, flags)] of base:allocation covering [offset, offset+length)."""
    out = []

    def cb(metacontext, off, entries, err):
        if metacontext != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        pos = off
        for i in range(0, len(entries), 2):
            out.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]
        return 0

    pos = offset
    end = offset + length
    while pos < end:
        before = len(out)
        h.block_status(end - pos, pos, cb)
        if len(out) == before:
            raise AssertionError("block_status returned no extents at %d" % pos)
        pos = out[-1][0] + out[-1][1]
    return out


def flags_over(h, length, offset):
    """Every flag value reported anywhere in [offset, offset+length)."""
    return {f for (o, l, f) in extents(h, length, offset) if o < offset + length and o + l > offset}


def errno_name(e):
    """libnbd's python binding gives the errno as a name ("ENOTSUP") in some versions, as a number in others."""
    if isinstance(e.errno, int):
        return errno.errorcode.get(e.errno, str(e.errno))
    return e.errno


def expect_error(fn, what, errnos=None):
    try:
        fn()
    except nbd.Error as e:
        if errnos is not None and errno_name(e) not in errnos:
            raise AssertionError("%s: failed with errno %s (%s), expected one of %s" % (what, e.errno, e.string, errnos))
        print("ok: %s -> error %s (%s)" % (what, e.errno, e.string), flush=True)
        return
    raise AssertionError("%s: succeeded, expected an error" % what)


def main():
    uri = sys.argv[1]
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    size = h.get_size()
    check(size >= 64 * MiB, "export size %d >= 64 MiB" % size)

    # Negotiated capabilities.
    check(h.get_structured_replies_negotiated(), "structured replies negotiated")
    check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation negotiated")
    for name in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_cache"):
        check(getattr(h, name)(), name)
    check(not h.is_read_only(), "writable")
    maximum = h.get_block_size(nbd.SIZE_MAXIMUM)
    check(maximum == 0 or maximum >= 32 * MiB, "maximum block size %d allows 32 MiB requests" % maximum)

    # A fresh export is one hole that reads as zeros.
    check(h.pread(MiB, 0) == bytes(MiB), "fresh export reads zeros")
    check(flags_over(h, 4 * MiB, 0) == {HOLE | ZERO}, "fresh export is hole+zero")

    # Write, then block status shows data there and a hole after it.
    data = os.urandom(MiB)
    h.pwrite(data, 0)
    check(h.pread(MiB, 0) == data, "1 MiB write reads back")
    check(all(f & HOLE == 0 for f in flags_over(h, MiB, 0)), "written range is allocated")
    check(flags_over(h, MiB, MiB) == {HOLE | ZERO}, "range after the write is still a hole")

    # Trim: reads zeros and is reported as zero (and a hole, the store unmaps whole blocks).
    h.trim(MiB, 0)
    check(h.pread(MiB, 0) == bytes(MiB), "trimmed range reads zeros")
    check(flags_over(h, MiB, 0) == {HOLE | ZERO}, "trimmed range is hole+zero")

    # Unaligned trim: the partial blocks are zeroed, the rest survives.
    h.pwrite(b"\xa5" * 16384, 4 * MiB)
    h.trim(5000, 4 * MiB + 1000)
    got = h.pread(16384, 4 * MiB)
    check(got == b"\xa5" * 1000 + bytes(5000) + b"\xa5" * (16384 - 6000), "unaligned trim zeroes exactly its range")

    # WRITE_ZEROES with NO_HOLE writes real zero blocks: allocated, reads zeros.
    h.pwrite(b"\x5a" * MiB, 8 * MiB)
    h.zero(MiB, 8 * MiB, nbd.CMD_FLAG_NO_HOLE)
    check(h.pread(MiB, 8 * MiB) == bytes(MiB), "zero NO_HOLE reads zeros")
    check(all(f & HOLE == 0 for f in flags_over(h, MiB, 8 * MiB)), "zero NO_HOLE leaves the range allocated")

    # WRITE_ZEROES without NO_HOLE punches; FAST_ZERO is fine then.
    h.pwrite(b"\x5a" * MiB, 10 * MiB)
    h.zero(MiB, 10 * MiB, nbd.CMD_FLAG_FAST_ZERO)
    check(h.pread(MiB, 10 * MiB) == bytes(MiB), "zero FAST_ZERO reads zeros")
    check(flags_over(h, MiB, 10 * MiB) == {HOLE | ZERO}, "zero FAST_ZERO leaves a hole")
    h.pwrite(b"\x5a" * MiB, 12 * MiB)
    h.zero(MiB, 12 * MiB)
    check(h.pread(MiB, 12 * MiB) == bytes(MiB), "plain zero reads zeros")

    # NO_HOLE + FAST_ZERO cannot be fast: refused (ENOTSUP), data unchanged, handle still usable.
    h.pwrite(b"\x77" * MiB, 14 * MiB)
    expect_error(lambda: h.zero(MiB, 14 * MiB, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO),
                 "zero NO_HOLE|FAST_ZERO", {"ENOTSUP", "EOPNOTSUPP"})
    check(h.pread(MiB, 14 * MiB) == b"\x77" * MiB, "refused fast zero changed nothing")

    # FUA write, flush, cache.
    fua = os.urandom(65536)
    h.pwrite(fua, 16 * MiB + 4096, nbd.CMD_FLAG_FUA)
    check(h.pread(65536, 16 * MiB + 4096) == fua, "FUA write reads back")
    h.flush()
    print("ok: flush", flush=True)
    h.cache(MiB, 16 * MiB)
    print("ok: cache", flush=True)

    # Unaligned small writes (read-modify-write inside the store).
    h.pwrite(b"\x11" * 8192, 18 * MiB)
    h.pwrite(b"hello", 18 * MiB + 4093)
    got = h.pread(8192, 18 * MiB)
    check(got == b"\x11" * 4093 + b"hello" + b"\x11" * (8192 - 4098), "unaligned 5-byte write across a block boundary")

    # 32 MiB in one request each way.
    big = os.urandom(32 * MiB)
    h.pwrite(big, 24 * MiB)
    check(h.pread(32 * MiB, 24 * MiB) == big, "32 MiB pwrite/pread")

    # Out of range: turn off libnbd's own bounds check so the server sees the request.
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_BOUNDS)
    expect_error(lambda: h.pread(4096, size), "pread past the end")
    expect_error(lambda: h.pread(8192, size - 4096), "pread straddling the end")
    expect_error(lambda: h.pwrite(b"x" * 4096, size), "pwrite past the end")
    expect_error(lambda: h.trim(4096, size), "trim past the end")
    check(h.pread(4096, size - 4096) == bytes(4096), "last block still readable")
    check(h.pread(65536, 16 * MiB + 4096) == fua, "handle still usable after errors")

    # The last block is writable.
    h.pwrite(b"\xee" * 4096, size - 4096)
    check(h.pread(4096, size - 4096) == b"\xee" * 4096, "last block write")

    h.flush()
    h.shutdown()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
