//! What a benchmark run measures: the configurations (one guest session
//! each) and the sizes, full or `--quick`. Sizes were chosen from TCG
//! measurements on the 2-core development machines (README, Benchmark):
//! large enough that fio's start-up is small beside the job, small
//! enough for a full run in about half an hour.

use serde::Serialize;

use super::fio::Workload;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// One configuration of userdata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Config {
    /// rewind's idle stack: `linear` over the raw partition, no checkpoint.
    Idle,
    /// Block mode armed: snapshot-origin (and, with the free map, linear
    /// lines over the baseline's free chunks).
    Block { chunk_kib: u32, free_map: bool },
    /// f2fs userdata mounted plainly by rewind's idle boot.
    F2fsPlain,
    /// f2fs mode armed: `checkpoint=disable`.
    F2fsDisabled,
}

impl Config {
    pub fn label(&self) -> String {
        match self {
            Config::Idle => "idle".into(),
            Config::Block { chunk_kib, free_map } => {
                format!("block {chunk_kib}K{}", if *free_map { " +free map" } else { "" })
            }
            Config::F2fsPlain => "f2fs plain".into(),
            Config::F2fsDisabled => "f2fs cp=disable".into(),
        }
    }

    /// The configuration its figures are divided by: the idle stack, or
    /// for f2fs's checkpoint its plain mount, both measured in this run.
    pub fn reference(&self) -> Config {
        match self {
            Config::F2fsDisabled => Config::F2fsPlain,
            _ => Config::Idle,
        }
    }

    /// The rewindd config lines the guest's init appends (every session
    /// sets the chunk size and the free map explicitly, so a changed
    /// daemon default does not move the figures).
    pub fn rewindd_extra(&self) -> String {
        let (chunk_kib, free_map) = match self {
            Config::Block { chunk_kib, free_map } => (*chunk_kib, *free_map),
            _ => (4, false),
        };
        // The session's rollback is timed inside prepare-userdata (the
        // merge waited for): in the background rewindd records no time.
        format!(
            "[cow]\nchunk_sectors = {}\nfree_map = {free_map}\nfree_share_percent = 50\nlast_rollback_in_background = false\n",
            chunk_kib * 2
        )
    }
}

/// One fio job's size: `region` of file, `io` moved in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobSize {
    pub region: u64,
    pub io: u64,
}

/// The "first boot after an update" workload: new files (dexopt output,
/// caches, new app data) and databases rewritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OtaSize {
    pub small_files: u64,
    pub small_file_bytes: u64,
    pub large_files: u64,
    pub large_file_bytes: u64,
    pub databases: u64,
    pub database_bytes: u64,
    /// Rewritten per database, 4 KiB pages, each fsync'd.
    pub database_io: u64,
}

impl OtaSize {
    pub fn new_bytes(&self) -> u64 {
        self.small_files * self.small_file_bytes + self.large_files * self.large_file_bytes
    }
}

/// Everything a run does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub reps: u32,
    pub configs: Vec<Config>,
    pub seq: JobSize,
    pub rand: JobSize,
    pub fsync: JobSize,
    pub read: JobSize,
    pub mixed: JobSize,
    pub userdata_mib: u64,
    pub ota: OtaSize,
    /// Changed data of the commit and rollback points, MiB.
    pub changed_mib: Vec<u64>,
    /// The device's own sequential write, measured beside the merges.
    pub device_write_mib: u64,
    /// COW store extents asked for (the store is fragmented on purpose).
    pub extents: Vec<u64>,
    /// Lines of the synthetic armed tables whose load is timed (the last
    /// is the table's line cap), and how many loads of each.
    pub table_lines: Vec<u64>,
    pub table_reps: u32,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        let block = |chunk_kib, free_map| Config::Block { chunk_kib, free_map };
        if quick {
            Plan {
                quick,
                reps: 1,
                configs: vec![Config::Idle, block(4, false), block(4, true), block(64, false), Config::F2fsDisabled],
                seq: JobSize { region: 8 * MIB, io: 8 * MIB },
                rand: JobSize { region: 8 * MIB, io: MIB },
                fsync: JobSize { region: 8 * MIB, io: 128 * KIB },
                read: JobSize { region: 8 * MIB, io: MIB },
                mixed: JobSize { region: 8 * MIB, io: MIB },
                userdata_mib: 512,
                ota: OtaSize {
                    small_files: 200,
                    small_file_bytes: 32 * KIB,
                    large_files: 8,
                    large_file_bytes: MIB,
                    databases: 2,
                    database_bytes: 2 * MIB,
                    database_io: 128 * KIB,
                },
                changed_mib: vec![8, 32],
                device_write_mib: 16,
                extents: vec![1, 1_000],
                // A few seconds in all: the full sizes even in --quick.
                table_lines: vec![10, 1_000, 4_096],
                table_reps: 3,
            }
        } else {
            Plan {
                quick,
                reps: 3,
                configs: vec![
                    Config::Idle,
                    block(4, false),
                    block(4, true),
                    block(16, false),
                    block(64, false),
                    Config::F2fsDisabled,
                ],
                seq: JobSize { region: 16 * MIB, io: 16 * MIB },
                rand: JobSize { region: 8 * MIB, io: MIB },
                fsync: JobSize { region: 8 * MIB, io: 128 * KIB },
                read: JobSize { region: 8 * MIB, io: 2 * MIB },
                mixed: JobSize { region: 8 * MIB, io: MIB },
                userdata_mib: 1024,
                ota: OtaSize {
                    small_files: 600,
                    small_file_bytes: 32 * KIB,
                    large_files: 24,
                    large_file_bytes: MIB,
                    databases: 4,
                    database_bytes: 4 * MIB,
                    database_io: 256 * KIB,
                },
                changed_mib: vec![16, 64, 256, 1024],
                device_write_mib: 64,
                extents: vec![1, 1_000, 10_000, 50_000],
                table_lines: vec![10, 1_000, 4_096],
                table_reps: 3,
            }
        }
    }

    pub fn size(&self, w: Workload) -> JobSize {
        match w {
            Workload::SeqWrite => self.seq,
            Workload::RandWriteBuffered => self.rand,
            Workload::RandWriteFsync => self.fsync,
            Workload::RandRead => self.read,
            Workload::Mixed => self.mixed,
        }
    }

    /// Baseline bytes a matrix session writes before its checkpoint: a
    /// region per write workload and repetition, one read region, the
    /// databases.
    pub fn baseline_bytes(&self) -> u64 {
        let writes: u64 =
            Workload::ALL.iter().filter(|w| **w != Workload::RandRead).map(|w| self.size(*w).region).sum();
        writes * u64::from(self.reps) + self.read.region + self.ota.databases * self.ota.database_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_fits_its_disk_and_store() {
        for quick in [true, false] {
            let p = Plan::new(quick);
            let disk = p.userdata_mib * MIB;
            let base = p.baseline_bytes();
            // New files as large as the baseline's writes go in beside a
            // store of half the free space.
            let free = disk - disk / 10 - base;
            assert!(free / 2 > base + p.ota.new_bytes(), "quick={quick}: {base} baseline in {disk}");
            assert!(p.configs.contains(&Config::Idle));
            assert!(p.configs.contains(&Config::Block { chunk_kib: 4, free_map: true }));
            assert!(p.configs.contains(&Config::Block { chunk_kib: 4, free_map: false }));
            for w in Workload::ALL {
                assert!(p.size(w).io <= p.size(w).region);
            }
        }
        assert!(Config::Block { chunk_kib: 16, free_map: true }.rewindd_extra().contains("chunk_sectors = 32"));
        assert!(Config::Idle.rewindd_extra().contains("free_map = false"));
        assert_eq!(Config::F2fsDisabled.reference(), Config::F2fsPlain);
    }
}
