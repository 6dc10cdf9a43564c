//! `rewindctl evidence <attempt>` and the evidence part of `history`: what
//! was kept of failed attempts, listed for people and extracted to a
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use rewind_proto::v1 as pb;
use rewind_proto::v1::checkpoint_client::CheckpointClient;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::{exit, human_bytes, iso_time, ClientError};
use crate::evidence::names::is_stored_name;

pub fn attempt_json(a: &pb::AttemptEvidence) -> Value {
    json!({
        "attempt": a.attempt,
        "dir": a.dir,
        "boot_reason": a.boot_reason,
        "bytes": a.files.iter().map(|f| f.bytes).sum::<u64>(),
        "files": a.files.iter().map(|f| json!({
            "name": f.name,
            "source": f.source,
            "bytes": f.bytes,
            "truncated": f.truncated,
            "copied": iso_time(f.copied_unix),
        })).collect::<Vec<_>>(),
        "dropped": a.dropped,
    })
}

/// The lines `rewindctl history` adds: one per attempt with evidence.
pub fn kept_summary(kept: &[pb::AttemptEvidence]) -> String {
    if kept.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nevidence kept (rewindctl evidence <attempt>):\n");
    for a in kept {
        let bytes: u64 = a.files.iter().map(|f| f.bytes).sum();
        let reason = if a.boot_reason.is_empty() { "-".to_string() } else { a.boot_reason.clone() };
        let names: Vec<&str> = a.files.iter().map(|f| f.name.as_str()).collect();
        out.push_str(&format!(
            "  attempt {}: {} files, {}, boot reason {}: {}\n",
            a.attempt,
            a.files.len(),
            human_bytes(bytes),
            reason,
            names.join(", ")
        ));
        if !a.dropped.is_empty() {
            out.push_str(&format!("    {} not kept (see rewindctl evidence {})\n", a.dropped.len(), a.attempt));
        }
    }
    out
}

fn listing(a: &pb::AttemptEvidence) -> String {
    let mut out = format!("attempt {} ({})\n", a.attempt, a.dir);
    out.push_str(&format!(
        "boot reason: {}\n\n",
        if a.boot_reason.is_empty() { "not known yet (the next boot records it)" } else { &a.boot_reason }
    ));
    if a.files.is_empty() {
        out.push_str("no files kept\n");
    }
    let width = a.files.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
    if !a.files.is_empty() {
        out.push_str(&format!("{:<width$}  {:>9}  SOURCE\n", "NAME", "BYTES"));
    }
    for f in &a.files {
        out.push_str(&format!(
            "{:<width$}  {:>9}  {}{}\n",
            f.name,
            f.bytes,
            f.source,
            if f.truncated { " (tail only)" } else { "" }
        ));
    }
    for d in &a.dropped {
        out.push_str(&format!("not kept: {d}\n"));
    }
    out
}

async fn read_file(
    client: &mut CheckpointClient<Channel>,
    attempt: u32,
    name: &str,
    previous: bool,
    out: &mut dyn Write,
) -> Result<u64, ClientError> {
    let mut stream = client
        .read_evidence(pb::ReadEvidenceRequest { attempt, name: name.to_string(), previous })
        .await
        .map_err(|s| ClientError::rpc("ReadEvidence", s))?
        .into_inner();
    let mut total = 0u64;
    while let Some(chunk) = stream.message().await.map_err(|s| ClientError::rpc("ReadEvidence", s))? {
        out.write_all(&chunk.data).map_err(ClientError::Local)?;
        total += chunk.data.len() as u64;
    }
    Ok(total)
}

/// Where a kept file goes under `dir`; a name the server could not have
/// made (a path climbing out of `dir`) is refused.
fn target_path(dir: &Path, name: &str) -> Result<PathBuf, ClientError> {
    if !is_stored_name(name) {
        return Err(ClientError::Local(std::io::Error::other(format!(
            "rewindd named a kept file {name:?}, which is not a plain relative name; not writing it"
        ))));
    }
    Ok(dir.join(name))
}

pub async fn run(
    client: &mut CheckpointClient<Channel>,
    attempt: u32,
    previous: bool,
    extract: Option<PathBuf>,
    file: Option<String>,
    json: bool,
) -> Result<i32, ClientError> {
    let kept = client
        .get_evidence(pb::GetEvidenceRequest { attempt, previous })
        .await
        .map_err(|s| ClientError::rpc("GetEvidence", s))?
        .into_inner();
    let Some(dir) = extract else {
        if json {
            println!("{}", serde_json::to_string_pretty(&attempt_json(&kept)).unwrap_or_default());
        } else {
            print!("{}", listing(&kept));
        }
        return Ok(exit::OK);
    };
    if dir.as_os_str() == "-" {
        let Some(name) = file else {
            return Err(ClientError::Local(std::io::Error::other(
                "--extract - needs --file NAME (one file to stdout)",
            )));
        };
        let mut stdout = std::io::stdout().lock();
        read_file(client, attempt, &name, previous, &mut stdout).await?;
        return Ok(exit::OK);
    }
    let names: Vec<String> = match file {
        Some(n) => vec![n],
        None => kept.files.iter().map(|f| f.name.clone()).collect(),
    };
    let mut bytes = 0u64;
    for name in &names {
        let path = target_path(&dir, name)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ClientError::Local)?;
        }
        let mut f = std::fs::File::create(&path).map_err(ClientError::Local)?;
        bytes += read_file(client, attempt, name, previous, &mut f).await?;
    }
    println!("extracted {} files ({}) of attempt {attempt} to {}", names.len(), human_bytes(bytes), dir.display());
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::AttemptEvidence {
        pb::AttemptEvidence {
            attempt: 2,
            dir: "/metadata/rewind/attempts/2".into(),
            files: vec![
                pb::EvidenceFile {
                    name: "data/tombstones/tombstone_00".into(),
                    source: "/data/tombstones/tombstone_00".into(),
                    bytes: 2048,
                    truncated: false,
                    copied_unix: 1_795_477_846,
                },
                pb::EvidenceFile {
                    name: "kmsg.tail".into(),
                    source: "/dev/kmsg".into(),
                    bytes: 1024,
                    truncated: false,
                    copied_unix: 1_795_477_850,
                },
            ],
            boot_reason: "kernel_panic".into(),
            dropped: vec!["data/anr/big (5000 bytes) not kept: over evidence.max_total_bytes (5000)".into()],
        }
    }

    #[test]
    fn history_names_what_was_kept() {
        let s = kept_summary(&[sample()]);
        assert!(s.contains("attempt 2: 2 files, 3.0 KiB, boot reason kernel_panic"), "{s}");
        assert!(s.contains("data/tombstones/tombstone_00, kmsg.tail"), "{s}");
        assert!(s.contains("1 not kept"), "{s}");
        assert_eq!(kept_summary(&[]), "");
        let l = listing(&sample());
        assert!(l.contains("boot reason: kernel_panic") && l.contains("not kept: data/anr/big"), "{l}");
        assert_eq!(attempt_json(&sample())["bytes"], 3072);
    }

    #[test]
    fn extraction_never_writes_outside_its_directory() {
        let dir = Path::new("/tmp/x");
        assert_eq!(target_path(dir, "data/anr/t").expect("ok"), Path::new("/tmp/x/data/anr/t"));
        for bad in ["../../etc/passwd", "/etc/passwd", "a/../../b", ""] {
            assert!(target_path(dir, bad).is_err(), "{bad}");
        }
    }
}
