#!/bin/sh
# haagent postinst. $1: configure (install and upgrade; $2 is the old version, empty on
# install), or abort-upgrade, abort-remove, abort-deconfigure.
#
# Only make systemd read the new unit. Never enable or start haagent on install: the
# host's role is not known yet. Never restart it on upgrade: the upgrade runs on every
# master at about the same time, and restarting them all would restart every etcd
# member at once and lose quorum. A running master notices the new binary and rolls
# onto it itself, one master at a time under a lock in etcd (package roll); restart an
# lb or a minion yourself, one at a time.
set -e
case "$1" in
configure)
	if [ -z "${DPKG_ROOT:-}" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload || :
	fi
	;;
abort-upgrade | abort-remove | abort-deconfigure) ;;
esac
exit 0
