#!/bin/sh
# haagent %post. $1: 1 on install, 2 or more on upgrade.
#
# Only make systemd read the new unit. Never enable or start haagent on install: the
# host's role is not known yet. Never restart it on upgrade: the upgrade runs on every
# master at about the same time, and restarting them all would restart every etcd
# member at once and lose quorum. The running agent picks up the new binary on the
# operator's rolling `systemctl restart haagent`, one master at a time.
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
