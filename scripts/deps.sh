#!/usr/bin/env bash
# Installs the Debian packages that the tests and benchmarks use. Idempotent and quiet
# when everything is already there, so `make test` can call it every time.
set -euo pipefail
pkgs=(
	# outside etcd clients and the etcd 3.4 baseline
	etcd-client etcd-server
	# lb baselines and network namespaces
	nginx-light libnginx-mod-stream haproxy iproute2 nftables openssl curl
	# the VIP pair's baseline (VRRP)
	keepalived
	# test hosts: a bookworm rootfs booted with systemd-nspawn in its own netns
	debootstrap systemd-container util-linux zstd tar
	# packages: rpm inspection and install into scratch roots, rpmlint, a dnf repo
	rpm rpm2cpio rpmlint createrepo-c dnf cpio gnupg
	# upstream busybox for the conformance images, built from its release tarball
	gcc make bzip2 libc6-dev
	# a static /bin/sh for the scratch roots that rpm and dnf install into
	busybox-static
	# cloud-init schema checks of packaging/cloud-init/*.yaml
	cloud-init
	# the lab's image registry (the distribution registry), which test/framework/images pushes to
	docker-registry
)
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
