#!/bin/sh
# The test guest's clean shutdown (`rewind-guest-shutdown CRYPT_DEVICE`), in
# the order Android's init shuts down: the `on shutdown` steps of
# android/rewindd.rc (rc_shutdown, rendered into /etc/rewind/boot-steps.sh
# like the boot's steps), then sync and /data unmounted, the services
# started at shutdown given their time (rewind_seal waits for that unmount
# and seals the free map), the metadata-encryption layer removed as vold's
# would go, /metadata unmounted, power off.
crypt=${1:-}
[ -r /host/boot/plan.env ] && . /host/boot/plan.env
LOGS=/host/logs/boot-${REWIND_BOOT:-0}
mkdir -p "$LOGS"
PIDS=
rc_prop_is() {
  # No `on shutdown` step of the .rc has a property condition; one that
  # did would need init.sh's properties, which this shell does not have.
  echo "@@REWIND-ERROR shutdown step with a property condition ($1=$2) not run@@" > /dev/console
  return 1
}
rc_step() {
  kind=$1; svc=$2; line=$3; shift 3
  case "$kind" in
    start|exec_background)
      "$@" > "$LOGS/shutdown-$svc.log" 2>&1 < /dev/null &
      PIDS="$PIDS $!" ;;
    exec|exec_start)
      "$@" > "$LOGS/shutdown-$svc.log" 2>&1 < /dev/null ;;
  esac
  return 0
}
# The steps talk to rewindd; a raw boot (no rewindd) has none to run.
if [ -S /dev/socket/rewindd ] && . /etc/rewind/boot-steps.sh; then
  rc_shutdown
fi
sync
umount /data 2>/dev/null
# Each waits for the unmount itself and is bounded by its own timeout.
for p in $PIDS; do wait "$p"; done
[ -n "$crypt" ] && dmsetup remove "$crypt" 2>/dev/null
umount /metadata 2>/dev/null
sync
# Under dm-log-writes (rewind-harness log-writes) a write enters the log
# only after the flush that made it durable has completed, and then from a
# kernel thread: `sync` returning does not mean the log disk holds it, and
# powering off at once could drop the last entries (the whole-log check
# would then see disks the log cannot rebuild). A mark queues behind them;
# wait until the entry count and the log's end stop moving, then flush the
# log disk itself.
if dmsetup status lw-log >/dev/null 2>&1; then
  dmsetup message lw-log 0 mark shutdown 2>/dev/null
  last=; same=0; i=0
  while [ $same -lt 5 ] && [ $i -lt 100 ]; do
    now=$(dmsetup status lw-log 2>/dev/null | cut -d' ' -f4-)
    if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; last=$now; fi
    usleep 100000; i=$((i + 1))
  done
  [ $same -ge 5 ] || echo "@@REWIND-ERROR log-writes: the log did not settle in 10 s ($last)@@" > /dev/console
  blockdev --flushbufs "$(readlink -f /dev/block/by-name/logwrites)" 2>/dev/null
fi
poweroff -f
