#!/bin/sh
# haagent %preun. $1: 0 on erase, 1 or more when an upgrade removes the old version.
#
# On erase, stop and disable haagent. The etcd data in /var/lib/haagent is kept.
# On upgrade, do nothing: the agent keeps running (see %post).
case "$1" in
0)
	if command -v systemctl >/dev/null 2>&1; then
		if [ -d /run/systemd/system ]; then
			systemctl disable --now haagent.service || :
		else
			# systemd is not running (a chroot, an image build): only the symlinks.
			systemctl --no-reload disable haagent.service >/dev/null 2>&1 || :
		fi
	fi
	;;
esac
exit 0
