#!/bin/sh
# PID 1 of the rewind test guest (dash, busybox applets; initramfs root).
#
# Follows the boot contract of architecture.md with the very commands of
# android/rewindd.rc (rendered per stage into /etc/rewind/boot-steps.sh by
# guest/contract.rs): /metadata, early-fs (`start rewindd`, `rewindctl
# prepare-userdata`), /data from the fstab, the workload, boot completed
# (`rewindctl commit`), then an agent that runs the host's commands. The boot plan
# comes from the host over 9p (/host/boot/plan.env). Every step prints a
# stage marker; the host injects failures at named stages. PID 1 must never
# exit (the kernel would panic), so there is no `set -e` here.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/socket /dev/block/by-name /dev/block/mapper /run /tmp /host /data /metadata /root
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t devpts devpts /dev/pts 2>/dev/null

# Not anchored at line start by the host: the first console line can carry
# escape codes.
marker() { echo "@@REWIND-$1@@"; }
stage() {
  marker "STAGE $1"
  # While a log-writes run records, each stage is a mark in the log too,
  # so the host finds a phase (prepare-userdata .. data-mounted) in it.
  [ -n "${LW:-}" ] && dmsetup message "$LW" 0 mark "$1" 2>/dev/null
  fail_point "$1"
}
error() { marker "ERROR $*"; }

WDPID=
fail_point() {
  if [ "${REWIND_HOLD_AT:-}" = "$1" ]; then
    # The host cuts the power at this stage: stay here so the cut lands
    # exactly at it (the watchdog daemon keeps feeding meanwhile).
    marker "HOLD at $1"
    while :; do sleep 1; done
  fi
  [ "${REWIND_FAIL_AT:-}" = "$1" ] || return 0
  marker "INJECT ${REWIND_FAIL_KIND} at $1"
  if [ "$REWIND_FAIL_KIND" = kill-rewindd ]; then
    # The boot goes on: the kill runs beside it.
    kill_rewindd &
    return 0
  fi
  if [ "$REWIND_FAIL_KIND" = script ]; then
    # A fault below rewind made while the boot goes on (plan.rs:
    # Failure::GuestScript); its account goes to the share.
    sh -c "$REWIND_FAIL_SCRIPT" > "$LOGS/fail-script.log" 2>&1 < /dev/null &
    return 0
  fi
  case "$REWIND_FAIL_KIND" in
    panic) echo c > /proc/sysrq-trigger ;;
    reset) echo b > /proc/sysrq-trigger ;;
    poweroff) sync; poweroff -f ;;
    hang)
      # Stop feeding without the magic close: SIGKILL leaves the watchdog
      # armed, then spin like a wedged boot would.
      [ -n "$WDPID" ] && kill -9 "$WDPID"
      while :; do :; done ;;
    *) error "unknown failure kind $REWIND_FAIL_KIND" ;;
  esac
  # Only reached when the injection did not take.
  while :; do sleep 1; done
}

# SIGKILL rewindd REWIND_FAIL_DELAY_MS after the stage (counted from the
# moment rewindd's log shows REWIND_FAIL_AFTER_LOG, when set), then start it again
# the way init restarts a service that died (android/rewindd.rc: rewindd is
# not oneshot; init waits its 5 s restart period). What happened goes to
# $LOGS/kill-rewindd.log for the host.
kill_rewindd() {
  klog=$LOGS/kill-rewindd.log
  if [ -n "${REWIND_FAIL_AFTER_LOG:-}" ]; then
    # A point inside a call: wait (up to 120 s) for rewindd to log it.
    i=0
    while ! grep -qF "$REWIND_FAIL_AFTER_LOG" "$LOGS/rewindd.log" 2>/dev/null && [ $i -lt 2400 ]; do
      usleep 50000; i=$((i + 1))
    done
    echo "rewindd logged '$REWIND_FAIL_AFTER_LOG' (waited $((i * 50)) ms)" >> "$klog"
  fi
  [ "${REWIND_FAIL_DELAY_MS:-0}" -gt 0 ] && usleep $((REWIND_FAIL_DELAY_MS * 1000))
  pid=$(pidof rewindd)
  if [ -z "$pid" ]; then echo "rewindd was not running" >> "$klog"; error "kill-rewindd: rewindd is not running"; return; fi
  kill -9 $pid
  # Gone once it is a zombie (init's shell reaps it later) or reaped.
  i=0
  while [ $i -lt 100 ]; do
    st=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null)
    [ -z "$st" ] || [ "$st" = Z ] && break
    usleep 20000; i=$((i + 1))
  done
  echo "killed rewindd (pid $pid) at uptime $(cut -d" " -f1 /proc/uptime)" >> "$klog"
  marker "KILLED rewindd (pid $pid)"
  sleep 5
  $REWINDD_CMD > "$LOGS/rewindd-restarted.log" 2>&1 < /dev/null &
  echo "started rewindd again (pid $!)" >> "$klog"
  marker "RESTARTED rewindd (pid $!)"
}

KVER=$(uname -r)
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$KVER/$m" 2>/tmp/insmod.err || {
    grep -q 'File exists' /tmp/insmod.err || error "insmod $m: $(cat /tmp/insmod.err)"
  }
done < /etc/rewind/modules
marker "STAGE modules-loaded"

# Disks by name, matched by their virtio serial (not probe order), the way
# Android's /dev/block/by-name does it.
i=0
while [ $i -lt 50 ]; do
  for d in /sys/block/vd*; do
    [ -e "$d/serial" ] || continue
    s=$(cat "$d/serial")
    [ -n "$s" ] && ln -sf "/dev/${d##*/}" "/dev/block/by-name/$s"
  done
  [ -e /dev/block/by-name/userdata ] && [ -e /dev/block/by-name/metadata ] && break
  usleep 100000; i=$((i + 1))
done

if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /host; then
  error "9p mount failed"
fi
marker "STAGE host-mounted"
[ -r /host/boot/plan.env ] && . /host/boot/plan.env
LOGS=/host/logs/boot-${REWIND_BOOT:-0}
mkdir -p "$LOGS"
marker "PLAN boot=${REWIND_BOOT:-?} mode=${REWIND_MODE:-?} fail=${REWIND_FAIL_KIND:-none}@${REWIND_FAIL_AT:-none}"
fail_point host-mounted

# dm-log-writes (rewind-harness log-writes): with a third disk `logwrites`
# the two disks become one ordered log. dm-linear concatenates userdata
# and metadata, log-writes logs every write, flush and FUA to that
# concatenation onto the log disk, and two dm-linear devices split it
# again; by-name/userdata and by-name/metadata then point at those, so
# rewindd (rewind_raw=/dev/block/by-name/userdata) and /metadata run over
# the log without knowing. Built before anything writes to either disk.
LW=
dm_node() { echo "/dev/dm-$(dmsetup info -c --noheadings -o minor "$1" | tr -d ' ')"; }
lw_up() {
  ud=$(readlink -f /dev/block/by-name/userdata); md=$(readlink -f /dev/block/by-name/metadata)
  ld=$(readlink -f /dev/block/by-name/logwrites)
  us=$(blockdev --getsz "$ud") && ms=$(blockdev --getsz "$md") || { error "log-writes: blockdev --getsz failed"; return 1; }
  printf '0 %s linear %s 0\n%s %s linear %s 0\n' "$us" "$ud" "$us" "$ms" "$md" | dmsetup create lw-concat &&
    dmsetup create lw-log --table "0 $((us + ms)) log-writes $(dm_node lw-concat) $ld" &&
    dmsetup create lw-userdata --table "0 $us linear $(dm_node lw-log) 0" &&
    dmsetup create lw-metadata --table "0 $ms linear $(dm_node lw-log) $us" ||
    { error "log-writes: building the logged stack failed"; return 1; }
  ln -sf "$(dm_node lw-userdata)" /dev/block/by-name/userdata
  ln -sf "$(dm_node lw-metadata)" /dev/block/by-name/metadata
  LW=lw-log
  marker "LOGWRITES userdata $ud ($us sectors) + metadata $md ($ms sectors) logged onto $ld"
  stage log-writes-up
}
[ -e /dev/block/by-name/logwrites ] && lw_up

# A stand-in for Android's ueventd, when the scenario asks for one: busybox's
# `uevent` runs this handler for every kernel uevent, and it links
# /dev/mapper/<dm name> to devtmpfs's /dev/dm-N on add/change (dm publishes
# the name by the change event of the first resume) and unlinks on remove,
# as ueventd does for /dev/block/mapper. rewindd then runs with
# dev_nodes = "ueventd" and must wait for these links instead of mknod.
if [ -e /host/boot/ueventd ]; then
  cat > /tmp/ueventd.sh <<'UEV'
#!/bin/sh
case "$DEVNAME" in dm-*) ;; *) exit 0 ;; esac
mkdir -p /dev/mapper
case "$ACTION" in
  add|change)
    name=$(cat "/sys/block/$DEVNAME/dm/name" 2>/dev/null) || exit 0
    [ -n "$name" ] && ln -sfn "/dev/$DEVNAME" "/dev/mapper/$name" ;;
  remove)
    for l in /dev/mapper/*; do
      [ -L "$l" ] && [ "$(readlink "$l")" = "/dev/$DEVNAME" ] && rm -f "$l"
    done ;;
esac
exit 0
UEV
  chmod 755 /tmp/ueventd.sh
  uevent /tmp/ueventd.sh >/dev/null 2>&1 &
  marker "ueventd stand-in running (pid $!)"
fi

if [ -e /dev/watchdog ]; then
  watchdog -F -T "${REWIND_WATCHDOG_SECS:-10}" -t 1 /dev/watchdog &
  WDPID=$!
  stage watchdog-armed
else
  error "no /dev/watchdog"
fi

ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
stage network-up

if mount -t ext4 -o noatime,nosuid,nodev /dev/block/by-name/metadata /metadata; then
  stage metadata-mounted
else
  error "mount /metadata failed"
fi

# dm nodes without udev: /dev/dm-N from devtmpfs; the fstab names
# /dev/block/mapper/<name>, made here independently of rewindd.
link_mapper() {
  for d in /sys/block/dm-*; do
    [ -e "$d/dm/name" ] || continue
    ln -sf "/dev/${d##*/}" "/dev/block/mapper/$(cat "$d/dm/name")"
  done
}

# Properties the .rc's triggers test (a device sets them at build time or
# in init; the guest's defaults, overridable by the plan: PROP_<name>).
PROP_rewind_defer_commit=${PROP_rewind_defer_commit:-false}
getprop() { eval "echo \"\${PROP_$(echo "$1" | tr '.-' '__'):-}\""; }
rc_prop_is() { [ "$(getprop "$1")" = "$2" ]; }

# One step of android/rewindd.rc (guest/contract.rs renders them into
# /etc/rewind/boot-steps.sh): rc_step KIND SERVICE LINE ARGV...
# Logs go to the share, named for what they are.
RC_BG=
rc_step() {
  kind=$1; svc=$2; line=$3; shift 3
  case " $* " in
    *" prepare-userdata "*) log=prepare-userdata; stage prepare-userdata ;;
    *" commit "*) log=commit ;;
    *) log=$svc ;;
  esac
  case "$kind" in
    start|exec_background)
      if [ "$svc" = rewindd ]; then
        # For a restart after an injected kill (kill_rewindd).
        REWINDD_CMD="$*"
        stage rewindd-starting
      fi
      "$@" > "$LOGS/$log.log" 2>&1 < /dev/null &
      pid=$!
      if [ "$svc" = rewindd ]; then
        i=0
        while [ ! -S /dev/socket/rewindd ] && [ $i -lt 300 ]; do usleep 100000; i=$((i + 1)); done
        if [ -S /dev/socket/rewindd ]; then stage rewindd-started; else error "rewindd did not create /dev/socket/rewindd"; fi
      else
        RC_BG="$RC_BG $pid:$svc:$line"
      fi ;;
    exec|exec_start)
      if [ "$log" = prepare-userdata ]; then
        # Its progress lines tell when a rollback merge is running: the
        # `merging` stage, where a host can cut the power mid-merge.
        { "$@" < /dev/null 2>&1; echo $? > /tmp/rc_step.rc; } | watch_merge > "$LOGS/$log.log"
        rc=$(cat /tmp/rc_step.rc)
      else
        "$@" > "$LOGS/$log.log" 2>&1 < /dev/null
        rc=$?
      fi
      [ "$rc" = 0 ] || error "$log rc=$rc ($svc, rewindd.rc line $line)" ;;
    mount_all) : ;; # the guest mounts /data itself, after the fs stage
  esac
  [ "$log" = prepare-userdata ] && stage userdata-prepared
  # The last rollback's merge goes on after prepare-userdata returned
  # (cow.last_rollback_in_background): follow it while /data mounts.
  if [ "$log" = prepare-userdata ] && grep -q '^userdata prepared: rolling-back' "$LOGS/$log.log"; then
    follow_background_merge > /dev/console 2>&1 < /dev/null &
  fi
  return 0
}
# Follows a background merge as watch_merge follows a waited-for one, so
# that the host can cut the power at a point of it (stages merging,
# merge-25/50/75 come after userdata-prepared, often after ready), and
# marks its end: merge-ended once rewindd recorded the rollback. The host
# waits for /tmp/background-merge.done before it checks the end state.
# The guest checkpoints one partition, userdata.
follow_background_merge() {
  stage merge-background
  # Samples every 100 ms when this boot is cut or failed at a point of the
  # merge, else every second: on TCG's one vCPU the samples (dmsetup, awk)
  # take time from the boot they are measured beside.
  case "${REWIND_HOLD_AT:-}:${REWIND_FAIL_AT:-}" in
    merg*|*:merg*) every=100000 ;;
    *) every=1000000 ;;
  esac
  dm_merge_lines rewind-userdata "$every" | watch_merge > "$LOGS/background-merge.log"
  rewindctl watch --interval-ms 100 --until-phase rolled-back < /dev/null > /dev/null 2>&1
  rc=$?
  if [ "$rc" = 0 ]; then
    echo "background merge ended" >> "$LOGS/background-merge.log"
    stage merge-ended
  fi
  echo "$rc" > /tmp/background-merge.done
}
# What rewindd's merge look reads, every $2 microseconds until the top device is no
# longer merging: the snapshot-merge status "<allocated>/<size> <metadata>"
# (sectors), as lines of prepare-userdata's progress shape, "merging
# userdata in the background: 41% (21 MiB/51 MiB)", counted from this
# follower's first look. dmsetup in a shell loop rather than rewindctl
# watch: under TCG the client's first line comes a second or more after
# the merge began, too late for a cut at an early point of it.
dm_merge_lines() {
  start=
  while :; do
    st=$(dmsetup status "$1" 2>/dev/null | awk '$3 == "snapshot-merge" { print $4, $5; exit }')
    [ -n "$st" ] || break
    alloc=${st%%/*}
    meta=${st##* }
    case "$alloc$meta" in
      ''|*[!0-9]*) printf '%s status: %s\n' "$1" "$st" ;; # Invalid, Merge failed: rewindd reports it
      *)
        [ -n "$start" ] || start=$alloc
        total=$((start - meta))
        merged=$((start - alloc))
        if [ "$total" -gt 0 ]; then
          printf 'merging %s in the background: %s%% (%s MiB/%s MiB)\n' "${1#rewind-}" \
            $((merged * 100 / total)) $((merged / 2048)) $((total / 2048))
        fi ;;
    esac
    usleep "$2"
  done
}
watch_merge() {
  seen=
  pcts=
  while IFS= read -r l; do
    printf '%s\n' "$l"
    case "$l" in
      merg*) if [ -z "$seen" ]; then seen=1; stage merging > /dev/console 2>&1; fi ;;
    esac
    # "merging rewind-userdata: 41% (21 MiB/51 MiB)": stages merge-25,
    # merge-50, merge-75 once this merge passes them (power cuts at a
    # point of the merge rather than after a guessed delay).
    case "$l" in
      merg*:*%*)
        p=${l#*: }; p=${p%%%*}
        case "$p" in ''|*[!0-9]*) p= ;; esac
        for t in 25 50 75; do
          if [ -n "$p" ] && [ "$p" -ge $t ]; then
            case " $pcts " in *" $t "*) ;; *) pcts="$pcts $t"; stage merge-$t > /dev/console 2>&1 ;; esac
          fi
        done ;;
    esac
  done
}
# Waits for the services a stage started (oneshots such as rewind_commit).
rc_wait_started() {
  for job in $RC_BG; do
    pid=${job%%:*}; rest=${job#*:}
    wait "$pid"
    rc=$?
    [ $rc -eq 0 ] || error "${rest%%:*} rc=$rc (rewindd.rc line ${rest#*:})"
  done
  RC_BG=
}
. /etc/rewind/boot-steps.sh

DATA_DEV=/dev/block/by-name/userdata
DATA_TYPE=${REWIND_FS:-ext4}
DATA_OPTS=noatime,nosuid,nodev
if [ "${REWIND_MODE:-raw}" = rewind ]; then
  mkdir -p /metadata/rewind /dev/socket
  # A scenario's rewindd settings (COW size, space policy, commit hook):
  # TOML the host keeps on the share, appended to the config every boot.
  if [ -r /host/boot/rewindd.extra.toml ]; then
    cat /host/boot/rewindd.extra.toml >> /system/etc/rewindd.toml
  fi
  # early-fs: start rewindd, exec_start rewind_prepare (prepare-userdata).
  rc_early_fs
  rc_fs
  link_mapper
  line=$(awk '$1 !~ /^#/ && $2 == "/data" { print $1, $3, $4; exit }' /etc/fstab.rewind)
  set -- $line
  [ -n "${1:-}" ] && DATA_DEV=$1 && DATA_TYPE=$2 && DATA_OPTS=$3
  # f2fs (checkpoint=fs): when this boot is an attempt, rewindd has
  # mounted /data itself during prepare-userdata, with checkpoint=disable:N%
  # (daemon/src/backend/f2fs.rs, "Who mounts /data"); init then leaves it.
fi

# Metadata encryption (GuestConfig::with_metadata_encryption): on Android
# vold stacks dm-default-key on /data's device inside mount_all, after
# prepare-userdata; here dm-crypt aes-xts-plain64 (the same cipher) stands
# in for it, over the raw partition or rewind-userdata alike. rewindd never
# sees the key; the disk under it holds only ciphertext.
CRYPT_NAME=userdata-crypt
crypt_up() {
  under=$(readlink -f "$1")
  sectors=$(blockdev --getsz "$under") || { error "crypt: blockdev --getsz $under failed"; return 1; }
  # The table carries the key: it goes to dmsetup only, never to a log.
  if ! dmsetup create "$CRYPT_NAME" --table "0 $sectors crypt aes-xts-plain64 $(cat /host/boot/crypt.key) 0 $under 0" 2> /tmp/crypt.err; then
    error "crypt: dmsetup create $CRYPT_NAME over $1 failed: $(cat /tmp/crypt.err)"
    return 1
  fi
  link_mapper
  crypt=/dev/block/mapper/$CRYPT_NAME
  if ! dumpe2fs -h "$crypt" > /dev/null 2>&1; then
    # Formatting is allowed once, at the run's first boot (the harness's
    # flag): afterwards a missing filesystem means a wrong key or damaged
    # data under the layer, which must show, not be papered over.
    if [ ! -e /host/boot/crypt.format ]; then
      error "crypt: no ext4 inside $CRYPT_NAME over $1 (wrong key or damaged data); not formatting it"
      return 1
    fi
    if ! mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0,nodiscard -L userdata "$crypt" 2> /tmp/crypt.err; then
      error "crypt: mkfs.ext4 inside $CRYPT_NAME failed: $(cat /tmp/crypt.err)"
      return 1
    fi
    rm -f /host/boot/crypt.format
    marker "CRYPT formatted ext4 inside $CRYPT_NAME"
  fi
  marker "CRYPT $CRYPT_NAME (aes-xts-plain64, $sectors sectors) over $1"
  stage crypt-up
}
if [ -r /host/boot/crypt.key ] && [ "${REWIND_MOUNT_DATA:-1}" = 1 ] && ! grep -q ' /data ' /proc/mounts; then
  # Never mount the ciphertext underneath if the layer did not come up.
  if crypt_up "$DATA_DEV"; then DATA_DEV=/dev/block/mapper/$CRYPT_NAME; else REWIND_MOUNT_DATA=0; fi
fi

if [ "${REWIND_MOUNT_DATA:-1}" = 1 ] || grep -q ' /data ' /proc/mounts; then
  if grep -q ' /data ' /proc/mounts; then
    marker "DATA mounted by rewindd: $(awk '$2 == "/data" { print $4 }' /proc/mounts)"
    stage data-mounted
  else
    # Before the mount, not only after: ext4 writes its superblock as it
    # mounts, so a power cut between the mount and its data-mounted marker
    # still leaves the old system's write on the disk, and the host's block
    # witness must know the mount was tried.
    stage data-mounting
    if mount -t "$DATA_TYPE" -o "$DATA_OPTS" "$DATA_DEV" /data; then
      stage data-mounted
    else
      error "mount $DATA_DEV on /data failed"
    fi
  fi
fi

if [ "${REWIND_MODE:-raw}" = rewind ]; then
  rc_post_fs
  rc_late_fs
  rc_post_fs_data
fi

if [ -n "${REWIND_WORKLOAD:-}" ]; then
  stage workload-start
  REWIND_DATA=${REWIND_DATA_DIR:-/data} REWIND_ATTEMPT=${REWIND_ATTEMPT:-0} sh "$REWIND_WORKLOAD" > "$LOGS/workload.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || error "workload rc=$rc"
  stage workload-done
fi

# sys.boot_completed=1 (rewindd.rc: start rewind_commit): only a boot the
# plan lets complete gets here; a failed boot of the new system never does.
if [ "${REWIND_MODE:-raw}" = rewind ] && [ "${REWIND_COMMIT:-0}" = 1 ]; then
  rc_boot_completed
  rc_wait_started
  stage committed
fi
stage boot-completed

# The agent: runs the host's commands from /host/cmd, one at a time.
# cmd/<id>.sh -> claimed as <id>.run -> out/<id>.out/.err, then out/<id>.rc
# (renamed into place last, so the host never reads a partial result).
mkdir -p /host/cmd /host/out
if [ "${REWIND_SHELL:-0}" = 1 ]; then
  # `rewind-harness guest shell`: a shell on the serial console beside the
  # agent. busybox ash for its line editing; it runs its own applets before
  # PATH, so real tools are reached by path or through `sh -c` (dash).
  echo "rewind guest: /data, /metadata, /host (9p share); real tools: sh -c '...' or /usr/sbin/<tool>"
  ( while :; do setsid cttyhack ash -l; done ) &
fi
stage ready
cd /
while :; do
  for f in /host/cmd/*.sh; do
    [ -e "$f" ] || continue
    id=${f##*/}; id=${id%.sh}
    mv "$f" "/host/cmd/$id.run" || continue
    sh "/host/cmd/$id.run" > "/host/out/$id.out" 2> "/host/out/$id.err" < /dev/null
    echo $? > "/host/out/$id.rc.tmp"
    mv "/host/out/$id.rc.tmp" "/host/out/$id.rc"
    rm -f "/host/cmd/$id.run"
  done
  usleep 50000
done
