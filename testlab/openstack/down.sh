#!/bin/bash
# usage: down.sh ROOT -- stop every process up.sh started (keeps ROOT, so the
# next up.sh reuses the venv and the databases).
R=${1:?usage: down.sh ROOT}
[ -d "$R/run" ] || exit 0
rm -f "$R/ready"
for f in $R/run/*.pid; do [ -f "$f" ] || continue; case $f in *rabbitmq.pid) continue;; esac; kill $(cat $f) 2>/dev/null; done
( . $R/rabbitenv; /usr/lib/rabbitmq/bin/rabbitmqctl -q stop >/dev/null 2>&1 ) || true
for i in $(seq 1 60); do alive=0; for f in $R/run/*.pid; do [ -f "$f" ] && kill -0 $(cat $f) 2>/dev/null && alive=1; done; [ $alive = 0 ] && break; sleep 1; done
for f in $R/run/*.pid; do [ -f "$f" ] && kill -9 $(cat $f) 2>/dev/null; done
for i in $(seq 1 10); do ERL_EPMD_ADDRESS=127.0.0.1 epmd -kill >/dev/null 2>&1 && break; sleep 1; done
rm -f $R/run/*.pid
exit 0
