#!/bin/sh
# A stand-in for Android's bootctl (the boot HAL's command-line client) in
# the test guest. The running slot's "marked successful" flag is a file on
# the host share, so it survives reboots and the host can leave a new slot
# unmarked, as an A/B update does. The same calls as on a device:
#   get-current-slot                 prints 0
#   get-suffix SLOT                  prints _a
#   is-slot-marked-successful SLOT   exit 0 if marked, 1 (and nothing printed) if not
#   mark-boot-successful             marks it (idempotent)
flag=/host/boot/slot-marked
case "${1:-}" in
  get-current-slot) echo 0 ;;
  get-suffix) echo _a ;;
  is-slot-marked-successful) [ -e "$flag" ] ;;
  mark-boot-successful) : > "$flag" && sync ;;
  *) echo "bootctl (rewind guest stand-in): unknown command ${1:-}" >&2; exit 64 ;;
esac
