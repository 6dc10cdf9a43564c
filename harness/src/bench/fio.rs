//! fio in the guest: the workloads of the benchmark as fio command lines,
//! and fio's JSON output read back into throughput figures.
//!
//! Every write job ends on the device (`--end_fsync=1`, `--fsync=1` or
//! `--direct=1`), so the time covers what the dm stack does, not the page
//! cache. Random jobs use fio's random map with a fixed seed: a rewrite
//! with the same job touches exactly the blocks the first run touched.

use serde::Serialize;

/// The fio workloads (issue 10, "What must work" 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Sequential write, 1 MiB blocks, fsync at the end.
    SeqWrite,
    /// Random 4 KiB writes through the page cache, fsync at the end.
    RandWriteBuffered,
    /// Random 4 KiB writes, fsync after each (a database's commit).
    RandWriteFsync,
    /// Random 4 KiB reads (direct I/O: from the device, not the cache).
    RandRead,
    /// Random 4 KiB, 70 % reads and 30 % writes (direct I/O).
    Mixed,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::SeqWrite,
        Workload::RandWriteBuffered,
        Workload::RandWriteFsync,
        Workload::RandRead,
        Workload::Mixed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Workload::SeqWrite => "seq-write-1m",
            Workload::RandWriteBuffered => "randwrite-4k",
            Workload::RandWriteFsync => "randwrite-4k-fsync",
            Workload::RandRead => "randread-4k",
            Workload::Mixed => "mixed-70-30",
        }
    }

    /// The variants it runs on: reads only on baseline data; the mixed
    /// job reads, so it needs existing data (a new file would be laid out
    /// by fio first, which is not what is measured).
    pub fn variants(self) -> &'static [Variant] {
        match self {
            Workload::RandRead => &[Variant::Baseline],
            Workload::Mixed => &[Variant::Overwrite, Variant::Rewrite],
            _ => &[Variant::NewFile, Variant::Overwrite, Variant::Rewrite],
        }
    }

    fn fio_args(self) -> &'static str {
        match self {
            Workload::SeqWrite => "--rw=write --bs=1M --end_fsync=1",
            Workload::RandWriteBuffered => "--rw=randwrite --bs=4k --end_fsync=1",
            Workload::RandWriteFsync => "--rw=randwrite --bs=4k --fsync=1",
            Workload::RandRead => "--rw=randread --bs=4k --direct=1",
            Workload::Mixed => "--rw=randrw --rwmixread=70 --bs=4k --direct=1",
        }
    }
}

/// Where a workload writes (issue 10: new files, overwrite of baseline
/// data, rewrite of data already copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// A file created by the job: free space in the baseline.
    NewFile,
    /// Baseline data, first write during the attempt (every chunk copied).
    Overwrite,
    /// The same blocks again (already copied).
    Rewrite,
    /// Baseline data, read only.
    Baseline,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::NewFile => "new files",
            Variant::Overwrite => "overwrite",
            Variant::Rewrite => "rewrite",
            Variant::Baseline => "baseline",
        }
    }
}

/// One fio job: `region` bytes of file, `io` bytes moved (random jobs
/// touch `io` of the `region` once each, so sparse writes show what a
/// chunk larger than the write costs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub workload: Workload,
    pub file: String,
    pub region: u64,
    pub io: u64,
}

impl Job {
    /// The guest command: fio's JSON on stdout.
    pub fn command(&self) -> String {
        format!(
            "fio --name=bench --filename={} {} --size={} --io_size={} --ioengine=psync --randrepeat=1 \
             --randseed=1 --norandommap=0 --output-format=json",
            self.file,
            self.workload.fio_args(),
            self.region,
            self.io
        )
    }
}

/// What one fio run moved and how long it took (fio's own clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FioResult {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub runtime_ms: u64,
}

impl FioResult {
    /// Read plus written, MiB/s.
    pub fn mib_s(&self) -> f64 {
        if self.runtime_ms == 0 {
            return 0.0;
        }
        (self.read_bytes + self.write_bytes) as f64 / (1 << 20) as f64 * 1000.0 / self.runtime_ms as f64
    }
}

#[derive(Debug, thiserror::Error)]
#[error("fio output unreadable: {why}: {head}")]
pub struct FioParseError {
    why: String,
    head: String,
}

/// Reads fio's `--output-format=json` (anything fio prints before the
/// JSON, a warning, is skipped).
pub fn parse(out: &str) -> Result<FioResult, FioParseError> {
    let err = |why: String| FioParseError { why, head: out.chars().take(200).collect() };
    let start = out.find('{').ok_or_else(|| err("no JSON object".into()))?;
    let v: serde_json::Value = serde_json::from_str(&out[start..]).map_err(|e| err(e.to_string()))?;
    let job = v["jobs"].get(0).ok_or_else(|| err("no job".into()))?;
    let n = |x: &serde_json::Value| x.as_u64().ok_or_else(|| err(format!("missing number {x}")));
    let res = FioResult {
        read_bytes: n(&job["read"]["io_bytes"])?,
        write_bytes: n(&job["write"]["io_bytes"])?,
        runtime_ms: n(&job["job_runtime"])?,
    };
    if job["error"].as_u64().unwrap_or(0) != 0 {
        return Err(err(format!("job error {}", job["error"])));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fio_json_after_a_warning() {
        let out = "fio: something odd\n{\"fio version\":\"fio-3.33\",\"jobs\":[{\"jobname\":\"bench\",\"error\":0,\
                   \"job_runtime\":250,\"read\":{\"io_bytes\":0},\"write\":{\"io_bytes\":4194304}}]}";
        let r = parse(out).expect("parsed");
        assert_eq!((r.read_bytes, r.write_bytes, r.runtime_ms), (0, 4 << 20, 250));
        assert!((r.mib_s() - 16.0).abs() < 1e-9);
        assert!(parse("no json").is_err());
        assert!(parse("{\"jobs\":[{\"job_runtime\":1,\"read\":{},\"write\":{}}]}").is_err());
        let failed =
            "{\"jobs\":[{\"error\":5,\"job_runtime\":1,\"read\":{\"io_bytes\":0},\"write\":{\"io_bytes\":0}}]}";
        assert!(parse(failed).is_err());
    }

    #[test]
    fn commands_name_the_file_sizes_and_device_bound_io() {
        let j = Job { workload: Workload::RandWriteFsync, file: "/data/b/f".into(), region: 16 << 20, io: 1 << 20 };
        let c = j.command();
        assert!(
            c.contains("--filename=/data/b/f") && c.contains("--fsync=1") && c.contains("--io_size=1048576"),
            "{c}"
        );
        for w in Workload::ALL {
            let a = w.fio_args();
            assert!(a.contains("fsync") || a.contains("direct=1"), "{w:?} reaches the device");
            assert!(!w.variants().is_empty());
        }
    }
}
