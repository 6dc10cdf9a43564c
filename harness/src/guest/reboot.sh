#!/bin/sh
# rewindd's reboot_command in the test guest (`{reason}` is $1). A phone's
# bootloader remembers why the system rebooted and passes it to the next
# boot as androidboot.bootreason=reboot,<reason>; here the reason goes to
# the host share, and the harness puts it on the next boot's kernel command
# line. Like Android's reboot(8) (which only sets sys.powerctl), it returns
# at once and the reboot follows, so rewindd can answer its caller first.
reason=${1:-}
if [ -n "$reason" ]; then
  printf '%s\n' "$reason" > /host/boot/reboot-reason.tmp && mv /host/boot/reboot-reason.tmp /host/boot/reboot-reason
fi
sync
( sleep 1; sync; reboot -f ) > /dev/null 2>&1 < /dev/null &
exit 0
