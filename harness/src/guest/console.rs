//! Follows a boot's serial console log as QEMU writes it and picks out the
//! guest init's markers (`@@REWIND-<KIND> <text>@@`, anywhere in a line:
//! the first line can start with terminal escape codes).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Stage(String),
    Error(String),
    Other { kind: String, text: String },
}

/// Markers in one console line.
pub fn parse_markers(line: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("@@REWIND-") {
        let after = &rest[start + "@@REWIND-".len()..];
        let Some(end) = after.find("@@") else { break };
        let body = &after[..end];
        let (kind, text) = body.split_once(' ').unwrap_or((body, ""));
        out.push(match kind {
            "STAGE" => Marker::Stage(text.trim().to_string()),
            "ERROR" => Marker::Error(text.trim().to_string()),
            _ => Marker::Other { kind: kind.to_string(), text: text.to_string() },
        });
        rest = &after[end + 2..];
    }
    out
}

#[derive(Debug)]
pub struct ConsoleTail {
    pub path: PathBuf,
    offset: u64,
    partial: String,
    text: String,
}

impl ConsoleTail {
    pub fn new(path: PathBuf) -> Self {
        ConsoleTail { path, offset: 0, partial: String::new(), text: String::new() }
    }

    /// Reads what was appended since the last call; returns the markers of
    /// the complete lines.
    pub fn poll(&mut self) -> Vec<Marker> {
        let Ok(mut f) = File::open(&self.path) else {
            return Vec::new();
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() || buf.is_empty() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        let chunk = String::from_utf8_lossy(&buf);
        self.text.push_str(&chunk);
        self.partial.push_str(&chunk);
        let mut markers = Vec::new();
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            markers.extend(parse_markers(&line));
        }
        markers
    }

    /// Markers of a last line that has no newline (the guest died mid-line).
    pub fn flush(&mut self) -> Vec<Marker> {
        let mut m = self.poll();
        let rest = std::mem::take(&mut self.partial);
        m.extend(parse_markers(&rest));
        m
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A console log framed for a failure report (cloud-hypervisor style).
pub fn framed(title: &str, text: &str) -> String {
    format!("==== console {title} ====\n{}\n==== end console {title} ====\n", text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn markers_are_found_anywhere_in_a_line() {
        assert_eq!(
            parse_markers("\u{1b}[?7l\u{1b}[2J@@REWIND-STAGE modules-loaded@@\r\n"),
            vec![Marker::Stage("modules-loaded".into())]
        );
        assert_eq!(
            parse_markers("x @@REWIND-ERROR mount failed@@ y @@REWIND-STAGE ready@@"),
            vec![Marker::Error("mount failed".into()), Marker::Stage("ready".into())]
        );
        assert!(parse_markers("[    1.0] ext4: mounted").is_empty());
        assert!(parse_markers("@@REWIND-STAGE unterminated").is_empty());
    }

    #[test]
    fn tail_reads_incrementally_and_keeps_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut f = File::create(&p).unwrap();
        let mut tail = ConsoleTail::new(p.clone());
        assert!(tail.poll().is_empty());
        write!(f, "boot\n@@REWIND-STAGE host-mou").unwrap();
        assert!(tail.poll().is_empty());
        write!(f, "nted@@\n@@REWIND-STAGE ready@@").unwrap();
        assert_eq!(tail.poll(), vec![Marker::Stage("host-mounted".into())]);
        assert_eq!(tail.flush(), vec![Marker::Stage("ready".into())]);
        assert!(tail.text().starts_with("boot\n"));
    }
}
