#!/bin/bash
# kiln's AWS lab: moto (EC2, S3, STS, IMDS) in server mode with the VM-import
# calls and ClientToken idempotency lab.py adds, a fault-injection proxy in
# front of it (faults.py), and an sshd on 127.0.3.4-19:22 that lets in the
# holder of the key pair of the running instance with that private IP.
#
#   bash testlab/aws/up.sh ROOT      # venv, state and logs under ROOT
#   bash testlab/aws/down.sh ROOT    # stops what up.sh started, by pid
#
# Ports (env): LAB_PORT (moto, 5055), LAB_PROXY_PORT (fault proxy, 5056).
# Writes ROOT/lab.json for the tests (see README.md). Needs root: it creates
# the test user `kiln-ec2` (passwordless sudo) and starts sshd.
set -euo pipefail
R=${1:?usage: up.sh ROOT}
mkdir -p "$R"; R=$(cd "$R" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=${LAB_PORT:-5055}; PPORT=${LAB_PROXY_PORT:-5056}
USER_NAME=kiln-ec2
t0=$SECONDS; ts(){ echo "[aws lab $((SECONDS-t0))s] $*"; }
mkdir -p "$R/run" "$R/log" "$R/ssh"

if [ -f "$R/run/moto.pid" ] && kill -0 "$(cat "$R/run/moto.pid")" 2>/dev/null && curl -sf -o /dev/null "http://127.0.0.1:$PORT/moto-api/"; then
  ts "already up ($R)"; exit 0
fi

# ---- Debian packages (scripts/setup.sh installs them too)
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sudo >/dev/null || need+=(sudo)
command -v curl >/dev/null || need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  ts "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null </dev/null
fi

# ---- venv (pinned: requirements.lock)
if [ ! -f "$R/venv/.kiln-lab-ok" ] || ! cmp -s "$HERE/requirements.lock" "$R/venv/.kiln-lab-ok"; then
  rm -rf "$R/venv"
  python3 -m venv "$R/venv"
  "$R/venv/bin/pip" install -q ${PIP_OPTS:-} -r "$HERE/requirements.lock"
  cp "$HERE/requirements.lock" "$R/venv/.kiln-lab-ok"
fi
ts "venv ready"

# ---- moto and the fault proxy
: > "$R/calls.jsonl"
MOTO_AMIS_PATH=${MOTO_AMIS_PATH:-$HERE/amis.json} LAB_CALL_LOG=${LAB_CALL_LOG:-$R/calls.jsonl} \
  nohup "$R/venv/bin/python" "$HERE/lab.py" "$PORT" > "$R/log/moto.log" 2>&1 &
echo $! > "$R/run/moto.pid"
nohup "$R/venv/bin/python" "$HERE/faults.py" "$PPORT" "$PORT" > "$R/log/faults.log" 2>&1 &
echo $! > "$R/run/faults.pid"

# ---- the test user and "the instances": sshd on 127.0.3.4-19:22
id "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/bash "$USER_NAME"
usermod -p '*' "$USER_NAME"   # not locked ('!'): sshd without PAM refuses a locked account
echo "$USER_NAME ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/kiln-aws-lab; chmod 440 /etc/sudoers.d/kiln-aws-lab
# sshd insists the command's directory chain is root-owned and not writable by others (so not under /tmp)
install -d -m 755 /usr/local/lib/kiln-testlab
install -m 755 "$HERE/akc.py" /usr/local/lib/kiln-testlab/aws-akc.py
[ -f "$R/ssh/hostkey" ] || ssh-keygen -q -t ed25519 -N '' -f "$R/ssh/hostkey"
{ for n in $(seq 4 19); do echo "ListenAddress 127.0.3.$n:22"; done   # sshd listens on at most 16 sockets
  printf '%s\n' "HostKey $R/ssh/hostkey" "PidFile $R/run/sshd.pid" "PermitRootLogin no" "AllowUsers $USER_NAME" \
    "PasswordAuthentication no" "KbdInteractiveAuthentication no" "UsePAM no" "UseDNS no" "AuthorizedKeysFile none" \
    "AuthorizedKeysCommand /bin/false" "AuthorizedKeysCommandUser nobody" "MaxStartups 100:30:200" \
    "Subsystem sftp internal-sftp"
  # OpenSSH 9.2 has no token for the local address in AuthorizedKeysCommand: one Match block per address
  for n in $(seq 4 19); do
    printf 'Match LocalAddress 127.0.3.%s\n  AuthorizedKeysCommand /usr/local/lib/kiln-testlab/aws-akc.py %s 127.0.3.%s\n' $n "$PORT" $n
  done
} > "$R/ssh/sshd_config"
mkdir -p /run/sshd
/usr/sbin/sshd -f "$R/ssh/sshd_config" -E "$R/log/sshd.log"

for i in $(seq 1 200); do curl -sf -o /dev/null -X POST "http://127.0.0.1:$PORT/moto-api/reset" && break; sleep 0.1; done
for i in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PPORT/__faults" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$PPORT/__faults" || { echo "fault proxy did not start, see $R/log/faults.log" >&2; exit 1; }
cat > "$R/lab.json" <<JSON
{"endpoint": "http://127.0.0.1:$PORT", "proxy": "http://127.0.0.1:$PPORT", "call_log": "$R/calls.jsonl",
 "venv": "$R/venv", "ssh_user": "$USER_NAME", "ssh_subnet": "127.0.3.0/24", "access_key": "kiln-lab", "secret_key": "kiln-lab-secret"}
JSON
ts "aws lab up: moto at http://127.0.0.1:$PORT, fault proxy at http://127.0.0.1:$PPORT, call log $R/calls.jsonl"
