#!/usr/bin/env bash
# fio matrix: the same jobs against a Converge host and against nbdkit's file plugin, side by side.
#
#   bench/fio-matrix.sh            # RUNS=3 runs of every job on each target, 10 s each
#   RUNS=5 RUNTIME=20 SIZE=2G bench/fio-matrix.sh
#   JOBS='write-1m|qd1' RUNS=1 bench/fio-matrix.sh   # only some jobs
#   HOSTS=3 bench/fio-matrix.sh                      # an FTT=1 virtual disk on a local 3-host cluster
#   HOSTS=3 ENTRY=witness bench/fio-matrix.sh        # ... with fio on the host that holds no data replica
#   HOSTS=3 MIRROR=1 bench/fio-matrix.sh             # ... and a third target: a mirror built from nbdkit (bench/reference)
#
# Needs: the .NET SDK (builds Release if the binary is missing), fio, nbdkit, python3; MIRROR=1 also a C compiler and
# nbdkit's filter header (Debian: gcc, nbdkit-plugin-dev).
# Everything lives in one temp dir (removed at exit); every process is stopped by PID.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
RUNS="${RUNS:-3}"
RUNTIME="${RUNTIME:-10}"
SIZE="${SIZE:-1G}"            # working set of every job (preconditioned on both targets)
VDISK_SIZE="${VDISK_SIZE:-4GiB}"
DISK_SIZE="${DISK_SIZE:-8GiB}"
OUT="${OUT:-}"                # optional: directory to keep the fio JSON files
HOSTS="${HOSTS:-1}"           # 1: one standalone host; N > 1: a local N-host cluster ('converge up')
POLICY="${POLICY:-default}"   # cluster mode: the virtual disk's policy (default = FTT=1, RAID-1)
# Cluster mode: the host fio connects to (it becomes the coordinator). 'data': a host holding a data replica of the
# virtual disk (the VM runs beside its data); 'witness': a host without one (every I/O is remote); or a host name.
# Placement is random per cluster, so without this the 1 MiB figures swing with where the data landed.
ENTRY="${ENTRY:-data}"
# 1: also measure bench/reference/localcopy.c, the least a mirrored write costs here (a local copy, then nbdkit's nbd
# plugin on to a second nbdkit file over loopback; no checksums, log or allocation), as a third target "mirror".
MIRROR="${MIRROR:-0}"

for tool in fio nbdkit python3; do
  command -v "$tool" >/dev/null || { echo "fio-matrix: $tool is missing (./test.sh installs the tools)" >&2; exit 1; }
done

bin="$root/src/Converge.Cli/bin/Release/net10.0/converge"
if [ ! -x "$bin" ]; then
  echo "fio-matrix: building converge (Release)"
  dotnet build "$root/src/Converge.Cli" -c Release -nologo -v quiet -clp:ErrorsOnly
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/converge-bench.XXXXXX")"
host_pid=""
host_pids=""
cleanup() {
  if [ -f "$work/cluster/cluster.json" ]; then "$bin" down --data "$work/cluster" >/dev/null 2>&1 || true; fi
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill -TERM "$host_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$host_pid" 2>/dev/null || true
  fi
  for pidfile in "$work/nbdkit.pid" "$work/mirror.pid" "$work/mirror-peer.pid"; do
    if [ -f "$pidfile" ]; then kill -TERM "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  if [ -n "$OUT" ]; then mkdir -p "$OUT" && cp "$work"/*.json "$OUT"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# N distinct free ports in one call: separate calls can get the same port back once it is closed again.
free_ports() {
  python3 -c 'import socket, sys; ss = [socket.socket() for _ in range(int(sys.argv[1]))]; [s.bind(("127.0.0.1", 0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))' "${1:-1}"
}

read -r nbdkit_port mirror_port mirror_peer_port <<<"$(free_ports 3)"
if [ "$MIRROR" = 1 ]; then
  [ -f /usr/include/nbdkit-filter.h ] && command -v cc >/dev/null ||
    { echo "fio-matrix: MIRROR=1 needs a C compiler and nbdkit-filter.h (Debian: gcc nbdkit-plugin-dev)" >&2; exit 1; }
fi
if [ "$HOSTS" -gt 1 ]; then
  # A local cluster through 'converge up': four blocks of HOSTS consecutive free ports (NBD, API, peer, Raft).
  base="$(python3 - "$HOSTS" <<'PY'
import random, socket, sys
n = 4 * int(sys.argv[1])
for _ in range(200):
    base = random.randint(20000, 60000 - n)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()
PY
)"
  nbd_port=$base; api_port=$((base + HOSTS))
  "$bin" up --data "$work/cluster" --hosts "$HOSTS" --disk-size "$DISK_SIZE" --demo-size 64MiB \
    --nbd-port "$nbd_port" --api-port "$api_port" --peer-port $((base + 2 * HOSTS)) --raft-port $((base + 3 * HOSTS)) \
    >"$work/up.log" 2>&1 || { echo "fio-matrix: converge up failed"; tail -20 "$work/up.log"; exit 1; }
  host_pids="$(python3 -c 'import json,sys; print(" ".join(str(h["pid"]) for h in json.load(open(sys.argv[1]))["hosts"]))' "$work/cluster/cluster.json")"
  "$bin" vdisk create bench --size "$VDISK_SIZE" --policy "$POLICY" --api "http://127.0.0.1:$api_port" >/dev/null
  "$bin" vdisk layout bench --json --api "http://127.0.0.1:$api_port" >"$work/layout.json"
  entry="$(python3 - "$ENTRY" "$work/layout.json" "$work/cluster/cluster.json" <<'PY'
import json, sys
want, layout, hosts = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))["hosts"]
data = sorted({c["hostName"] for c in layout if c["role"] == "data"})
names = [h["name"] for h in hosts]
pick = {"data": data, "witness": [n for n in names if n not in data]}.get(want, [want] if want in names else [])
if not pick:
    sys.exit("fio-matrix: no host matches ENTRY=%s (data replicas on %s)" % (want, ", ".join(data)))
host = next(h for h in hosts if h["name"] == pick[0])
print(host["name"], host["nbd"].rsplit(":", 1)[1], ",".join(data))
PY
)"
  read -r entry_host nbd_port data_hosts <<<"$entry"
  echo "fio-matrix: ENTRY=$ENTRY: fio connects to $entry_host; data replicas on $data_hosts"
else
read -r nbd_port api_port <<<"$(free_ports 2)"
mkdir -p "$work/host"
"$bin" host run --data "$work/host" --disk "$work/host/d1.img:$DISK_SIZE" \
  --nbd-listen "127.0.0.1:$nbd_port" --api-listen "127.0.0.1:$api_port" >"$work/host.log" 2>&1 &
host_pid=$!
host_pids=$host_pid

python3 "$root/bench/lib/wait-ready.py" "$api_port" "$host_pid" || { echo "fio-matrix: the host did not become ready"; tail -20 "$work/host.log"; exit 1; }
"$bin" vdisk create bench --size "$VDISK_SIZE" --api "http://127.0.0.1:$api_port" >/dev/null
fi

# A sparse file of the virtual disk's size (retried without "iB" where truncate refuses the suffix).
sparse_file() { truncate -s "$VDISK_SIZE" "$1" 2>/dev/null || truncate -s "${VDISK_SIZE%iB}" "$1"; }
# nbdkit NAME PORT ARGS...: daemonizes with $work/NAME.pid (written once it listens), which cleanup stops it by.
start_nbdkit() {
  local name=$1 port=$2
  shift 2
  nbdkit -P "$work/$name.pid" -p "$port" -i 127.0.0.1 "$@"
  for _ in $(seq 1 50); do [ -s "$work/$name.pid" ] && break; sleep 0.1; done
}

sparse_file "$work/nbdkit.img"
start_nbdkit nbdkit "$nbdkit_port" file "$work/nbdkit.img"

declare -A uri=(
  [converge]="nbd://127.0.0.1:$nbd_port/bench"
  [nbdkit]="nbd://127.0.0.1:$nbdkit_port/"
)
targets=(converge nbdkit)
if [ "$MIRROR" = 1 ]; then
  cc -O2 -fPIC -shared -Wall -o "$work/localcopy.so" "$root/bench/reference/localcopy.c"
  sparse_file "$work/mirror-local.img"
  sparse_file "$work/mirror-peer.img"
  start_nbdkit mirror-peer "$mirror_peer_port" file "$work/mirror-peer.img"
  start_nbdkit mirror "$mirror_port" --filter="$work/localcopy.so" \
    nbd uri="nbd://127.0.0.1:$mirror_peer_port/" localfile="$work/mirror-local.img"
  uri[mirror]="nbd://127.0.0.1:$mirror_port/"
  targets+=(mirror)
fi

# name  rw  bs  iodepth
jobs=(
  "randread-4k-qd32 randread 4k 32"
  "randwrite-4k-qd32 randwrite 4k 32"
  "randwrite-4k-qd1 randwrite 4k 1"
  "read-1m-qd8 read 1m 8"
  "write-1m-qd8 write 1m 8"
)
if [ -n "${JOBS:-}" ]; then  # e.g. JOBS='write-1m|qd1': only the jobs whose name matches this regex
  selected=()
  for job in "${jobs[@]}"; do
    if [[ "${job%% *}" =~ $JOBS ]]; then selected+=("$job"); fi
  done
  jobs=("${selected[@]}")
fi

echo "fio-matrix: converge pid(s) $host_pids at ${uri[converge]} (HOSTS=$HOSTS), nbdkit at ${uri[nbdkit]}${uri[mirror]:+, mirror at ${uri[mirror]}}; $RUNS runs x ${RUNTIME}s, working set $SIZE"
for target in "${targets[@]}"; do
  echo "fio-matrix: preconditioning $target ($SIZE sequential write)"
  fio --name=precondition --ioengine=nbd --uri="${uri[$target]}" --rw=write --bs=1m --iodepth=8 \
    --size="$SIZE" --output-format=json --output="$work/precondition-$target.json" >/dev/null
done

# CPU time (user + system, in clock ticks) of a set of processes, to report CPU cost per I/O beside throughput:
# on a shared machine it moves far less with load than throughput does.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    if fields="$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null)"; then
      total=$((total + ${fields% *} + ${fields#* }))
    fi
  done
  echo "$total"
}
declare -A pids=(
  [converge]="$host_pids"
  [nbdkit]="$(cat "$work/nbdkit.pid")"
)
if [ "$MIRROR" = 1 ]; then pids[mirror]="$(cat "$work/mirror.pid") $(cat "$work/mirror-peer.pid")"; fi

for run in $(seq 1 "$RUNS"); do
  for job in "${jobs[@]}"; do
    read -r name rw bs depth <<<"$job"
    for target in "${targets[@]}"; do
      # shellcheck disable=SC2086  # pid lists split on purpose
      before="$(cpu_ticks ${pids[$target]})"
      load="$(cut -d' ' -f1 /proc/loadavg)"
      fio --name="$name" --ioengine=nbd --uri="${uri[$target]}" --rw="$rw" --bs="$bs" --iodepth="$depth" \
        --size="$SIZE" --time_based --runtime="$RUNTIME" --randrepeat=0 \
        --output-format=json --output="$work/$name-$target-$run.json" >/dev/null
      # shellcheck disable=SC2086
      echo "$(( $(cpu_ticks ${pids[$target]}) - before )) $(getconf CLK_TCK) $load" >"$work/$name-$target-$run.cpu"
      echo "fio-matrix: run $run/$RUNS $name on $target done (load average $load)"
    done
  done
done

rss_kb=0   # the largest peak RSS (VmHWM) of any host process
for pid in $host_pids; do
  kb="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
  if [ "${kb:-0}" -gt "$rss_kb" ]; then rss_kb=$kb; fi
done

python3 - "$work" "$RUNS" "$rss_kb" "$MIRROR" "${jobs[@]%% *}" <<'PY'
import json, os, statistics, sys
work, runs, rss_kb, mirror, jobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3] or 0), sys.argv[4] == "1", sys.argv[5:]
targets = ("converge", "nbdkit", "mirror") if mirror else ("converge", "nbdkit")

def load(name, target, run):
    with open(os.path.join(work, "%s-%s-%d.json" % (name, target, run))) as f:
        job = json.load(f)["jobs"][0]
    side = job["read"] if job["read"]["io_bytes"] > 0 else job["write"]
    with open(os.path.join(work, "%s-%s-%d.cpu" % (name, target, run))) as f:
        ticks, hz, load = f.read().split()
    ios = side["total_ios"] or 1
    return {
        "cpu_us_per_io": int(ticks) / int(hz) * 1e6 / ios,
        "load": float(load),
        "iops": side["iops"],
        "mibs": side["bw_bytes"] / 2**20,
        "lat_mean_us": side["clat_ns"]["mean"] / 1000,
        "lat_p99_us": side["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000,
        "errors": job["error"],
    }

def median(name, target, key):
    return statistics.median(load(name, target, r)[key] for r in range(1, runs + 1))

print()
print("| job | metric | Converge | nbdkit file | Converge / nbdkit | CPU µs per I/O, Converge (all hosts) / nbdkit |")
print("|---|---|---:|---:|---:|---:|")
for name in jobs:
    key, unit = ("mibs", "MiB/s") if "1m" in name else ("iops", "IOPS")
    c, n = median(name, "converge", key), median(name, "nbdkit", key)
    cc, nc = median(name, "converge", "cpu_us_per_io"), median(name, "nbdkit", "cpu_us_per_io")
    print("| %s | %s | %.0f | %.0f | %.2f | %.0f / %.0f |" % (name, unit, c, n, c / n if n else float("nan"), cc, nc))
for key, label in (("lat_mean_us", "mean"), ("lat_p99_us", "p99")) if "randwrite-4k-qd1" in jobs else ():
    c, n = median("randwrite-4k-qd1", "converge", key), median("randwrite-4k-qd1", "nbdkit", key)
    print("| randwrite-4k-qd1 | %s completion latency (us) | %.0f | %.0f | %.2f |" % (label, c, n, c / n if n else float("nan")))
if mirror:
    print()
    print("The mirror reference (bench/reference/localcopy.c: a local copy, then nbdkit's nbd plugin to a second nbdkit file):")
    print()
    print("| job | metric | mirror | mirror / nbdkit | Converge / mirror | CPU µs per I/O, mirror (both nbdkits) |")
    print("|---|---|---:|---:|---:|---:|")
    for name in jobs:
        key, unit = ("mibs", "MiB/s") if "1m" in name else ("iops", "IOPS")
        c, n, m = (median(name, t, key) for t in ("converge", "nbdkit", "mirror"))
        print("| %s | %s | %.0f | %.2f | %.2f | %.0f |" % (
            name, unit, m, m / n if n else float("nan"), c / m if m else float("nan"), median(name, "mirror", "cpu_us_per_io")))
print()
loads = [load(n, t, r)["load"] for n in jobs for t in targets for r in range(1, runs + 1)]
print("medians of %d runs; largest peak RSS of a converge host (VmHWM): %.0f MiB" % (runs, rss_kb / 1024))
print("1-minute load average at the start of each fio run: median %.1f, range %.1f-%.1f" % (
    statistics.median(loads), min(loads), max(loads)))
errors = sum(load(n, t, r)["errors"] for n in jobs for t in targets for r in range(1, runs + 1))
if errors:
    print("WARNING: %d fio jobs reported errors" % errors)
PY
