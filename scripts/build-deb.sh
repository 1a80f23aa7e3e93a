#!/usr/bin/env bash
# Builds the airlock Debian package with dpkg-deb: bin/airlock_VERSION_ARCH.deb.
#   scripts/build-deb.sh [BINARY]   (default: bin/airlock, as `make build` makes it)
# What goes in: the binary, the gateway's systemd unit, a tmpfiles entry,
# the commented default configuration as /etc/airlock/airlock.yaml (a
# conffile: upgrades keep the admin's edits), man pages generated from the
# commands' own help, and bash completion generated the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/airlock}
out=${DEB_OUT:-bin}
[ -x "$bin" ] || { echo "build-deb: no $bin (make build)" >&2; exit 1; }

# Debian versions must start with a digit; a dev build is 0~git<date>.<commit>.
version=$("$bin" version | awk '{print $2}')
case "$version" in
  [0-9]*) ;;
  *) version="0~git$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date +%Y%m%d).$(git rev-parse --short HEAD 2>/dev/null || echo local)" ;;
esac
arch=$(dpkg --print-architecture)

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/bin/airlock"
install -D -m 0644 contrib/debian/airlock.service "$root/lib/systemd/system/airlock.service"
install -D -m 0644 contrib/debian/airlock.tmpfiles "$root/usr/lib/tmpfiles.d/airlock.conf"
install -d -m 0755 "$root/etc/airlock"
# The packaged configuration: the embedded defaults, documented key by key,
# with the state where the unit keeps it.
"$bin" config defaults | sed 's|^state_dir: ""$|state_dir: /var/lib/airlock/gateway|' > "$root/etc/airlock/airlock.yaml"
grep -q '^state_dir: /var/lib/airlock/gateway$' "$root/etc/airlock/airlock.yaml" || { echo "build-deb: state_dir not set" >&2; exit 1; }
chmod 0644 "$root/etc/airlock/airlock.yaml"

# Man pages from the commands' help: airlock(1) lists the commands,
# airlock-COMMAND(1) is `airlock COMMAND -h` verbatim.
man=$root/usr/share/man/man1
install -d -m 0755 "$man"
roff_escape() { sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/"; }
# `airlock` alone and `airlock CMD -h` print their help and exit 2.
usage=$("$bin" 2>&1 || true)
help() { "$bin" "$1" -h 2>&1 || true; }
cmds=$(echo "$usage" | awk '/^commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{exit}')
{
  echo ".TH AIRLOCK 1 \"\" \"airlock $version\" \"User Commands\""
  echo ".SH NAME"
  echo "airlock \\- sealed desktops, virtual machines and web apps on compute nodes, in the browser"
  echo ".SH SYNOPSIS"
  echo ".B airlock"
  echo ".I COMMAND"
  echo "[flags]"
  echo ".SH COMMANDS"
  echo ".nf"
  echo "$usage" | awk '/^commands:/{on=1; next} on && /^$/{exit} on' | roff_escape
  echo ".fi"
  echo ".SH FILES"
  echo "/etc/airlock/airlock.yaml, /var/lib/airlock, /lib/systemd/system/airlock.service"
  echo ".SH SEE ALSO"
  for c in $cmds; do echo ".BR airlock-$c (1),"; done | sed '$ s/,$//'
} > "$man/airlock.1"
for c in $cmds; do
  {
    echo ".TH AIRLOCK-${c^^} 1 \"\" \"airlock $version\" \"User Commands\""
    echo ".SH NAME"
    echo "airlock-$c \\- $(echo "$usage" | awk -v c="$c" '$1 == c {$1=""; sub(/^ +/, ""); print; exit}' | roff_escape)"
    echo ".SH DESCRIPTION"
    echo ".nf"
    help "$c" | roff_escape
    echo ".fi"
    echo ".SH SEE ALSO"
    echo ".BR airlock (1)"
  } > "$man/airlock-$c.1"
done
gzip -9n "$man"/*.1

# Bash completion: the commands, then each command's flags from its help.
comp=$root/usr/share/bash-completion/completions/airlock
install -d -m 0755 "$(dirname "$comp")"
{
  echo "# bash completion for airlock (generated from its help by scripts/build-deb.sh)"
  echo "_airlock() {"
  echo "  local cur=\${COMP_WORDS[COMP_CWORD]}"
  echo "  if [ \"\$COMP_CWORD\" -eq 1 ]; then"
  echo "    COMPREPLY=(\$(compgen -W \"$(echo $cmds)\" -- \"\$cur\")); return"
  echo "  fi"
  echo "  case \${COMP_WORDS[1]} in"
  for c in $cmds; do
    flags=$(help "$c" | awk '/^  -[a-z]/{print "-" $1}' | sort -u | tr '\n' ' ')
    echo "    $c) COMPREPLY=(\$(compgen -W \"${flags% }\" -- \"\$cur\")) ;;"
  done
  echo "  esac"
  echo "}"
  echo "complete -o default -F _airlock airlock"
} > "$comp"
chmod 0644 "$comp"

install -d -m 0755 "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | awk '{print $1}')
cat > "$root/DEBIAN/control" <<CONTROL
Package: airlock
Version: $version
Architecture: $arch
Maintainer: airlock maintainers <airlock@localhost>
Installed-Size: $size
Depends: uidmap, iproute2
Recommends: tigervnc-standalone-server, xterm, icewm, xfe, qemu-system-x86, qemu-utils
Suggests: slurm-client, xrdp
Section: admin
Priority: optional
Homepage: https://github.com/airlock-hpc/airlock
Description: sealed desktops, VMs and web apps on compute nodes, in the browser
 airlock runs a desktop, a virtual machine or a web app sealed off in its
 own network namespace on a compute node, and lets users reach it from a
 browser or a native RDP client through connectors that admit only holders
 of a short-lived ticket. One binary: the gateway (airlock serve, run by
 airlock.service), the runner and the connectors.
CONTROL
echo "/etc/airlock/airlock.yaml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # What systemd-tmpfiles would make at boot, now.
  if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/airlock.conf || true
  else
    install -d -m 0755 /var/lib/airlock
    install -d -m 0700 /var/lib/airlock/gateway
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # Enabled, not started: the admin checks /etc/airlock/airlock.yaml
    # (TLS, authentication) first, then `systemctl start airlock`.
    systemctl enable airlock.service || true
    # An upgrade restarts a running gateway; its migrations run at start.
    systemctl try-restart airlock.service || true
  fi
fi
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop airlock.service || true
  systemctl disable airlock.service || true
fi
PRERM
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  # The gateway's database, keys, certificate and password file. The rest
  # of /var/lib/airlock (homes of accounts the embedded demo made, which
  # outlive the package like the accounts) and /run/airlock (a hand-run
  # root session's scratch) go only when empty.
  rm -rf /var/lib/airlock/gateway
  rmdir /var/lib/airlock /run/airlock /etc/airlock 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/airlock_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
