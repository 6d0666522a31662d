#!/usr/bin/env bash
# Checks that this machine has what Axon's make targets need, and sets up
# what it can. Usage: scripts/setup.sh [PURPOSE...], PURPOSE one of
#   test      make test: gcc and libc headers for -race (cgo); ip, tc, ping,
#             nsenter, sysctl for the kernel tests
#   run       make run: ip and nsenter for the simulated nodes, ping for the demo
#   generate  make generate: clang, llvm-strip, libbpf and kernel headers
#   bench     make bench: the test needs plus iperf3 (pod-to-pod streams),
#             iptables (legacy and nft backends) and nft (the service
#             benchmark's kube-proxy-style and nftables rulesets)
#   k8s       the operator's tests: kube-apiserver, built from Go modules by
#             scripts/k8s-bins.sh into its cache (a cold build takes about
#             10 minutes on 2 cores; then it is reused)
#   ci        .ci/run: all of the above plus git, make and CA certificates
# (default: test, which includes k8s). As root it installs missing Debian packages (apt-get,
# non-interactive) and mounts bpffs on /sys/fs/bpf; otherwise it prints the
# exact command to run and exits 1. It changes nothing when all is present.
set -euo pipefail

# need COMMAND-OR-FILE PACKAGE: PACKAGE (Debian) provides COMMAND-OR-FILE.
# A name with a slash is a file (glob allowed), otherwise a command.
declare -A pkg_for=()
order=()
need() {
	local what=$1 pkg=$2
	[[ -v "pkg_for[$what]" ]] || order+=("$what")
	pkg_for[$what]=$pkg
}

needs_test() {
	# go test -race needs cgo: a C compiler and the libc headers.
	need gcc gcc
	need /usr/include/stdlib.h libc6-dev
	need ip iproute2
	need tc iproute2
	need ping iputils-ping
	need nsenter util-linux
	need mountpoint util-linux
	need sysctl procps
}
needs_run() {
	need ip iproute2
	need nsenter util-linux
	need mountpoint util-linux
	need ping iputils-ping # the demo pings between the pods
}
needs_generate() {
	need clang clang
	need llvm-strip llvm # bpf2go strips the objects with it
	need /usr/include/bpf/bpf_helpers.h libbpf-dev
	need '/usr/include/*/asm/types.h' linux-libc-dev
	need git git
}
needs_bench() {
	needs_test
	need iperf3 iperf3
	need iptables-legacy-restore iptables
	need iptables-nft-restore iptables
	need nft nftables
}
needs_ci() {
	needs_test
	needs_run
	needs_generate
	need make make
	need /etc/ssl/certs/ca-certificates.crt ca-certificates # go mod download
}

purposes=("$@")
((${#purposes[@]})) || purposes=(test)
k8s=false
for p in "${purposes[@]}"; do
	case $p in
	test | ci)
		"needs_$p"
		k8s=true
		;;
	run | generate | bench) "needs_$p" ;;
	k8s) k8s=true ;;
	*)
		echo "setup: unknown purpose '$p' (want test, run, generate, bench, k8s or ci)" >&2
		exit 2
		;;
	esac
done

present() {
	if [[ $1 == */* ]]; then
		compgen -G "$1" >/dev/null
	else
		# sbin is often not in a user's PATH, yet holds sysctl.
		PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null 2>&1
	fi
}

missing=()
for what in "${order[@]}"; do
	present "$what" && continue
	pkg=${pkg_for[$what]}
	[[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
	echo "setup: missing $what (Debian package $pkg)" >&2
done

root=false
[[ $(id -u) == 0 ]] && root=true

if ((${#missing[@]})); then
	if ! $root || ! command -v apt-get >/dev/null 2>&1; then
		echo "setup: install them first, as root:" >&2
		echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	for what in "${order[@]}"; do
		if ! present "$what"; then
			echo "setup: $what still missing after installing ${pkg_for[$what]}" >&2
			exit 1
		fi
	done
fi

# bpffs: the datapath pins its maps and links there. Only root can mount
# it, and only root runs the tests and nodes that pin. Root in an
# unprivileged container cannot: then the BPF tests skip with a reason,
# which is fine locally but must fail CI, which has to run them.
if $root && ! mountpoint -q /sys/fs/bpf; then
	if mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf; then
		echo "setup: mounted bpffs on /sys/fs/bpf" >&2
	elif [[ ${CI:-} == true || ${CI:-} == 1 || " ${purposes[*]} " == *" ci "* ]]; then
		echo "setup: cannot mount bpffs on /sys/fs/bpf, and CI must run the BPF tests" >&2
		exit 1
	else
		echo "setup: warning: cannot mount bpffs on /sys/fs/bpf (unprivileged container?): the BPF tests will skip" >&2
	fi
fi

# The operator's tests run a real kube-apiserver. No package provides it, so
# it is built from k8s.io/kubernetes (Go modules) into a cache outside the
# repository, once; without it those tests skip, or fail under CI.
if $k8s; then
	"$(dirname "$0")/k8s-bins.sh" kube-apiserver >/dev/null
fi
