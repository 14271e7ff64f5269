#!/usr/bin/env bash
# NBD over TLS against plain NBD on one standalone host: the same host (--nbd-tls on, so both are served), the same
# virtual disk, fio's nbd engine with nbd:// or nbds://, alternating per round. Server certificate only: fio cannot
# hand libnbd a client certificate (see below); a client certificate changes the handshake, not the data path.
#
#   bench/tls-bench.sh                 # RUNS=3 rounds, RUNTIME=10 s per job, 1 GiB working set
#   RUNS=5 RUNTIME=20 bench/tls-bench.sh
#
# Jobs: randwrite 4k QD32 (IOPS) and write 1m QD8 (MiB/s). Prints medians, the TLS / plain ratio, and the host's CPU
# time per I/O (from /proc/PID/stat), which is the steadier figure on a shared machine.
# Needs: the .NET SDK (builds Release if the binary is missing), fio, openssl, python3. Everything lives in one temp
# dir (removed at exit); the host is stopped by PID.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
RUNS="${RUNS:-3}"
RUNTIME="${RUNTIME:-10}"
SIZE="${SIZE:-1G}"
VDISK_SIZE="${VDISK_SIZE:-4GiB}"
DISK_SIZE="${DISK_SIZE:-8GiB}"

for tool in fio openssl python3; do
  command -v "$tool" >/dev/null || { echo "tls-bench: $tool is missing" >&2; exit 1; }
done

bin="$root/src/Converge.Cli/bin/Release/net10.0/converge"
if [ ! -x "$bin" ]; then
  echo "tls-bench: building converge (Release)"
  dotnet build "$root/src/Converge.Cli" -c Release -nologo -v quiet -clp:ErrorsOnly
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/converge-tls-bench.XXXXXX")"
host_pid=""
cleanup() {
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill -TERM "$host_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$host_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A CA, the server's certificate (127.0.0.1) and a client certificate (CN=bench), ECDSA P-256, in the layout libnbd
# reads from tls-certificates=DIR.
pki="$work/pki"
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca-cert.pem -days 1 -subj "/CN=bench CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server-key.pem -out server.csr -subj "/CN=localhost"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 1 -extfile server.ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client-key.pem -out client.csr -subj "/CN=bench"
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out client-cert.pem -days 1 -extfile client.ext
) >/dev/null 2>&1

read -r nbd_port api_port <<<"$(python3 -c 'import socket; ss = [socket.socket() for _ in range(2)]; [s.bind(("127.0.0.1", 0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))')"
mkdir -p "$work/host"
"$bin" host run --data "$work/host" --disk "$work/host/d1.img:$DISK_SIZE" \
  --nbd-listen "127.0.0.1:$nbd_port" --api-listen "127.0.0.1:$api_port" \
  --nbd-tls on --nbd-tls-cert "$pki/server-cert.pem" --nbd-tls-key "$pki/server-key.pem" \
  >"$work/host.log" 2>&1 &
host_pid=$!

python3 "$root/bench/lib/wait-ready.py" "$api_port" "$host_pid" || { echo "tls-bench: the host did not become ready"; tail -20 "$work/host.log"; exit 1; }
token=()
if [ -f "$work/host/admin-token" ]; then token=(--token "$(cat "$work/host/admin-token")"); fi
"$bin" vdisk create bench --size "$VDISK_SIZE" --api "http://127.0.0.1:$api_port" "${token[@]}" >/dev/null

# fio does not let libnbd read files named in a URI (tls-certificates=DIR is refused), so the CA goes where libnbd
# looks by default, $HOME/.pki/libnbd (libnbd 1.14 sends no client certificate from there).
mkdir -p "$work/home/.pki"
ln -s "$pki" "$work/home/.pki/libnbd"
declare -A uri=(
  [plain]="nbd://127.0.0.1:$nbd_port/bench"
  [tls]="nbds://127.0.0.1:$nbd_port/bench"
)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$host_pid/stat"; }

fio --name=precondition --ioengine=nbd --uri="${uri[plain]}" --rw=write --bs=1m --iodepth=8 --size="$SIZE" \
  --output-format=json --output="$work/precondition.json" >/dev/null

jobs=("randwrite-4k-qd32 randwrite 4k 32" "write-1m-qd8 write 1m 8")
echo "tls-bench: $RUNS rounds of ${RUNTIME} s per job and mode; load $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  for job in "${jobs[@]}"; do
    read -r name rw bs depth <<<"$job"
    # Alternate which mode goes first, so a drift in machine load does not favour one.
    if [ $((run % 2)) -eq 1 ]; then modes=(plain tls); else modes=(tls plain); fi
    for mode in "${modes[@]}"; do
      before=$(cpu_ticks)
      HOME="$work/home" fio --name="$name" --ioengine=nbd --uri="${uri[$mode]}" --rw="$rw" --bs="$bs" --iodepth="$depth" \
        --size="$SIZE" --time_based --runtime="$RUNTIME" --randrepeat=0 --output-format=json \
        --output="$work/$name.$mode.$run.json" >/dev/null
      echo $(( $(cpu_ticks) - before )) >"$work/$name.$mode.$run.cpu"
      echo "  round $run $name $mode done"
    done
  done
done

python3 - "$work" "$RUNS" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
work, runs, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def one(name, mode, run):
    w = json.load(open(f"{work}/{name}.{mode}.{run}.json"))["jobs"][0]["write"]
    ticks = int(open(f"{work}/{name}.{mode}.{run}.cpu").read())
    ios = w["total_ios"]
    return {"iops": w["iops"], "mibs": w["bw_bytes"] / 2**20, "cpu_us": ticks / hz * 1e6 / max(ios, 1)}
def median(name, mode, key):
    return statistics.median(one(name, mode, r)[key] for r in range(1, runs + 1))
print()
print("| job | plain | TLS | TLS / plain | host CPU per I/O, plain | TLS |")
print("|---|---:|---:|---:|---:|---:|")
for name, key, unit in (("randwrite-4k-qd32", "iops", "IOPS"), ("write-1m-qd8", "mibs", "MiB/s")):
    p, t = median(name, "plain", key), median(name, "tls", key)
    cp, ct = median(name, "plain", "cpu_us"), median(name, "tls", "cpu_us")
    print(f"| {name} ({unit}) | {p:.0f} | {t:.0f} | {t / p:.2f} | {cp:.0f} µs | {ct:.0f} µs |")
print()
for name, key in (("randwrite-4k-qd32", "iops"), ("write-1m-qd8", "mibs")):
    for mode in ("plain", "tls"):
        print(f"{name} {mode}: " + ", ".join(f"{one(name, mode, r)[key]:.0f}" for r in range(1, runs + 1)))
PY
