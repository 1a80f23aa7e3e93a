#!/usr/bin/env bash
# What Open OnDemand's "basic" batch_connect template does in the job
# (ood_core lib/ood_core/batch_connect/templates/basic.rb and template.rb,
# read, not copied): cd to the session's staged directory, set host, source
# before.sh, start script.sh in the background, source after.sh, write
# connection.yml (umask 077) with host, port and the conn_params, then wait
# for the script. find_port and create_passwd stand in for the template's
# helpers of the same names.
#
#   basic.sh STAGED_DIR CONN_PARAM...
set -u
cd "$1" || exit 1
shift

port_used() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
find_port() {
  local host=$1 port
  for _ in $(seq 200); do
    port=$((RANDOM % 40000 + 20000))
    port_used "$host" "$port" || { echo "$port"; return 0; }
  done
  return 1
}
create_passwd() { tr -cd 'a-zA-Z0-9' < /dev/urandom 2>/dev/null | head -c"${1:-8}"; }

host=$(hostname)
source ./before.sh
./script.sh &
SCRIPT_PID=$!
source ./after.sh

(
  umask 077
  {
    echo "host: ${host}"
    echo "port: ${port}"
    for p in "$@"; do echo "${p}: ${!p}"; done
  } > connection.yml.new
  mv connection.yml.new connection.yml
)
wait "${SCRIPT_PID}"
