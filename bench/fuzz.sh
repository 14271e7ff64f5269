#!/usr/bin/env bash
# A long fuzz run of every harness in tests/Converge.Fuzz (peer request/reply headers and payloads, NBD request
# header, metadata command decoding + apply): the tests of tests/Converge.Fuzz.Tests with longer passes, AFL++ on the
# SharpFuzz-instrumented harness and the in-process mutation fuzzer, each SECONDS a harness (CI: 12 s and 2 s).
# Usage: bench/fuzz.sh [SECONDS_PER_HARNESS (default 300)] [SEED (default: the time)]
# Needs afl++ (Debian package) and `dotnet tool restore`. Prints each harness's executions, crashes and hangs, then
# "fuzz total: N executions, N crashes, N hangs". A crashing input is named in the test failure; add it to
# tests/Converge.Fuzz/corpus/<harness>/ once fixed.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
seconds="${1:-300}"
seed="${2:-$(date +%s)}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 CONVERGE_FUZZ_SECONDS="$seconds" CONVERGE_AFL_SECONDS="$seconds" CONVERGE_FUZZ_SEED="$((seed % 2147483647))"
dotnet tool restore >/dev/null
dotnet build tests/Converge.Fuzz.Tests -c Release -nologo -v quiet -clp:ErrorsOnly >/dev/null
log="$(mktemp "${TMPDIR:-/tmp}/converge-fuzz.XXXXXX")"
trap 'rm -f "$log"' EXIT
status=0
dotnet test tests/Converge.Fuzz.Tests -c Release --no-build -nologo --logger "console;verbosity=normal" \
  --blame-hang-timeout "$((seconds * 2 + 180))s" >"$log" 2>&1 || status=$?
grep -E '^(fuzz|afl) [a-z-]+: ' "$log" | sort -u || true
grep -E 'crashed on|crash\(es\).*inputs' "$log" || true
# "fuzz H: N executions, C crash(es)" (in-process) and "afl H: N executions in S s, C crash(es), H hang(s), ..." (AFL++).
awk '/^fuzz [a-z-]+: / { e += $3; c += $5 }
     /^afl [a-z-]+: / { e += $3; c += $7; h += $9 }
     END { printf "fuzz total: %d executions, %d crashes, %d hangs (seed %s, %s s a harness per fuzzer)\n", e, c, h, ENVIRON["CONVERGE_FUZZ_SEED"], ENVIRON["CONVERGE_FUZZ_SECONDS"] }' "$log"
exit $status
