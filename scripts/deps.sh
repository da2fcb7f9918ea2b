#!/usr/bin/env bash
# Installs the Debian packages that the tests and benchmarks use. Idempotent and quiet
# when everything is already there, so `make test` can call it every time.
set -euo pipefail
pkgs=(etcd-client etcd-server nginx-light libnginx-mod-stream haproxy iproute2 nftables)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		echo "deps: need root to install: ${missing[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
