#!/usr/bin/env bash
# `make run`: start a sealed demo desktop (Xvnc + xterm) and say how to
# reach it. Ctrl-C ends the session; nothing of it is left behind.
set -euo pipefail
bin=${1:-bin/airlock}
bin=$(readlink -f "$bin")
state=${XDG_STATE_HOME:-$HOME/.local/state}/airlock-demo
mkdir -p "$state"
chmod 700 "$state"
key=$state/ticket.key
[ -s "$key" ] || head -c 32 /dev/urandom > "$key"
chmod 600 "$key"

owner=""
if [ "$(id -u)" -eq 0 ]; then
  # Sessions never run as root: the demo desktop belongs to its own account.
  owner=airlock-demo
  id "$owner" >/dev/null 2>&1 || useradd -m -s /bin/bash "$owner"
fi

id=demo-$(date +%s)
spec=$state/spec.json
cat > "$spec" <<JSON
{
  "id": "$id",
  "owner": "$owner",
  "workload": {"argv": ["Xvnc", ":1", "-rfbport", "5901", "-localhost", "-SecurityTypes", "None",
                        "-geometry", "1280x800", "-depth", "24", "-AlwaysShared", "-BlacklistTimeout", "0"]},
  "processes": [{"argv": ["xterm", "-geometry", "100x30+20+20", "-e", "bash", "-l"], "env": {"DISPLAY": ":1"}}],
  "connectors": [{"name": "console", "kind": "vnc", "target": "127.0.0.1:5901", "listen": "tcp:127.0.0.1:0"}],
  "lifetime": "8h",
  "ticket_key_file": "$key"
}
JSON

echo "airlock demo: starting sealed desktop session $id (spec: $spec)"
coproc RUNNER { exec "$bin" run --spec "$spec"; }
runner_pid=$RUNNER_PID
trap 'kill -TERM $runner_pid 2>/dev/null; wait $runner_pid 2>/dev/null; exit 0' INT TERM
while IFS= read -r line <&"${RUNNER[0]}"; do
  echo "$line"
  case "$line" in
  *'"event":"ready"'*)
    ep=$(sed -E 's/.*"console":"([^"]+)".*/\1/' <<<"$line")
    sha=$(sed -E 's/.*"tls_sha256":"([^"]+)".*/\1/' <<<"$line")
    cat <<TXT

The desktop is running sealed: Xvnc and xterm see only their own loopback.
Its only way in is the vnc connector, WebSocket over TLS at:
    wss://$ep/?ticket=TICKET
  certificate SHA-256 (self-signed for this session; pin it):
    $sha
A ticket is good for one connection within 60 s. Make one with:
    $bin ticket --key-file $key --session $id --connector console --user $(id -un)
  (add --view for a view-only ticket: keyboard, mouse and clipboard are dropped)
The browser portal that does this for you comes with 'airlock serve' (the gateway).
Ctrl-C ends the session.
TXT
    ;;
  esac
done
wait $runner_pid
