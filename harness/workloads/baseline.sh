#!/bin/sh
# Baseline userdata of the "old system": what a phone's /data looks like
# before an update. Runs in the guest (busybox sh) with /data mounted.
# Shapes that exercise the manifest: many small files, nested directories,
# a large file, a database-like file, symlinks, hard links, xattrs, modes.
set -eu
D=${REWIND_DATA:-/data}

mkdir -p "$D/app" "$D/media" "$D/db" "$D/misc/config" "$D/user/0"
i=0
while [ $i -lt 300 ]; do
  pkg="$D/app/com.example.app$((i % 30))"
  mkdir -p "$pkg/files" "$pkg/cache"
  # 1-16 KiB of random bytes per file
  dd if=/dev/urandom of="$pkg/files/f$i" bs=1024 count=$(( (i % 16) + 1 )) 2>/dev/null
  i=$((i + 1))
done
dd if=/dev/urandom of="$D/media/video.bin" bs=1M count=24 2>/dev/null
dd if=/dev/urandom of="$D/db/app.db" bs=4096 count=1024 2>/dev/null
echo "schema=1" > "$D/db/app.db.version"
echo "greeting=hello" > "$D/misc/config/settings.conf"
chmod 0600 "$D/misc/config/settings.conf"
ln -s ../db/app.db "$D/user/0/current.db"
ln -s /nonexistent/target "$D/user/0/dangling"
ln "$D/db/app.db.version" "$D/user/0/version.hardlink"
setfattr -n user.rewind.label -v baseline "$D/db/app.db" 2>/dev/null || true
setfattr -n user.rewind.owner -v system "$D/misc/config" 2>/dev/null || true
mkfifo "$D/misc/pipe" 2>/dev/null || true
: > "$D/misc/empty"
chmod 0751 "$D/app"
sync
