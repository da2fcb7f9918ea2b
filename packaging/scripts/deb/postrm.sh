#!/bin/sh
# haagent postrm. $1: remove, purge, upgrade, failed-upgrade, abort-install,
# abort-upgrade or disappear.
#
# On remove and purge, make systemd forget the removed unit. dpkg deletes
# /etc/sysconfig/haagent on purge; /var/lib/haagent (etcd's data) is always kept.
# On upgrade, do nothing: never restart haagent from a package (see postinst).
set -e
case "$1" in
remove | purge)
	if [ -z "${DPKG_ROOT:-}" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload || :
	fi
	;;
upgrade | failed-upgrade | abort-install | abort-upgrade | disappear) ;;
esac
exit 0
