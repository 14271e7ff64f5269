#!/usr/bin/env bash
# Failure benchmarks (issue 4): fio 4 KiB random writes against an FTT=1 virtual disk on a local 3-host cluster.
#
#   bench/failure-bench.sh                    # every phase
#   PHASES='kill stop' bench/failure-bench.sh # some phases: kill stop delta rebuild
#   RESULTS=1 bench/failure-bench.sh          # also append the table to bench/RESULTS.md (dated "Issue 4" section)
#
# Phases:
#   kill    longest client stall (gap with no write completion, from fio's per-I/O latency log) around kill -9 of a
#           data replica host; target <= 1 s. The host is restarted afterwards and compliance awaited.
#   stop    the same around SIGSTOP of a data replica host (SIGCONT 15 s later); target <= 5 s.
#   delta   a data replica host is killed, fio writes N distinct 4 KiB blocks during ABSENCE seconds (random map: every
#           block at most once), the host comes back; bytes copied by the resync (sum of bytesCopied of
#           GET /internal/v1/resync over the hosts) against bytes changed; target <= 1.1x.
#   rebuild a 4th host, a short --repair-delay, a prefilled disk: a data replica host is killed for good; rebuild rate
#           (bytes / time of the rebuild copy) and client IOPS meanwhile against the IOPS before; targets >= 150 MiB/s
#           with >= 70 % of steady IOPS. Skipped with a message if the binary has no --repair-delay.
#
# Needs: the .NET SDK (builds Release if the binary is missing), fio, curl, python3. Everything lives in one temp dir
# (removed at exit, KEEP=1 keeps it); every host is stopped by PID.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
PHASES="${PHASES:-kill stop delta rebuild}"
VDISK_SIZE="${VDISK_SIZE:-2GiB}"
DISK_SIZE="${DISK_SIZE:-8GiB}"
RUNTIME="${RUNTIME:-30}"           # kill/stop phases: fio runtime; the fault comes at 10 s
ABSENCE="${ABSENCE:-30}"           # delta phase: seconds the host stays away
DELTA_IOPS="${DELTA_IOPS:-1000}"   # delta phase: write rate while it is away (blocks = DELTA_IOPS * (ABSENCE - 5))
REPAIR_DELAY="${REPAIR_DELAY:-5s}"
RESYNC_BANDWIDTH="${RESYNC_BANDWIDTH:-}"  # rebuild phase: the hosts' --resync-bandwidth (empty: the default)
PREFILL="${PREFILL:-1G}"           # rebuild phase: data written before the loss (what the rebuild copies)
WARMUP="${WARMUP:-30}"             # rebuild phase: seconds of fio before the kill; steady IOPS is the mean of its last two thirds
RESULTS="${RESULTS:-0}"

for tool in fio curl python3; do
  command -v "$tool" >/dev/null || { echo "failure-bench: $tool is missing (./test.sh installs fio)" >&2; exit 1; }
done

bin="$root/src/Converge.Cli/bin/Release/net10.0/converge"
if [ ! -x "$bin" ]; then
  echo "failure-bench: building converge (Release)"
  dotnet build "$root/src/Converge.Cli" -c Release -nologo -v quiet -clp:ErrorsOnly
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/converge-failbench.XXXXXX")"
declare -A pid api nbd peer raft
hosts=()
cleanup() {
  for h in "${hosts[@]}"; do
    p="${pid[$h]:-}"
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -CONT "$p" 2>/dev/null || true
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  for h in "${hosts[@]}"; do
    p="${pid[$h]:-}"
    [ -n "$p" ] || continue
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "failure-bench: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

log() { echo "failure-bench: $*" >&2; }
# Four distinct free ports in one call: separate calls can get the same port back once it is closed again.
free_ports() {
  python3 -c 'import socket; ss = [socket.socket() for _ in range(4)]; [s.bind(("127.0.0.1", 0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))'
}
now() { date +%s.%N; }

extra_args=()
supports_repair_delay=0
if "$bin" host run --help 2>&1 | grep -q -- '--repair-delay'; then supports_repair_delay=1; fi

# start_host NAME [JOIN_API]: first start (disks, ports); later starts reuse the data dir and ports.
start_host() {
  local h="$1" join="${2:-}" args
  if [ -z "${api[$h]:-}" ]; then
    local ports; read -r -a ports <<<"$(free_ports)"
    nbd[$h]="${ports[0]}"; api[$h]="${ports[1]}"; peer[$h]="${ports[2]}"; raft[$h]="${ports[3]}"
    mkdir -p "$work/$h"
    hosts+=("$h")
    args=(--disk "$work/$h/d1.img:$DISK_SIZE" --disk "$work/$h/d2.img:$DISK_SIZE")
    if [ -n "$join" ]; then args+=(--join "$join"); fi
  else
    args=()
  fi
  "$bin" host run --data "$work/$h" --name "$h" \
    --nbd-listen "127.0.0.1:${nbd[$h]}" --api-listen "127.0.0.1:${api[$h]}" \
    --peer-listen "127.0.0.1:${peer[$h]}" --raft-listen "127.0.0.1:${raft[$h]}" \
    "${args[@]}" "${extra_args[@]}" >>"$work/$h/host.log" 2>&1 </dev/null &
  pid[$h]=$!
  wait_ready "$h"
}

wait_ready() {
  local h="$1"
  for _ in $(seq 1 600); do
    if curl -fsS -m 2 "http://127.0.0.1:${api[$h]}/api/v1/health" 2>/dev/null | grep -q '"ready"'; then return 0; fi
    kill -0 "${pid[$h]}" 2>/dev/null || { tail -20 "$work/$h/host.log" >&2; log "$h exited"; exit 1; }
    sleep 0.1
  done
  log "$h not ready in 60 s"; tail -20 "$work/$h/host.log" >&2; exit 1
}

apiurl() { echo "http://127.0.0.1:${api[$1]}"; }
uri() { echo "nbd://127.0.0.1:${nbd[$1]}/$2"; }

# vdisk_json VIA NAME
vdisk_json() { curl -fsS -m 5 "$(apiurl "$1")/api/v1/vdisks/$2"; }

# wait_vdisk VIA NAME PYTHON_CONDITION(v) WHAT TIMEOUT_S
wait_vdisk() {
  local via="$1" name="$2" cond="$3" what="$4" timeout="$5" start
  start=$(date +%s)
  while true; do
    if vdisk_json "$via" "$name" 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if ($cond) else 1)" 2>/dev/null; then
      return 0
    fi
    if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
      log "timed out after ${timeout} s waiting for $what: $(vdisk_json "$via" "$name" 2>&1 | head -c 2000)"
      return 1
    fi
    sleep 0.2
  done
}
wait_compliant() { wait_vdisk "$1" "$2" "v.get('compliance') == 'compliant' and all(c['state'] == 'active' for c in v['layout'])" "$2 compliant" "${3:-120}"; }
wait_absent() { wait_vdisk "$1" "$2" "all(c['state'] == 'absent' for c in v['layout'] if c['hostName'] == '$3')" "$3 absent in $2" "${4:-60}"; }

# data_host NAME VIA EXCLUDE: a host holding a data component of NAME other than EXCLUDE
data_host() {
  vdisk_json "$2" "$1" | python3 -c "
import json, sys
v = json.load(sys.stdin)
print(next(c['hostName'] for c in v['layout'] if c['role'] == 'data' and c['hostName'] != sys.argv[1]))" "$3"
}

# resync_bytes: sum of bytesCopied over running hosts (empty when the endpoint is missing)
resync_bytes() {
  local total=0 b h
  for h in "${hosts[@]}"; do
    kill -0 "${pid[$h]}" 2>/dev/null || continue
    b="$(curl -fsS -m 5 "$(apiurl "$h")/internal/v1/resync" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytesCopied"])' 2>/dev/null)" || { echo ""; return; }
    total=$((total + b))
  done
  echo "$total"
}

# longest_stall LATLOG RUNTIME_S: longest gap (ms) between write completions, including the run's start and end
longest_stall() {
  python3 - "$1" "$2" <<'PY'
import sys
times = sorted(int(line.split(',')[0]) for line in open(sys.argv[1]) if line.strip())
if not times:
    print("nan 0"); sys.exit()
edges = [0] + times + [max(times[-1], int(float(sys.argv[2]) * 1000))]
gap, at = max((b - a, a) for a, b in zip(edges, edges[1:]))
print(gap, at)
PY
}

declare -A result
start_cluster() {
  start_host h1
  start_host h2 "$(apiurl h1)"
  start_host h3 "$(apiurl h1)"
  "$bin" --api "$(apiurl h1)" vdisk create bench --size "$VDISK_SIZE" >/dev/null
  # h1 is fio's host and takes the lease with the first write, so faults hit replicas, not the coordinator.
  fio --name=first --ioengine=nbd --uri="$(uri h1 bench)" --rw=write --bs=1M --size=16M >/dev/null
  wait_compliant h1 bench 30
}

# stall_phase KIND (kill|stop)
stall_phase() {
  local kind="$1" victim fio_rc=0 stall at
  victim="$(data_host bench h1 h1)"
  log "$kind: fio 4k randwrite QD16 for ${RUNTIME} s through h1; $kind of $victim at 10 s"
  fio --name="$kind" --ioengine=nbd --uri="$(uri h1 bench)" --rw=randwrite --bs=4k --iodepth=16 --size=1G \
      --time_based --runtime="$RUNTIME" --write_lat_log="$work/$kind" --log_avg_msec=0 \
      --output-format=json --output="$work/$kind.json" >/dev/null 2>"$work/$kind.err" &
  local fio_pid=$!
  sleep 10
  if [ "$kind" = kill ]; then kill -KILL "${pid[$victim]}"; else kill -STOP "${pid[$victim]}"; fi
  if [ "$kind" = stop ]; then sleep 15; kill -CONT "${pid[$victim]}"; fi
  wait "$fio_pid" || fio_rc=$?
  read -r stall at < <(longest_stall "$work/${kind}_lat.1.log" "$RUNTIME")
  if [ "$fio_rc" -ne 0 ]; then
    log "$kind: fio failed ($fio_rc): $(tail -3 "$work/$kind.err" | tr '\n' ' ')"
    result[$kind]="fio failed (exit $fio_rc: $(grep -m1 -o 'err=[^:]*: [^,]*' "$work/$kind.err" || tail -1 "$work/$kind.err")); longest gap before the end $stall ms"
  else
    result[$kind]="$stall ms (at ${at} ms; fault at ~10000 ms)"
  fi
  log "$kind: longest stall $stall ms at $at ms"
  if [ "$kind" = kill ]; then start_host "$victim"; fi
  wait_compliant h1 bench 180 || result[$kind]+="; compliance did not return"
}

delta_phase() {
  local victim before after blocks changed copied
  victim="$(data_host bench h1 h1)"
  before="$(resync_bytes)"
  if [ -z "$before" ]; then result[delta]="n/a: GET /internal/v1/resync is not served"; return; fi
  blocks=$(( DELTA_IOPS * (ABSENCE - 5) ))
  log "delta: kill -9 of $victim for ${ABSENCE} s; fio writes $blocks distinct 4 KiB blocks meanwhile"
  local t0; t0=$(now)
  kill -KILL "${pid[$victim]}"
  wait_absent h1 bench "$victim" 30 || { result[delta]="$victim never became absent"; start_host "$victim"; return; }
  if ! fio --name=delta --ioengine=nbd --uri="$(uri h1 bench)" --rw=randwrite --bs=4k --iodepth=16 --size=2G \
      --random_generator=lfsr --io_size=$((blocks * 4096)) --rate_iops="$DELTA_IOPS" \
      --output-format=json --output="$work/delta.json" >/dev/null 2>"$work/delta.err"; then
    result[delta]="fio failed: $(tail -1 "$work/delta.err")"; start_host "$victim"; return
  fi
  changed="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["io_bytes"])' "$work/delta.json")"
  python3 -c "import time,sys; time.sleep(max(0, float(sys.argv[1]) + $ABSENCE - time.time()))" "$t0"
  start_host "$victim"
  wait_compliant h1 bench 300 || { result[delta]="compliance did not return"; return; }
  after="$(resync_bytes)"
  copied=$((after - before))
  result[delta]="$(python3 -c "import sys; c, d = int(sys.argv[1]), int(sys.argv[2]); print(f'{c} bytes copied / {d} bytes changed = {c / d:.3f}x')" "$copied" "$changed")"
  log "delta: ${result[delta]}"
}

rebuild_phase() {
  if [ "$supports_repair_delay" != 1 ]; then
    result[rebuild]="skipped: converge host run has no --repair-delay (rebuild not in this build)"
    log "rebuild: ${result[rebuild]}"
    return
  fi
  # A fresh 4-host cluster with a short repair delay.
  local h
  for h in "${hosts[@]}"; do kill -TERM "${pid[$h]}" 2>/dev/null || true; done
  for h in "${hosts[@]}"; do while kill -0 "${pid[$h]}" 2>/dev/null; do sleep 0.1; done; done
  hosts=(); unset api; declare -gA api
  work="$work/rebuild"; mkdir -p "$work"
  extra_args=(--repair-delay "$REPAIR_DELAY")
  if [ -n "$RESYNC_BANDWIDTH" ]; then extra_args+=(--resync-bandwidth "$RESYNC_BANDWIDTH"); fi
  start_cluster
  start_host h4 "$(apiurl h1)"
  log "rebuild: prefill $PREFILL"
  fio --name=prefill --ioengine=nbd --uri="$(uri h1 bench)" --rw=write --bs=1M --iodepth=8 --size="$PREFILL" >/dev/null
  local victim; victim="$(data_host bench h1 h1)"
  log "rebuild: fio 4k randwrite QD16 through h1 for $((WARMUP + 75)) s; kill -9 of $victim (for good) at $WARMUP s"
  # One poller for the whole run samples the hosts' running rebuilds every 0.5 s. It runs from fio's start, so the
  # steady and the during-rebuild windows pay for it alike. (A loop that forked curl and python3 per host and tick,
  # started at the kill, took about a fifth of the 2 cores in the rebuild window alone and biased the ratio.)
  local urls=()
  for h in h1 h2 h3 h4; do urls+=("$(apiurl "$h")/internal/v1/resync"); done
  rm -f "$work/rebuild.stop"
  python3 - "$work/rebuild.samples" "$work/rebuild.stop" "${urls[@]}" <<'PY' &
import json, os, sys, time, urllib.request
out, stop, urls = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(out, "w") as f:
    while not os.path.exists(stop):
        tick = time.time()
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    d = json.load(response)
            except Exception:
                continue  # the killed host refuses
            for r in d.get("running", []):
                if str(r.get("kind", "")).lower() == "rebuild":
                    f.write(f"{time.time()} {r['doneBytes']} {r['totalBytes']}\n")
        f.flush()
        time.sleep(max(0.0, tick + 0.5 - time.time()))
PY
  local poller=$!
  fio --name=rebuild --ioengine=nbd --uri="$(uri h1 bench)" --rw=randwrite --bs=4k --iodepth=16 --size="$PREFILL" \
      --time_based --runtime=$((WARMUP + 75)) --write_iops_log="$work/rebuild" --log_avg_msec=500 \
      --output-format=json --output="$work/rebuild.json" >/dev/null 2>"$work/rebuild.err" &
  local fio_pid=$! fio_start; fio_start=$(now)
  sleep "$WARMUP"
  kill -KILL "${pid[$victim]}"
  wait "$fio_pid" || true
  touch "$work/rebuild.stop"
  wait "$poller" || true
  result[rebuild]="$(python3 - "$work/rebuild.samples" "$work/rebuild_iops.1.log" "$fio_start" "$WARMUP" <<'PY'
import sys
samples = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
iops = [tuple(map(float, l.split(',')[:2])) for l in open(sys.argv[2]) if l.strip()]
start = float(sys.argv[3])
warmup = float(sys.argv[4])
# Steady: the last two thirds before the kill. Freshly started hosts are still compiling their hot paths in the first
# seconds (client IOPS climb for 10-20 s), which would make "steady" too low and flatter the ratio.
steady = [v for t, v in iops if warmup * 1000 / 3 <= t <= warmup * 1000 - 1000]
if not samples:
    print("no rebuild observed within the fio run"); sys.exit()
t0, t1 = samples[0][0], samples[-1][0]
moved = samples[-1][1] - samples[0][1]
rate = moved / max(t1 - t0, 1e-9) / 2**20
during = [v for t, v in iops if t0 <= start + t / 1000 <= t1]
s = sum(steady) / len(steady) if steady else float('nan')
d = sum(during) / len(during) if during else float('nan')
# Degraded without a copy (from the kill's detection to the rebuild's start) and healthy again after it: what the
# copy itself costs the client, apart from the cost of running with one replica short.
kill_at = start + warmup
degraded = [v for t, v in iops if kill_at + 6 <= start + t / 1000 <= t0 - 0.5]
after = [v for t, v in iops if t1 + 2 <= start + t / 1000]
g = (lambda xs: f"{sum(xs) / len(xs):.0f}" if xs else "n/a")
print(f"{rate:.0f} MiB/s ({moved / 2**20:.0f} MiB in {t1 - t0:.1f} s); client {d:.0f} IOPS during vs {s:.0f} steady = {d / s:.0%}"
      f" (degraded before the copy {g(degraded)}, after it {g(after)})")
PY
)"
  log "rebuild: ${result[rebuild]}"
}

start_cluster
for phase in $PHASES; do
  case "$phase" in
    kill|stop) stall_phase "$phase" ;;
    delta) delta_phase ;;
    rebuild) rebuild_phase ;;
    *) log "unknown phase $phase"; exit 2 ;;
  esac
done

commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
table="$(
  echo "| measure | result | target |"
  echo "|---|---|---|"
  [ -n "${result[kill]:-}" ] && echo "| longest client stall, kill -9 of a data replica host | ${result[kill]} | <= 1 s |"
  [ -n "${result[stop]:-}" ] && echo "| longest client stall, SIGSTOP of a data replica host | ${result[stop]} | <= 5 s |"
  [ -n "${result[delta]:-}" ] && echo "| delta resync after ${ABSENCE} s of absence | ${result[delta]} | <= 1.1x |"
  [ -n "${result[rebuild]:-}" ] && echo "| rebuild after a permanent host loss | ${result[rebuild]} | >= 150 MiB/s, >= 70 % IOPS |"
  true
)"
echo
echo "failure-bench (commit $commit, FTT=1 $VDISK_SIZE on 3 hosts, fio 4 KiB randwrite QD16 through a host never faulted)"
echo "$table"
if [ "$RESULTS" = 1 ]; then
  {
    echo
    echo "## Issue 4: failure benchmarks ($(date -u +%Y-%m-%d), commit $commit, \`bench/failure-bench.sh\`)"
    echo
    echo "FTT=1 $VDISK_SIZE virtual disk on 3 local hosts (2 shared cores), fio 4 KiB randwrite QD16 through a host that is never faulted."
    echo
    # Only measured figures: rows of phases that were skipped or could not run are left out.
    echo "$table" | grep -v -e 'skipped' -e 'n/a'
  } >>"$root/bench/RESULTS.md"
  log "appended to bench/RESULTS.md"
fi
