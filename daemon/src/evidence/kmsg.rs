//! A bounded tail of the kernel log, read from /dev/kmsg without blocking.
//!
//! Each read of /dev/kmsg returns one record, `prio,seq,usec,flags;text`
//! (continuation lines, `key=value` after a space, follow it). Opened once,
//! the device yields the whole ring buffer first, then new records as they
//! come; EPIPE says records were overwritten before they were read. Only
//! the last `cap` bytes of formatted lines are kept in memory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Reads per poll, so a flooding kernel cannot keep rewindd in the loop.
const MAX_READS: usize = 20_000;

pub struct KmsgTail {
    file: File,
    lines: VecDeque<String>,
    bytes: u64,
    cap: u64,
    /// A line not yet ended by a newline (a plain file as the source).
    partial: Vec<u8>,
}

impl KmsgTail {
    pub fn open(path: &Path, cap: u64) -> std::io::Result<KmsgTail> {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
        Ok(KmsgTail { file, lines: VecDeque::new(), bytes: 0, cap, partial: Vec::new() })
    }

    /// Reads what is new; true when a line was added.
    pub fn read_new(&mut self) -> std::io::Result<bool> {
        let mut buf = vec![0u8; 8192];
        let mut added = false;
        for _ in 0..MAX_READS {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
                        let raw: Vec<u8> = self.partial.drain(..=nl).collect();
                        if let Some(line) = format_record(&String::from_utf8_lossy(&raw[..raw.len() - 1])) {
                            self.push(line);
                            added = true;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    self.push("[rewindd: kernel log records were overwritten before they were read]".into());
                    added = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(added)
    }

    fn push(&mut self, line: String) {
        let len = line.len() as u64 + 1;
        self.lines.push_back(line);
        self.bytes += len;
        while self.bytes > self.cap {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.len() as u64 + 1,
                None => break,
            }
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes as usize);
        for l in &self.lines {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

/// The kernel's own lines about snapshots in this boot's log (dm-snapshot's
/// `device-mapper: snapshots: ...`, `device-mapper: persistent snapshot:
/// ...`, a refused `snapshot-merge` table), the last `max` of them: what a
/// report quotes when a snapshot went `Invalid` or a merge failed, since
/// the status word alone does not say why. Empty when the log cannot be
/// read (no /dev/kmsg, no permission): the report then has the word only.
pub fn snapshot_lines(path: &Path, max: usize) -> Vec<String> {
    let Ok(mut tail) = KmsgTail::open(path, 256 << 10) else { return Vec::new() };
    if tail.read_new().is_err() {
        return Vec::new();
    }
    let mut found: Vec<String> = tail
        .lines
        .iter()
        .filter(|l| l.contains("device-mapper") && l.contains("snapshot"))
        .map(|l| match l.split_once("] ") {
            // The timestamp says nothing to a reader of the history.
            Some((stamp, text)) if stamp.starts_with('[') => text.to_string(),
            _ => l.clone(),
        })
        .collect();
    found.dedup();
    let skip = found.len().saturating_sub(max);
    found.split_off(skip)
}

/// "6,339,5140900,-;text" → "[    5.140900] text"; continuation lines
/// (leading space) are dropped; anything else is kept as it is.
pub fn format_record(line: &str) -> Option<String> {
    if line.starts_with(' ') {
        return None;
    }
    let Some((head, text)) = line.split_once(';') else { return Some(line.to_string()) };
    let fields: Vec<&str> = head.split(',').collect();
    match fields.get(2).and_then(|u| u.parse::<u64>().ok()) {
        Some(usec) if fields.len() >= 3 => Some(format!("[{:5}.{:06}] {text}", usec / 1_000_000, usec % 1_000_000)),
        _ => Some(line.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn snapshot_lines_are_the_kernels_last_words_on_snapshots() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kmsg");
        std::fs::write(
            &path,
            "3,1,100,-;device-mapper: snapshots: Invalidating snapshot: Error reading/writing.\n\
             6,2,200,-;ext4: mounted\n\
             4,3,300,-;device-mapper: persistent snapshot: write header failed\n\
             3,4,400,-;device-mapper: snapshots: Write error in exception store: shutting down merge\n",
        )
        .expect("write");
        assert_eq!(
            snapshot_lines(&path, 2),
            vec![
                "device-mapper: persistent snapshot: write header failed".to_string(),
                "device-mapper: snapshots: Write error in exception store: shutting down merge".to_string(),
            ]
        );
        assert_eq!(snapshot_lines(&path, 9).len(), 3);
        assert!(snapshot_lines(&dir.path().join("none"), 3).is_empty());
    }

    #[test]
    fn records_are_formatted_and_the_tail_is_bounded() {
        assert_eq!(format_record("6,339,5140900,-;ext4: mounted").as_deref(), Some("[    5.140900] ext4: mounted"));
        assert_eq!(format_record(" SUBSYSTEM=block"), None);
        assert_eq!(format_record("plain line").as_deref(), Some("plain line"));

        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kmsg");
        let mut f = std::fs::File::create(&path).expect("create");
        for i in 0..100 {
            writeln!(f, "6,{i},{},-;line {i:03}", i * 1000).expect("write");
        }
        let mut tail = KmsgTail::open(&path, 200).expect("open");
        assert!(tail.read_new().expect("read"));
        let text = String::from_utf8(tail.contents()).expect("utf8");
        assert!(text.len() <= 200, "{}", text.len());
        assert!(text.ends_with("line 099\n"), "{text}");
        assert!(!text.contains("line 000"), "the oldest lines went first");
        // Nothing new: nothing added; a new record shows.
        assert!(!tail.read_new().expect("read"));
        writeln!(f, "6,100,100000,-;line 100").expect("write");
        assert!(tail.read_new().expect("read"));
        assert!(String::from_utf8(tail.contents()).expect("utf8").ends_with("line 100\n"));
    }
}
