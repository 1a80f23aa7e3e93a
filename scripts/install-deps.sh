#!/usr/bin/env bash
# Installs what airlock's build, demo, tests and benchmarks need on Debian 12,
# skipping what is already there. Safe to run again.
set -euo pipefail

pkgs=(
  tigervnc-standalone-server tigervnc-tools xfonts-base xterm x11-apps # the demo desktop and the Xvnc tests
  icewm xfe         # the demo desktop's window manager (panel, menu) and file manager
  xclip             # the clipboard filter tests: a desktop's selection set and read
  uidmap            # newuidmap/newgidmap: full id maps in the seal
  iproute2          # test network namespaces (ip netns, veth)
  websockify stunnel4 # the benchmark anchors
  procps            # ps/pgrep in the teardown checks
  slapd ldap-utils  # the real LDAP server the auth tests bind to
  dovecot-imapd exim4-daemon-light # the real IMAP and SMTP servers the mail login tests start by hand
  chromium          # headless browser for the portal's end-to-end tests
  firefox-esr       # kiosk.browser: firefox (TestKioskFirefox runs it in the seal)
  qemu-system-x86 qemu-utils # vm sessions (TCG when there is no /dev/kvm)
  busybox-static kmod # the tiny guest the vm tests build (initramfs, depmod)
  samba             # smbd: QEMU's built-in SMB share for Windows guests
  slurmctld slurmd slurm-client munge # the real one-node cluster the slurm backend's tests submit to
  openssh-server openssh-client # the forward benchmark's ssh -L path (the design airlock forward is measured against)
  xrdp              # RDP into a desktop session (run unprivileged inside the seal)
  freerdp2-x11 xvfb xdotool imagemagick # the native RDP client tests: xfreerdp under Xvfb, a screenshot of its window
  freerdp2-shadow-x11 winpr-utils # desktop.rdp_server: shadow (FreeRDP's shadow server, NLA) and TestRDPWebNLA; winpr-hash checks the runner's NT hash
  zbar-tools oathtool # decode the TOTP enrolment's QR code and make codes with another implementation
  jupyter-notebook  # the demo's app profile (make run), and the test that launches it
  ruby nginx-light novnc # the Open OnDemand app's tests: ERB templates rendered by Debian's ruby, nginx as OnDemand's /rnode proxy (and the benchmarks' nginx: BenchmarkAppProxy, BenchmarkForward's conductor arm, TLS in front of ssh -L), noVNC served inside the seal
  haproxy           # the load balancer in front of several gateways (TestSeveralGatewaysBehindHAProxy)
  postgresql        # the real PostgreSQL the store's conformance suite and the several-gateway tests start by hand (initdb, pg_ctl)
  etcd-server       # the kubernetes backend's tests: the API server's store (kube-apiserver itself comes from scripts/kube-bins.sh)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
go mod download
# kube-apiserver, kube-scheduler and kwok for the kubernetes backend's tests:
# Debian has none, so they are built from the Go module proxy once per
# machine into a versioned cache (11-22 minutes cold, a no-op when warm).
"$(dirname "$0")/kube-bins.sh"
