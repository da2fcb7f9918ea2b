#!/bin/sh
# haagent %post. $1: 1 on install, 2 or more on upgrade.
#
# Only make systemd read the new unit. Never enable or start haagent on install: the
# host's role is not known yet. Never restart it on upgrade: the upgrade runs on every
# master at about the same time, and restarting them all would restart every etcd
# member at once and lose quorum. A running master notices the new binary and rolls
# onto it itself, one master at a time under a lock in etcd (package roll); restart an
# lb or a minion yourself, one at a time.
reload() {
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload || :
	fi
}
case "$1" in
1) reload ;; # install
*) reload ;; # upgrade
esac
exit 0
