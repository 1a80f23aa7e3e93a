#!/usr/bin/env bash
# Makes the unprivileged account the tests run sessions as (and run the
# runner as), with subordinate id ranges. Prints its name. Needs root;
# without root it prints nothing and the tests that need it skip.
set -euo pipefail
user=airlock-test
[ "$(id -u)" -eq 0 ] || exit 0
if ! id "$user" >/dev/null 2>&1; then
  useradd -m -s /bin/bash "$user"
fi
# useradd adds ranges on Debian 12; make sure, for machines where it did not.
grep -q "^$user:" /etc/subuid || echo "$user:$((200000 + $(id -u $user) * 65536)):65536" >> /etc/subuid
grep -q "^$user:" /etc/subgid || echo "$user:$((200000 + $(id -u $user) * 65536)):65536" >> /etc/subgid
echo "$user"
