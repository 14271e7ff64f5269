#!/usr/bin/env bash
# A long fuzz run of every harness in tests/Converge.Fuzz.Tests (peer request/reply headers and payloads, NBD request
# header, metadata command decoding + apply): the same in-process mutation fuzzer CI runs for ~10 s a harness.
# Usage: bench/fuzz.sh [SECONDS_PER_HARNESS (default 300)] [SEED (default: the time)]
# Prints each harness's executions and crashes, then "fuzz total: N executions, N crashes". A crashing input is saved
# under $TMPDIR and named in the test failure; add it to tests/Converge.Fuzz.Tests/corpus/<harness>/ once fixed.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
seconds="${1:-300}"
seed="${2:-$(date +%s)}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 CONVERGE_FUZZ_SECONDS="$seconds" CONVERGE_FUZZ_SEED="$((seed % 2147483647))"
dotnet build tests/Converge.Fuzz.Tests -c Release -nologo -v quiet -clp:ErrorsOnly >/dev/null
log="$(mktemp "${TMPDIR:-/tmp}/converge-fuzz.XXXXXX")"
trap 'rm -f "$log"' EXIT
status=0
dotnet test tests/Converge.Fuzz.Tests -c Release --no-build -nologo --logger "console;verbosity=normal" \
  --blame-hang-timeout "$((seconds * 2 + 120))s" >"$log" 2>&1 || status=$?
grep -E '^fuzz [a-z-]+: ' "$log" | sort -u || true
grep -E 'crashed on' "$log" || true
awk '/^fuzz [a-z-]+: / { e += $3; c += $5 } END { printf "fuzz total: %d executions, %d crashes (seed %s, %s s a harness)\n", e, c, ENVIRON["CONVERGE_FUZZ_SEED"], ENVIRON["CONVERGE_FUZZ_SECONDS"] }' "$log"
exit $status
