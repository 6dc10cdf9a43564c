//! Building and loading the device stack for a COW store of many extents.
//! The store is fragmented on purpose: userdata is filled completely (the
//! reserved blocks released first), then holes are punched at a stride in
//! the filler (fio's falloc engine), so the only free space rewindd's
//! store can take is those holes, one extent each. The store's size is
//! capped (`cow.max_bytes`) at the extents asked for times the hole size.
//! The figure is the boot's prepare-userdata stage (rewindctl
//! prepare-userdata: check the store's extents, build and load the three
//! dm devices), against the same stage of the idle stack's boot.

use serde::Serialize;

use super::guest::{self, run, BenchError};
use super::plan::Plan;
use crate::plan::{stage, BootPlan, FsType};
use crate::scenario::{checks, Ctx, Options};
use crate::target::BootRecord;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    pub extents_asked: u64,
    /// Lines of rewind-userdata-cow's table: the store's extents.
    pub extents: u64,
    pub store_mib: u64,
    /// Boot stage prepare-userdata -> userdata-prepared, host clock.
    pub prepare_ms: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ScaleOut {
    /// The same stage with no checkpoint (the idle linear stack).
    pub idle_prepare_ms: u64,
    pub points: Vec<ScalePoint>,
    /// Load+resume of synthetic armed tables ([`super::tables`]), in the
    /// same guest.
    pub table_loads: Vec<super::tables::TableLoadPoint>,
}

/// Hole size and store size for `extents`: 4 KiB holes from 10,000 on,
/// larger below so the store stays at least 16 MiB.
pub fn geometry(extents: u64) -> (u64, u64) {
    if extents <= 1 {
        return (0, 16 * MIB);
    }
    // The largest power of two that keeps `extents` holes within 16 MiB.
    let hole =
        if extents >= 10_000 { 4 * KIB } else { (1u64 << (63 - (16 * MIB / extents).leading_zeros())).max(4 * KIB) };
    let store = (extents * hole).div_ceil(MIB) * MIB;
    (hole, store)
}

fn prepare_ms(rec: &BootRecord) -> u64 {
    match (rec.reached_ms(stage::PREPARE_USERDATA), rec.reached_ms(stage::USERDATA_PREPARED)) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => 0,
    }
}

fn extra(store: u64) -> String {
    format!(
        "[cow]\nchunk_sectors = 8\nfree_map = false\nfree_share_percent = 50\nmin_bytes = {MIB}\nmax_bytes = {store}\n\
         file_max_bytes = {}\n",
        64 * MIB
    )
}

/// Leaves holes only: ext4's reserved clusters are released (a count
/// the allocator would otherwise keep free somewhere contiguous), the
/// filler takes every free block (root may use the reserved blocks), then
/// holes of `hole` bytes are punched at a stride of twice that: enough for
/// twice `store` (the store takes at most half of what is available) plus
/// the reserved blocks statvfs does not count as available. A 1 MiB slack
/// file is removed before the punching: splitting the filler's extents
/// needs a few free blocks for the extent tree (punching into a full
/// filesystem fails with ENOSPC).
fn fragment(cx: &mut Ctx, hole: u64, store: u64) -> Result<(), BenchError> {
    let out = run(
        cx,
        "set -e; rm -f /data/filler /data/filler2 /data/slack; sync; \
         dev=$(basename $(readlink -f $(awk '$2 == \"/data\" { print $1 }' /proc/mounts))); \
         echo 0 > /sys/fs/ext4/$dev/reserved_clusters; \
         dd if=/dev/zero of=/data/slack bs=1M count=1 2>/dev/null; \
         set -- $(df -k /data | tail -1 | awk '{ print $(NF-4), $(NF-3), $(NF-2) }'); \
         echo reserved_kib $(( $1 - $2 - $3 )); \
         fio --name=fill --filename=/data/filler --ioengine=falloc --rw=write --bs=1M --size=$(( ($3 - 4096) / 1024 ))M \
           --output-format=terse >/dev/null; \
         dd if=/dev/zero of=/data/filler2 bs=4k 2>/dev/null || true; rm /data/slack; sync",
        1800,
    )?;
    let reserved = out
        .lines()
        .find_map(|l| l.strip_prefix("reserved_kib "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| guest::unexpected("the filesystem's reserved blocks", out.clone()))?;
    let holes = (store * 22 / 10 + reserved * KIB).div_ceil(hole);
    run(
        cx,
        &format!(
            "fio --name=punch --filename=/data/filler --ioengine=falloc --rw=trim:{hole} --bs={hole} --size={} \
             --output-format=terse >/dev/null; sync",
            2 * hole * holes
        ),
        1800,
    )?;
    Ok(())
}

/// The stack build at each of `extents` (none: only the table loads).
pub fn session(plan: &Plan, extents: &[u64]) -> Result<ScaleOut, BenchError> {
    let max_store = extents.iter().map(|e| geometry(*e).1).max().unwrap_or(16 * MIB);
    // Holes for twice the store (the store takes at most half the free
    // space), the filler around them, and room for the rest.
    let userdata_mib = ((max_store * 6) / MIB).max(512);
    let first = extents.first().copied().unwrap_or(1);
    let mut g = guest::new_guest("bench-scale", FsType::Ext4, userdata_mib, &extra(geometry(first).1))?;
    let share = g.share_dir().join("boot/rewindd.extra.toml");
    let mut cx = Ctx::new(&mut g, "bench-scale", Options::default());
    let mut out = ScaleOut::default();
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    out.idle_prepare_ms = prepare_ms(&rec);
    out.table_loads = super::tables::measure(&mut cx, &plan.table_lines, plan.table_reps)?;
    for (i, &asked) in extents.iter().enumerate() {
        let (hole, store) = geometry(asked);
        if hole > 0 {
            fragment(&mut cx, hole, store)?;
        }
        checks::start(&mut cx, 1, "bench scale")?;
        // The next point's store size, read by the next boot's rewindd.
        if let Some(next) = extents.get(i + 1) {
            std::fs::write(&share, extra(geometry(*next).1))
                .map_err(|source| BenchError::Write { path: share.clone(), source })?;
        }
        cx.shutdown()?;
        let rec = cx.boot_ready(&BootPlan::rewind())?;
        let lines = run(&mut cx, "dmsetup table rewind-userdata-cow | wc -l", 60)?;
        let extents = lines.trim().parse().unwrap_or(0);
        let point = ScalePoint { extents_asked: asked, extents, store_mib: store / MIB, prepare_ms: prepare_ms(&rec) };
        crate::progress::log(&format!("[bench] scale: {point:?}"));
        out.points.push(point);
        run(&mut cx, "rewindctl commit --reason bench >/dev/null", 300)?;
        checks::wait_cow_gone(cx.target)?;
        run(&mut cx, "rm -f /data/filler /data/filler2; sync", 300)?;
    }
    cx.shutdown()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_gives_the_extents_asked() {
        assert_eq!(geometry(1), (0, 16 * MIB));
        let (hole, store) = geometry(1_000);
        assert_eq!(hole, 16 * KIB);
        assert!(store / hole >= 1_000);
        for n in [10_000, 50_000] {
            let (hole, store) = geometry(n);
            assert_eq!(hole, 4 * KIB);
            assert!(store / hole >= n && store / hole < n + 256, "{n}");
        }
    }
}
