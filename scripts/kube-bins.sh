#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the kubernetes backend's tests run
# against (kube-apiserver, kube-scheduler, kwok) from the Go module proxy into a
# cache outside the repository, keyed by version. Debian has no kube-apiserver
# package, and a cold build takes 11-22 minutes and ~3 GB of build cache on two
# cores, so it is built once per machine and reused: a warm cache makes this a no-op.
# Prints the cache directory on the last line. Override the location with
# AIRLOCK_KUBE_CACHE; the tests read the same variable (see internal/realtest/kube.go).
set -euo pipefail

K8S=1.37.2     # k8s.io/kubernetes; its staging modules are v0.37.2
KWOK=0.8.0     # sigs.k8s.io/kwok
dir="${AIRLOCK_KUBE_CACHE:-/var/cache/airlock-test/kube-v$K8S}"
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/kube-scheduler" ] && [ -x "$dir/kwok" ] && [ -s "$dir/kwok-stages.yaml" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod
nice=(nice -n 10)

# kube-apiserver and kube-scheduler: k8s.io/kubernetes points its staging modules
# at ./staging with replace directives, which a dependent module cannot use, so
# the throwaway module pins each one to its published v0.x version instead.
if [ ! -x "$dir/kube-apiserver" ] || [ ! -x "$dir/kube-scheduler" ]; then
  mkdir "$work/k8s"
  cd "$work/k8s"
  gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    printf 'module airlock.test/kubebins\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S"
    # sample-* modules are not published for every release and nothing needs them.
    sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=>/ {print $1}' | grep -v '^k8s.io/sample-' |
      while read -r m; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${K8S#1.}"; done
    printf ')\n'
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n)\n' > tools.go
  go mod tidy
  # A real version string: kubectl version cannot parse the default one.
  minor="${K8S#1.}"
  minor="${minor%%.*}"
  ver="-X k8s.io/component-base/version.gitVersion=v$K8S -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  "${nice[@]}" go build -ldflags="-s -w $ver" -o "$dir/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$dir/kube-apiserver.tmp" "$dir/kube-apiserver"
  "${nice[@]}" go build -ldflags="-s -w $ver" -o "$dir/kube-scheduler.tmp" k8s.io/kubernetes/cmd/kube-scheduler
  mv "$dir/kube-scheduler.tmp" "$dir/kube-scheduler"
fi

# kwok simulates nodes and the pod lifecycle, so pods are scheduled and change
# phase without a kubelet or container runtime.
if [ ! -x "$dir/kwok" ] || [ ! -s "$dir/kwok-stages.yaml" ]; then
  mkdir -p "$work/kwok"
  cd "$work/kwok"
  printf 'module airlock.test/kwokbin\n\ngo 1.26.0\n' > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kwok/cmd/kwok"\n' > tools.go
  go get "sigs.k8s.io/kwok@v$KWOK"
  go mod tidy
  "${nice[@]}" go build -ldflags='-s -w' -o "$dir/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok
  mv "$dir/kwok.tmp" "$dir/kwok"
  st="$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK/kustomize/stage"
  # kwok refuses to start without stages: node readiness and heartbeat, pod
  # ready/complete/delete. Each file is one YAML document; join them with ---.
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    printf -- '---\n'; cat "$st/$f"; printf '\n'
  done > "$dir/kwok-stages.yaml.tmp"
  mv "$dir/kwok-stages.yaml.tmp" "$dir/kwok-stages.yaml"
fi
echo "$dir"
