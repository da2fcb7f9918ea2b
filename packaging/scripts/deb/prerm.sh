#!/bin/sh
# haagent prerm. $1: remove, upgrade (the old package's prerm during an upgrade),
# failed-upgrade or deconfigure.
#
# On remove, stop and disable haagent. The etcd data in /var/lib/haagent is kept.
# On upgrade, do nothing: the agent keeps running (see postinst).
set -e
case "$1" in
remove)
	if [ -z "${DPKG_ROOT:-}" ] && command -v systemctl >/dev/null 2>&1; then
		if [ -d /run/systemd/system ]; then
			systemctl disable --now haagent.service || :
		else
			# systemd is not running (a chroot, an image build): only the symlinks.
			systemctl --no-reload disable haagent.service >/dev/null 2>&1 || :
		fi
	fi
	;;
upgrade | failed-upgrade | deconfigure) ;;
esac
exit 0
