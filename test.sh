#!/usr/bin/env bash
# The one test command: installs the NBD client tools the end-to-end tests drive (only when missing), builds the
# solution (Release) and runs every test project. Ends with one line: "N passed, N failed[, N skipped]".
# Exit status: 0 only if nothing failed and every test project ran.
#
# Environment: CONVERGE_CRASH_ITERATIONS (crash test loop, default 10), CONVERGE_CRASH_SEED,
#              CONVERGE_KEEP_TEMP=1 (keep test data dirs), TEST_FILTER (passed to dotnet test --filter),
#              CONVERGE_TEST_ARTIFACTS (where tests save screenshots; default tests/artifacts).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# --- test tools -------------------------------------------------------------------------------------------------
missing=()
command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 || missing+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || missing+=(libnbd-bin)
command -v nbdkit >/dev/null 2>&1 || missing+=(nbdkit)
command -v fio >/dev/null 2>&1 || missing+=(fio)
{ command -v nbdsh >/dev/null 2>&1 && /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1; } || missing+=(python3-libnbd)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the web UI tests drive a real headless Chromium
command -v afl-fuzz >/dev/null 2>&1 || missing+=(afl++)  # the fuzz tests run AFL++ on SharpFuzz-instrumented harnesses
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- build ------------------------------------------------------------------------------------------------------
dotnet tool restore >/dev/null  # .config/dotnet-tools.json: sharpfuzz, which instruments the fuzz harnesses
echo "test.sh: building Converge.sln (Release)"
dotnet build Converge.sln -c Release -nologo -v quiet -clp:ErrorsOnly

# --- run --------------------------------------------------------------------------------------------------------
results="$(mktemp -d "${TMPDIR:-/tmp}/converge-test-results.XXXXXX")"
trap 'rm -rf "$results"' EXIT
broken=()
filter=()
if [ -n "${TEST_FILTER:-}" ]; then filter=(--filter "$TEST_FILTER"); fi
for project in tests/*/*.Tests.csproj; do
  name="$(basename "$project" .csproj)"
  echo "test.sh: $name"
  start=$SECONDS
  if ! dotnet test "$project" -c Release --no-build -nologo "${filter[@]}" \
      --blame-hang-timeout 8m \
      --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal" \
      --results-directory "$results/$name"; then
    if [ ! -f "$results/$name/$name.trx" ]; then broken+=("$name"); fi
  fi
  echo "test.sh: $name took $((SECONDS - start)) s"
done

# --- summary ----------------------------------------------------------------------------------------------------
python3 - "$results" "${broken[@]}" <<'PY'
import glob, os, sys
import xml.etree.ElementTree as ET

ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
results, broken = sys.argv[1], sys.argv[2:]
passed = failed = skipped = 0
for trx in sorted(glob.glob(os.path.join(results, "*", "*.trx"))):
    root = ET.parse(trx).getroot()
    c = root.find("t:ResultSummary/t:Counters", ns)
    p, f = int(c.get("passed", 0)), int(c.get("failed", 0)) + int(c.get("error", 0)) + int(c.get("timeout", 0)) + int(c.get("aborted", 0))
    s = int(c.get("notExecuted", 0))
    passed, failed, skipped = passed + p, failed + f, skipped + s
    print("  %-32s %4d passed, %d failed, %d skipped" % (os.path.basename(trx)[:-4], p, f, s))
    for r in root.iterfind(".//t:UnitTestResult", ns):
        out = r.find("t:Output/t:StdOut", ns)
        if out is not None and out.text and ("crash test:" in out.text or "soak test:" in out.text):
            for line in out.text.splitlines():
                if line.startswith("crash test:") or line.startswith("soak test:"):
                    print("    " + line)
        if r.get("outcome") == "Failed":
            print("    FAILED " + r.get("testName"))
            # The first lines of the failure say which assertion broke, so a red CI run is diagnosable from its tail.
            msg = r.find("t:Output/t:ErrorInfo/t:Message", ns)
            trace = r.find("t:Output/t:ErrorInfo/t:StackTrace", ns)
            for text, limit in ((msg, 6), (trace, 4)):
                if text is not None and text.text:
                    for line in text.text.strip().splitlines()[:limit]:
                        print("      " + line.strip()[:200])
for name in broken:
    print("  %-32s did not run (build or test host failure)" % name)
line = "%d passed, %d failed" % (passed, failed)
if skipped:
    line += ", %d skipped" % skipped
print(line)
sys.exit(1 if failed or broken else 0)
PY
