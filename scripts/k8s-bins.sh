#!/usr/bin/env bash
# Builds the Kubernetes binaries Axon's Kubernetes tests run, from the
# k8s.io/kubernetes Go module (there is no release download on this kind
# of machine), into a cache directory outside the repository, and reuses
# them when present. Usage: scripts/k8s-bins.sh [COMPONENT...], COMPONENT
# a command under k8s.io/kubernetes/cmd (default: kube-apiserver). Prints
# the cache directory on stdout.
#
#   K8S_VERSION    Kubernetes release to build (default v1.37.2)
#   AXON_K8S_BINS  cache directory (default /var/cache/axon/k8s-$K8S_VERSION
#                  as root, else $XDG_CACHE_HOME/axon/k8s-$K8S_VERSION)
#
# Tests find the binaries through AXON_K8S_BINS or the same default.
# A cold build of kube-apiserver takes about 9 minutes on 2 cores; it runs
# under nice so that it does not starve other work.
set -euo pipefail

version=${K8S_VERSION:-v1.37.2}
if [[ -n ${AXON_K8S_BINS:-} ]]; then
	dir=$AXON_K8S_BINS
elif [[ $(id -u) == 0 ]]; then
	dir=/var/cache/axon/k8s-$version
else
	dir=${XDG_CACHE_HOME:-$HOME/.cache}/axon/k8s-$version
fi
components=("$@")
((${#components[@]})) || components=(kube-apiserver)

todo=()
for c in "${components[@]}"; do
	[[ $c =~ ^[a-z0-9-]+$ ]] || {
		echo "k8s-bins: bad component name '$c'" >&2
		exit 2
	}
	[[ -x $dir/$c ]] || todo+=("$c")
done
if ((${#todo[@]} == 0)); then
	echo "$dir"
	exit 0
fi

# The staging modules (k8s.io/api, client-go, ...) are published as
# v0.<minor>.<patch>; k8s.io/kubernetes points them at ./staging, which a
# module that requires it cannot see, so each is replaced by its release.
staging=v0.${version#v1.}
major=${version#v}
major=${major%%.*}
minor=${version#v*.}
minor=${minor%%.*}

export GOWORK=off GOFLAGS=-mod=mod
src=$dir/src
mkdir -p "$src"
cd "$src"
if [[ ! -f go.mod ]]; then
	go mod init axon.invalid/k8sbins >/dev/null 2>&1
fi
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[[ -n $gomod ]] || {
	echo "k8s-bins: cannot download k8s.io/kubernetes@$version" >&2
	exit 1
}
# sample-cli-plugin and sample-controller are examples no command imports.
mapfile -t mods < <(sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod" |
	grep -vE '^k8s\.io/sample-(cli-plugin|controller)$')
args=()
for m in "${mods[@]}"; do args+=("-replace=$m=$m@$staging"); done
go mod edit "${args[@]}"
go get "k8s.io/kubernetes@$version" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$version"

# kubectl and clients refuse a server without a version.
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for c in "${todo[@]}"; do
	echo "k8s-bins: building $c $version into $dir (a cold build takes minutes)" >&2
	start=$SECONDS
	CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$dir/.$c.tmp" "k8s.io/kubernetes/cmd/$c"
	mv "$dir/.$c.tmp" "$dir/$c"
	echo "k8s-bins: built $c in $((SECONDS - start)) s" >&2
done
echo "$dir"
