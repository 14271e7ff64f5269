"""Waits (60 s at most) until a Converge host answers GET /api/v1/health with "ready".

Usage: wait-ready.py API_PORT HOST_PID. Exits 0 when ready, 1 when the process exited or time ran out.
"""
import json, os, sys, time, urllib.request

port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen("http://127.0.0.1:%s/api/v1/health" % port, timeout=2) as r:
            if json.load(r).get("status") == "ready":
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
