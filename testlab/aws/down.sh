#!/bin/bash
# usage: down.sh ROOT -- stops what up.sh ROOT started, by pid (keeps the venv)
R=${1:?usage: down.sh ROOT}
[ -d "$R/run" ] || exit 0
for f in "$R"/run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
for i in $(seq 1 50); do alive=0; for f in "$R"/run/*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 0.1; done
for f in "$R"/run/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; rm -f "$f"; done
exit 0
