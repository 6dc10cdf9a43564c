#!/bin/sh
# A "new system" that crashes: a native crash leaves a tombstone and
# system_server an ANR trace, where tombstoned and the framework put them,
# then the kernel panics (the scenario does that). Prints the sha256 of
# both as written, so the copies rewindd keeps can be compared after the
# rollback has erased the originals.
set -eu
D=${REWIND_DATA:-/data}
mkdir -p "$D/tombstones" "$D/anr"
{
  echo '*** *** *** *** *** *** *** *** *** *** *** *** *** *** *** ***'
  echo 'Build fingerprint: rewind/qemu/guest:new-system/attempt-2'
  echo 'pid: 1234, tid: 1234, name: surfaceflinger  >>> /system/bin/surfaceflinger <<<'
  echo 'signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0000000000000000'
  i=0
  while [ $i -lt 200 ]; do echo "    #$i pc 000000000004a1c0  /system/lib64/libgui.so (frame $i)"; i=$((i + 1)); done
} > "$D/tombstones/tombstone_00"
{
  echo '----- pid 2345 at 2026-11-23 23:50:46.000000000+0000 -----'
  echo 'Cmd line: system_server'
  echo '"main" prio=5 tid=1 Blocked'
  echo '  at com.android.server.am.ActivityManagerService.attachApplication(ActivityManagerService.java:4703)'
} > "$D/anr/anr_2026-11-23-23-50-46-000"
sync
sha256sum "$D/tombstones/tombstone_00" "$D/anr/anr_2026-11-23-23-50-46-000"
