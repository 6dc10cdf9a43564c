#!/usr/bin/env bash
# Refreshes android/gen/: the code proto/build.rs generates (tonic-prost-build)
# for rewind.v1, checked in because Soong does not run Cargo build scripts.
# Android.bp copies these files into the proto library's OUT_DIR. Run it after
# every change to proto/rewind/v1/checkpoint.proto; a harness unit test
# (android_rc::tests::android_generated_proto_is_current) fails until then.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p rewind-proto
# The newest build-script output of rewind-proto is the one just built.
shopt -s nullglob
out=""
for d in target/*/debug/build/rewind-proto-*/out target/debug/build/rewind-proto-*/out; do
  [ -f "$d/rewind.v1.rs" ] || continue
  if [ -z "$out" ] || [ "$d/rewind.v1.rs" -nt "$out/rewind.v1.rs" ]; then out=$d; fi
done
[ -n "$out" ] || { echo "update.sh: no rewind-proto build output found" >&2; exit 1; }
cp "$out/rewind.v1.rs" "$out/rewind_v1_descriptor.bin" android/gen/
# The proto these files were generated from: the staleness test compares it
# with proto/rewind/v1/checkpoint.proto byte for byte.
cp proto/rewind/v1/checkpoint.proto android/gen/checkpoint.proto
echo "android/gen updated from $out"
