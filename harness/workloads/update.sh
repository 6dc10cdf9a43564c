#!/bin/sh
# The "new system"'s first boot after an update: what migrations do to
# /data. Runs in the guest (busybox sh) with /data mounted, once per boot.
# REWIND_ATTEMPT (1-based) is set by the guest init; each attempt leaves a
# mark so a test can prove that nothing of a discarded attempt survives.
set -eu
D=${REWIND_DATA:-/data}
N=${REWIND_ATTEMPT:-0}

# App data migration: rename a package dir, delete some files, add new ones.
if [ -d "$D/app/com.example.app3" ]; then
  mv "$D/app/com.example.app3" "$D/app/com.example.app3.migrated.$N"
fi
rm -f "$D/app/com.example.app5/files/"f*
rmdir "$D/app/com.example.app5/files" 2>/dev/null || true
mkdir -p "$D/app/com.example.new$N/files/nested/deeper"
i=0
while [ $i -lt 150 ]; do
  dd if=/dev/urandom of="$D/app/com.example.new$N/files/n$i" bs=512 count=$(( (i % 8) + 1 )) 2>/dev/null
  i=$((i + 1))
done
# Database migration: rewrite pages in place, append, bump the schema.
dd if=/dev/urandom of="$D/db/app.db" bs=4096 seek=100 count=256 conv=notrunc 2>/dev/null
dd if=/dev/urandom bs=4096 count=64 2>/dev/null >> "$D/db/app.db"
echo "schema=$((N + 1))" > "$D/db/app.db.version.tmp"
mv "$D/db/app.db.version.tmp" "$D/db/app.db.version"
# Large file rewritten in place (media re-encode in the middle).
dd if=/dev/urandom of="$D/media/video.bin" bs=1M seek=8 count=8 conv=notrunc 2>/dev/null
# Links, xattrs, modes.
ln -sf ../db/app.db.version "$D/user/0/current.db"
ln "$D/media/video.bin" "$D/user/0/video.hardlink.$N" 2>/dev/null || true
setfattr -n user.rewind.label -v "attempt-$N" "$D/db/app.db" 2>/dev/null || true
setfattr -x user.rewind.owner "$D/misc/config" 2>/dev/null || true
chmod 0644 "$D/misc/config/settings.conf"
# Directories created and removed; a truncated file.
mkdir -p "$D/cache/tmp$N/a/b/c" && rm -rf "$D/cache/tmp$N/a/b"
: > "$D/misc/empty.$N"
truncate -s 100 "$D/app/com.example.app7/files/f7" 2>/dev/null || true
echo "attempt $N was here" > "$D/attempt-$N"
sync
