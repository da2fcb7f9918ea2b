#!/bin/sh
# haagent %postun. $1: 0 on erase, 1 or more after an upgrade.
#
# On erase, make systemd forget the removed unit. On upgrade, do nothing: never
# restart haagent from a package (see %post).
case "$1" in
0)
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload || :
	fi
	;;
esac
exit 0
