#!/usr/bin/env python3
"""Checks a follower's strace (from `probe run ... --strace DIR`): was every AppendEntries reply sent only after the
entries it acknowledges were flushed?

DotNext 6.12's WriteAheadLog flushes the log pages (msync) and then writes its 20-byte checkpoint file with
write-through (pwrite64 on an O_DSYNC handle): version u32, commit index i64, last flushed index i64. Recovery trusts
the checkpoint's last index. A reply to AppendEntries is a 17-byte sendto: term i64, last index i64, result u8.
A reply is "early" when it acknowledges an index beyond the last index of the newest completed checkpoint write.
"""
import codecs
import re
import struct
import sys

CALL = re.compile(r'^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+) (\w+)\((\d+), "((?:[^"\\]|\\.)*)", (\d+)')
RESUMED = re.compile(r'^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+) <\.\.\. (\w+) resumed>.*= (-?\d+)')


def decode(text):
    return codecs.escape_decode(text.encode('latin-1'))[0]


def seconds(h, m, s):
    return int(h) * 3600 + int(m) * 60 + float(s)


def analyze(path):
    durable = 0             # last index of the newest completed checkpoint write (index 0: the empty log)
    pending = {}            # pid -> (syscall, payload) of an unfinished checkpoint write
    replies = early = 0
    worst = 0.0
    early_start = {}        # index -> time of the first early reply acknowledging it
    lag = []
    for line in open(path, encoding='latin-1'):
        m = CALL.match(line)
        if m:
            pid, h, mi, s, call, _fd, payload, size = m.groups()
            t = seconds(h, mi, s)
            data = decode(payload)
            if call == 'pwrite64' and int(size) == 20 and len(data) == 20:
                if 'unfinished' in line:
                    pending[pid] = data
                elif line.rstrip().endswith('= 20'):
                    durable = max(durable, struct.unpack_from('<q', data, 12)[0])
                    lag.extend(t - early_start.pop(i) for i in [i for i in early_start if i <= durable])
            elif call in ('sendto', 'write') and int(size) == 17 and len(data) == 17:
                _term, last, result = struct.unpack('<qqB', data)
                if result == 0:
                    continue  # rejected: acknowledges nothing
                replies += 1
                if last > durable:
                    early += 1
                    early_start.setdefault(last, t)
            continue
        m = RESUMED.match(line)
        if m and m.group(5) == 'pwrite64' and m.group(1) in pending:
            data = pending.pop(m.group(1))
            if m.group(6) == '20':
                t = seconds(*m.group(2, 3, 4))
                durable = max(durable, struct.unpack_from('<q', data, 12)[0])
                lag.extend(t - early_start.pop(i) for i in [i for i in early_start if i <= durable])
    if lag:
        worst = max(lag)
    lag.sort()
    median = lag[len(lag) // 2] * 1000 if lag else 0.0
    print(f'{path}: {replies} AppendEntries replies, {early} sent before the acknowledged index was flushed'
          f' and checkpointed; flush came {median:.2f} ms (median) / {worst * 1000:.2f} ms (max) after such a reply')
    return early


if __name__ == '__main__':
    total = sum(analyze(p) for p in sys.argv[1:])
    sys.exit(1 if total else 0)
