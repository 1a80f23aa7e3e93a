#!/usr/bin/env bash
# Installs the portal's npm packages from package-lock.json (only when
# node_modules is missing or older than the lock file) and copies the noVNC
# ES modules that core/rfb.js needs into internal/portal/static/vendor/novnc/,
# and the IronRDP web client (its web component and its RDP backend, the
# WebAssembly inlined) into internal/portal/static/vendor/ironrdp/, where
# `go build` embeds them. That directory is generated, never committed;
# without it the portal still builds and its session page says how to build
# the client.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.package-lock.json # npm writes it on every install
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund
fi

src=node_modules/@novnc/novnc
dst=internal/portal/static/vendor/novnc
if [ ! -f "$src/core/rfb.js" ]; then
  echo "build-web: $src/core/rfb.js is missing after npm ci" >&2
  exit 1
fi

# Build the copy beside the target and swap it in, so an interrupted run
# never leaves a half-copied client for go:embed to pick up.
mkdir -p "$(dirname "$dst")"
tmp=$(mktemp -d "$(dirname "$dst")/.novnc.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/vendor"
cp -R "$src/core" "$tmp/core"
cp -R "$src/vendor/pako" "$tmp/vendor/pako"
# noVNC is MPL-2.0 and pako MIT: their licences travel with the code.
cp "$src/LICENSE.txt" "$tmp/LICENSE.txt"
version=$(node -p "require('./$src/package.json').version")
echo "$version" > "$tmp/VERSION.txt"
chmod -R u+rwX,go+rX "$tmp"

rm -rf "$dst"
mv "$tmp" "$dst"
trap - EXIT
echo "build-web: noVNC $version -> $dst ($(find "$dst" -name '*.js' | wc -l) modules)"

# The IronRDP web client: two ES modules, as published (MIT OR
# Apache-2.0, which their package.json files state and travel with them).
rdp_src=node_modules/@devolutions
rdp_dst=internal/portal/static/vendor/ironrdp
for f in iron-remote-desktop/iron-remote-desktop.js iron-remote-desktop-rdp/iron-remote-desktop-rdp.js; do
  if [ ! -f "$rdp_src/$f" ]; then
    echo "build-web: $rdp_src/$f is missing after npm ci" >&2
    exit 1
  fi
done
tmp=$(mktemp -d "$(dirname "$rdp_dst")/.ironrdp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for p in iron-remote-desktop iron-remote-desktop-rdp; do
  cp "$rdp_src/$p/$p.js" "$tmp/$p.js"
  cp "$rdp_src/$p/package.json" "$tmp/$p.package.json"
done
chmod -R u+rwX,go+rX "$tmp"
rm -rf "$rdp_dst"
mv "$tmp" "$rdp_dst"
trap - EXIT
echo "build-web: IronRDP web client $(node -p "require('./$rdp_src/iron-remote-desktop-rdp/package.json').version") -> $rdp_dst"
