#!/bin/sh
# rewindd's reboot_command in the test guest (`{reason}` is $1). A phone's
# bootloader remembers why the system rebooted and passes it to the next
# boot as androidboot.bootreason=reboot,<reason>; here the reason goes to
# the host share (9p without a cache: written through at once), and the
# harness puts it on the next boot's kernel command line. Then the reboot
# at once, as `reboot -f` did before: no sync, which under a writer filling
# the COW store could take long enough to overflow it (the abort policy
# reboots at 95 % precisely to stop the writes before the store is full).
reason=${1:-}
if [ -n "$reason" ]; then
  printf '%s\n' "$reason" > /host/boot/reboot-reason.tmp && mv /host/boot/reboot-reason.tmp /host/boot/reboot-reason
fi
exec reboot -f
