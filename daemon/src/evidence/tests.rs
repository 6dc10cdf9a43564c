//! The evidence copier on a host: real files in a temporary "/data" and
//! "/metadata", a fake free-space reading for a full /metadata.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::sys;

struct Host {
    _dir: tempfile::TempDir,
    data: PathBuf,
    metadata: PathBuf,
    cfg: EvidenceConfig,
    free: Arc<AtomicU64>,
}

fn host() -> Host {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let metadata = dir.path().join("metadata");
    for d in ["tombstones", "anr", "system/dropbox"] {
        std::fs::create_dir_all(data.join(d)).expect("mkdir");
    }
    std::fs::create_dir_all(&metadata).expect("mkdir");
    let cfg = EvidenceConfig {
        sources: vec![data.join("tombstones"), data.join("anr"), data.join("system/dropbox")],
        kmsg: PathBuf::new(),
        pstore_dir: dir.path().join("pstore"),
        max_file_bytes: 1000,
        max_attempt_bytes: 3000,
        max_total_bytes: 5000,
        min_free_bytes: 10_000,
        ..EvidenceConfig::default()
    };
    Host { _dir: dir, data, metadata, cfg, free: Arc::new(AtomicU64::new(1 << 30)) }
}

impl Host {
    fn evidence(&self) -> Evidence {
        let free = Arc::clone(&self.free);
        Evidence::new(&self.metadata, &self.cfg).with_free(Box::new(move |_| Ok(free.load(Ordering::SeqCst))))
    }
    fn copier(&self, attempt: u32) -> Copier {
        // The "boot" started a minute ago: files written now are this boot's.
        Copier::new(&self.evidence(), attempt, sys::now_unix() - 60)
    }
    fn write(&self, rel: &str, bytes: usize) -> PathBuf {
        let p = self.data.join(rel);
        std::fs::write(&p, vec![b'x'; bytes]).expect("write");
        p
    }
    fn names(&self, attempt: u32) -> Vec<String> {
        let mut n: Vec<String> =
            self.evidence().attempt(attempt, false).expect("attempt").files.into_iter().map(|f| f.name).collect();
        n.sort();
        n
    }
}

fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).expect("open");
    f.set_modified(SystemTime::now() - Duration::from_secs(secs)).expect("mtime");
}

/// New files of every source are copied under their own path, each once;
/// a file rewritten later is copied again; files from before this boot
/// (the baseline's) are not.
#[test]
fn new_files_are_copied_once_and_old_ones_not_at_all() {
    let h = host();
    let old = h.write("tombstones/tombstone_99", 10);
    age(&old, 3600);
    h.write("tombstones/tombstone_00", 100);
    h.write("anr/trace_00", 200);
    h.write("system/dropbox/system_app_crash@1.txt", 50);
    let ev = h.evidence();
    let mut c = h.copier(2);
    let p = c.poll(&ev).expect("poll");
    assert_eq!(p.copied.len(), 3, "{p:?}");
    let base = names::stored(h.data.strip_prefix("/").expect("abs"));
    assert_eq!(
        h.names(2),
        [
            format!("{base}/anr/trace_00"),
            format!("{base}/system/dropbox/system_app_crash@1.txt"),
            format!("{base}/tombstones/tombstone_00"),
        ]
    );
    let kept = std::fs::read(ev.root().join("2").join(format!("{base}/anr/trace_00"))).expect("copy");
    assert_eq!(kept.len(), 200);
    assert!(c.poll(&ev).expect("poll").copied.is_empty(), "unchanged files are not copied again");
    std::thread::sleep(Duration::from_millis(20));
    h.write("anr/trace_00", 300);
    assert_eq!(c.poll(&ev).expect("poll").copied, [format!("{base}/anr/trace_00")]);
    assert_eq!(ev.attempt(2, false).expect("a").bytes(), 100 + 300 + 50);
}

/// Over the attempt's cap, the oldest kept files of that attempt go first;
/// over the total cap, the oldest of any attempt; a file larger than
/// max_file_bytes keeps its tail. What went is noted in the index.
#[test]
fn caps_drop_the_oldest_files_first() {
    let h = host();
    let ev = h.evidence();
    let mut c = h.copier(1);
    for i in 0..3 {
        h.write(&format!("tombstones/tombstone_0{i}"), 900);
        c.poll(&ev).expect("poll");
    }
    // A 4th in attempt 1: 3600 > 3000, tombstone_00 (the oldest) goes.
    h.write("tombstones/tombstone_03", 900);
    c.poll(&ev).expect("poll");
    let a1 = ev.attempt(1, false).expect("a1");
    let kept: Vec<&str> = a1.files.iter().map(|f| f.name.rsplit('/').next().unwrap_or("")).collect();
    assert_eq!(kept, ["tombstone_01", "tombstone_02", "tombstone_03"]);
    assert!(
        a1.dropped.iter().any(|d| d.contains("tombstone_00") && d.contains("max_attempt_bytes")),
        "{:?}",
        a1.dropped
    );

    // Attempt 2 pushes the total (2700 + ...) past 5000: attempt 1's oldest
    // go. Its boot starts on rolled-back data: attempt 1's files are gone.
    for e in std::fs::read_dir(h.data.join("tombstones")).expect("ls").flatten() {
        std::fs::remove_file(e.path()).expect("rm");
    }
    let mut c2 = h.copier(2);
    h.write("anr/big", 5000);
    c2.poll(&ev).expect("poll");
    let big = ev.attempt(2, false).expect("a2");
    assert_eq!(big.files.len(), 1);
    assert!(big.files[0].truncated && big.files[0].bytes == 1000, "the tail of a large file: {:?}", big.files[0]);
    for i in 0..3 {
        h.write(&format!("anr/t{i}"), 900);
        c2.poll(&ev).expect("poll");
    }
    let total: u64 = ev.list(false).expect("list").iter().map(|a| a.bytes()).sum();
    assert!(total <= 5000, "total {total}");
    let a1 = ev.attempt(1, false).expect("a1");
    assert!(
        !a1.files.iter().any(|f| f.name.ends_with("tombstone_01")),
        "attempt 1's oldest went for attempt 2: {:?}",
        a1.files
    );
    assert!(a1.dropped.iter().any(|d| d.contains("max_total_bytes")), "{:?}", a1.dropped);
}

/// /metadata is nearly full: a copy that would leave less than
/// min_free_bytes first drops older evidence, and is not made when nothing
/// is left to drop; the state record's space is never used.
#[test]
fn a_full_metadata_is_never_filled() {
    let h = host();
    let ev = h.evidence();
    let mut c = h.copier(1);
    h.write("tombstones/a", 500);
    c.poll(&ev).expect("poll");
    // 10 400 free: 500 more would leave 9 900 < 10 000, so `a` goes first.
    h.free.store(10_400, Ordering::SeqCst);
    // The fake reading does not see the freed bytes: nothing frees enough.
    h.write("tombstones/b", 500);
    let p = c.poll(&ev).expect("poll");
    assert!(p.copied.is_empty(), "{p:?}");
    assert!(p.not_kept.iter().any(|n| n.contains("min_free_bytes")), "{p:?}");
    let a1 = ev.attempt(1, false).expect("a1");
    assert!(a1.files.is_empty(), "the older file was dropped trying: {:?}", a1.files);
    assert!(a1.dropped.iter().any(|d| d.contains("/metadata has 10400 bytes free")), "{:?}", a1.dropped);
    // Neither is copied again and again while /metadata stays full; a
    // newer file is copied once there is room.
    assert!(c.poll(&ev).expect("poll").not_kept.is_empty(), "refused files are remembered");
    h.free.store(1 << 30, Ordering::SeqCst);
    h.write("tombstones/c", 500);
    assert_eq!(c.poll(&ev).expect("poll").copied.len(), 1);
}

/// Source names with newlines, escapes and invalid UTF-8 are kept under
/// printable, one-to-one names and can be read back by them.
#[test]
fn names_with_control_characters_are_kept_safely() {
    let h = host();
    let raw = OsString::from_vec(b"anr_\n\x1b[2J\xff".to_vec());
    std::fs::write(h.data.join("anr").join(&raw), b"trace").expect("write");
    let ev = h.evidence();
    h.copier(3).poll(&ev).expect("poll");
    let a = ev.attempt(3, false).expect("a3");
    assert_eq!(a.files.len(), 1);
    let f = &a.files[0];
    assert!(f.name.ends_with("/anr/anr_%0A%1B[2J%FF"), "{}", f.name);
    assert!(f.name.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert!(f.source.contains("anr_\\n\\u{1b}[2J"), "{}", f.source);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut ev.open(3, &f.name, false).expect("open"), &mut text).expect("read");
    assert_eq!(text, "trace");
    // Only indexed names open; nothing else under /metadata does.
    assert!(matches!(ev.open(3, "../../state", false), Err(EvidenceError::NoFile { .. })));
    assert!(matches!(ev.open(3, "index.json", false), Err(EvidenceError::NoFile { .. })));
    assert!(matches!(ev.open(9, "x", false), Err(EvidenceError::NoAttempt { .. })));
}

/// Symlinks in a source are not followed (a link to /metadata/rewind/state
/// or anywhere else is not copied).
#[test]
fn symlinks_are_not_followed() {
    let h = host();
    let secret = h.metadata.join("state");
    std::fs::write(&secret, b"record").expect("write");
    std::os::unix::fs::symlink(&secret, h.data.join("tombstones/link")).expect("symlink");
    let ev = h.evidence();
    let p = h.copier(1).poll(&ev).expect("poll");
    assert!(p.copied.is_empty(), "{p:?}");
}

/// The next boot records how the attempt's boot ended and keeps pstore;
/// the kernel log tail is kept while the attempt runs; a new checkpoint
/// moves it all to attempts.previous.
#[test]
fn the_next_boot_adds_the_boot_reason_and_pstore() {
    let mut h = host();
    let kmsg = h.data.join("kmsg");
    std::fs::write(&kmsg, "6,1,1000000,-;rewind test line\n").expect("kmsg");
    h.cfg.kmsg = kmsg;
    h.cfg.kmsg_flush_ms = 100;
    let pstore = h.cfg.pstore_dir.clone();
    std::fs::create_dir_all(&pstore).expect("pstore");
    std::fs::write(pstore.join("console-ramoops-0"), b"Kernel panic - not syncing").expect("write");
    let ev = h.evidence();
    h.copier(2).poll(&ev).expect("poll");
    let a = ev.finish(2, "kernel_panic").expect("finish");
    assert_eq!(a.boot_reason, "kernel_panic");
    let names: Vec<&str> = a.files.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&KMSG_TAIL) && names.contains(&BOOT_REASON), "{names:?}");
    assert!(names.contains(&"pstore/console-ramoops-0"), "{names:?}");
    let reason = std::fs::read_to_string(ev.root().join("2").join(BOOT_REASON)).expect("read");
    assert_eq!(reason, "kernel_panic\n");
    let tail = std::fs::read_to_string(ev.root().join("2").join(KMSG_TAIL)).expect("read");
    assert!(tail.contains("[    1.000000] rewind test line"), "{tail}");

    ev.rotate().expect("rotate");
    assert!(ev.list(false).expect("list").is_empty());
    assert_eq!(ev.list(true).expect("previous").len(), 1);
    assert!(ev.open(2, "pstore/console-ramoops-0", true).is_ok());
}

/// Files are kept in copy order across polls and attempts: the index
/// lists them oldest first, and a broken index is set aside, not trusted.
#[test]
fn an_unreadable_index_is_set_aside() {
    let h = host();
    let ev = h.evidence();
    h.write("tombstones/a", 10);
    h.copier(1).poll(&ev).expect("poll");
    std::fs::write(ev.root().join("1").join("index.json"), b"{ torn").expect("tear");
    let a = ev.attempt(1, false).expect("a1");
    assert!(a.files.is_empty());
    assert!(a.dropped.iter().any(|d| d.contains("index.json.bad")), "{:?}", a.dropped);
    assert!(ev.root().join("1").join("index.json.bad").exists());
}
