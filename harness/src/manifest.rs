//! A manifest of every file under a directory (path, type, mode, owner,
//! size, sha256, symlink target, xattrs, hard-link grouping), taken in the
//! guest by the static `rewind-manifest` binary and compared on the host.
//! It is the witness that does not trust rewindd: same manifest before the
//! checkpoint and after the rollback means userdata came back.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Reading {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("Parsing a manifest")]
    Parse(#[from] serde_json::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the root; "." is the root itself.
    pub path: String,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only (directory sizes depend on history, not content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// name -> hex value
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// For files with more than one link: the smallest path of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub root: String,
    pub entries: Vec<Entry>,
}

impl Manifest {
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        Ok(serde_json::from_str(text)?)
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.as_str().cmp(path)).ok().map(|i| &self.entries[i])
    }

    pub fn files(&self) -> usize {
        self.entries.iter().filter(|e| e.kind == Kind::File).count()
    }

    /// Entries minus those at or under any of `prefixes`.
    pub fn without(&self, prefixes: &[&str]) -> Manifest {
        Manifest {
            root: self.root.clone(),
            entries: self
                .entries
                .iter()
                .filter(|e| !prefixes.iter().any(|p| e.path == *p || e.path.starts_with(&format!("{p}/"))))
                .cloned()
                .collect(),
        }
    }
}

fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    // SAFETY: size query with a null buffer, then a buffer of that size.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len <= 0 {
        return out;
    }
    let mut names = vec![0u8; len as usize];
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len <= 0 {
        return out;
    }
    for name in names[..len as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else { continue };
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            continue;
        }
        let mut value = vec![0u8; vlen as usize];
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if vlen < 0 {
            continue;
        }
        value.truncate(vlen as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), hex::encode(value));
    }
    out
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Hashes files with the system's `sha256sum` (busybox in the guest), many
/// per process. Why: under TCG the C implementation is an order of
/// magnitude faster than this debug-built binary's. Files it does not
/// answer for (odd names, a missing tool) are hashed in-process by the
/// caller, so the result never depends on the tool being there.
fn sha256sum_batch<'a>(paths: &[&'a Path]) -> HashMap<&'a Path, String> {
    let mut out = HashMap::new();
    let plain: Vec<&Path> = paths
        .iter()
        .copied()
        .filter(|p| p.to_str().is_some_and(|s| !s.contains(['\n', '\\']) && !s.starts_with('-')))
        .collect();
    for chunk in plain.chunks(128) {
        let Ok(o) = std::process::Command::new("sha256sum").args(chunk).output() else {
            return out;
        };
        let text = String::from_utf8_lossy(&o.stdout);
        for line in text.lines() {
            let Some((sum, name)) = line.split_once("  ") else { continue };
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if let Some(p) = chunk.iter().find(|p| p.to_str() == Some(name)) {
                out.insert(*p, sum.to_ascii_lowercase());
            }
        }
    }
    out
}

/// Walks `root` (one filesystem, symlinks not followed).
pub fn scan(root: &Path) -> Result<Manifest, ManifestError> {
    scan_excluding(root, &[])
}

/// Like `scan`, but never enters the `exclude` subtrees (relative paths):
/// their contents may change under the walk (rewindd deleting its COW
/// files), and they are not part of what is compared anyway.
pub fn scan_excluding(root: &Path, exclude: &[&str]) -> Result<Manifest, ManifestError> {
    let read_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| ManifestError::Read { path, source }
    };
    let root_meta = std::fs::symlink_metadata(root).map_err(read_err(root))?;
    let mut entries = Vec::new();
    let mut inodes: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let mut to_hash: Vec<(std::path::PathBuf, usize)> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), ".".to_string())];
    while let Some((abs, rel)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&abs).map_err(read_err(&abs))?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else {
            Kind::File
        };
        let mut e = Entry {
            path: rel.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: None,
            sha256: None,
            target: None,
            xattrs: xattrs(&abs),
            link_group: None,
            rdev: None,
        };
        match kind {
            Kind::File => {
                e.size = Some(meta.len());
                to_hash.push((abs.clone(), entries.len()));
                if meta.nlink() > 1 {
                    inodes.entry((meta.dev(), meta.ino())).or_default().push(entries.len());
                }
            }
            Kind::Symlink => {
                let t = std::fs::read_link(&abs).map_err(read_err(&abs))?;
                e.target = Some(t.to_string_lossy().into_owned());
            }
            Kind::CharDev | Kind::BlockDev => e.rdev = Some(meta.rdev()),
            // Stay on this filesystem (like find -xdev).
            Kind::Dir if meta.dev() == root_meta.dev() => {
                for child in std::fs::read_dir(&abs).map_err(read_err(&abs))? {
                    let child = child.map_err(read_err(&abs))?;
                    let name = child.file_name().to_string_lossy().into_owned();
                    let child_rel = if rel == "." { name } else { format!("{rel}/{name}") };
                    if !exclude.contains(&child_rel.as_str()) {
                        stack.push((child.path(), child_rel));
                    }
                }
            }
            _ => {}
        }
        entries.push(e);
    }
    let paths: Vec<&Path> = to_hash.iter().map(|(p, _)| p.as_path()).collect();
    let mut sums = sha256sum_batch(&paths);
    for (abs, i) in &to_hash {
        let sum = match sums.remove(abs.as_path()) {
            Some(sum) => sum,
            None => sha256_file(abs).map_err(read_err(abs))?,
        };
        entries[*i].sha256 = Some(sum);
    }
    for group in inodes.values() {
        if let Some(first) = group.iter().map(|i| entries[*i].path.clone()).min() {
            for i in group {
                entries[*i].link_group = Some(first.clone());
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest { root: root.display().to_string(), entries })
}

/// One changed path and what changed about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    /// "type", "content", "target", "xattrs", "links", "mode", "owner", "rdev"
    pub what: Vec<&'static str>,
}

/// Differences from `before` to `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Content, type, symlink target, xattrs or hard-link changes.
    pub changed: Vec<Change>,
    /// Mode or owner changes (a path may also be in `changed`).
    pub chmodded: Vec<Change>,
}

impl ManifestDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty() && self.chmodded.is_empty()
    }

    pub fn changed_paths(&self) -> Vec<&str> {
        self.changed.iter().map(|c| c.path.as_str()).collect()
    }

    pub fn chmodded_paths(&self) -> Vec<&str> {
        self.chmodded.iter().map(|c| c.path.as_str()).collect()
    }

    /// "N added, N removed, N changed, N chmod-ed": the size of a change
    /// without its paths.
    pub fn counts(&self) -> String {
        format!(
            "{} added, {} removed, {} changed, {} chmod-ed",
            self.added.len(),
            self.removed.len(),
            self.changed.len(),
            self.chmodded.len()
        )
    }

    /// A short human summary, with up to `max` paths per list.
    pub fn summary(&self, max: usize) -> String {
        if self.is_empty() {
            return "identical".into();
        }
        let list = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(max).collect::<Vec<_>>().join(", ");
            if n > max {
                s += &format!(", ... ({n} in all)");
            }
            s
        };
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!("added: {}", list(self.added.clone())));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed: {}", list(self.removed.clone())));
        }
        let fmt = |c: &Vec<Change>| c.iter().map(|c| format!("{} ({})", c.path, c.what.join("+"))).collect();
        if !self.changed.is_empty() {
            parts.push(format!("changed: {}", list(fmt(&self.changed))));
        }
        if !self.chmodded.is_empty() {
            parts.push(format!("chmod/chown: {}", list(fmt(&self.chmodded))));
        }
        parts.join("; ")
    }
}

pub fn diff(before: &Manifest, after: &Manifest) -> ManifestDiff {
    let b: BTreeMap<&str, &Entry> = before.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let a: BTreeMap<&str, &Entry> = after.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut d = ManifestDiff::default();
    for (path, old) in &b {
        let Some(new) = a.get(path) else {
            d.removed.push(path.to_string());
            continue;
        };
        let mut what = Vec::new();
        if old.kind != new.kind {
            what.push("type");
        }
        if old.sha256 != new.sha256 || old.size != new.size {
            what.push("content");
        }
        if old.target != new.target {
            what.push("target");
        }
        if old.xattrs != new.xattrs {
            what.push("xattrs");
        }
        if old.link_group != new.link_group {
            what.push("links");
        }
        if old.rdev != new.rdev {
            what.push("rdev");
        }
        if !what.is_empty() {
            d.changed.push(Change { path: path.to_string(), what });
        }
        let mut meta = Vec::new();
        if old.mode != new.mode {
            meta.push("mode");
        }
        if old.uid != new.uid || old.gid != new.gid {
            meta.push("owner");
        }
        if !meta.is_empty() {
            d.chmodded.push(Change { path: path.to_string(), what: meta });
        }
    }
    for path in a.keys() {
        if !b.contains_key(path) {
            d.added.push(path.to_string());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/file"), b"one").unwrap();
        std::fs::write(r.join("a/b/keep"), b"same").unwrap();
        std::fs::write(r.join("gone"), b"bye").unwrap();
        std::fs::write(r.join("mode"), b"m").unwrap();
        std::os::unix::fs::symlink("a/file", r.join("link")).unwrap();
        std::fs::hard_link(r.join("a/file"), r.join("hard")).unwrap();
        dir
    }

    #[test]
    fn scan_records_types_links_and_hashes() {
        let dir = tree();
        let m = scan(dir.path()).unwrap();
        assert_eq!(m.entries[0].path, ".");
        let link = m.get("link").unwrap();
        assert_eq!(link.kind, Kind::Symlink);
        assert_eq!(link.target.as_deref(), Some("a/file"));
        let f = m.get("a/file").unwrap();
        assert_eq!(f.size, Some(3));
        assert_eq!(f.sha256.as_deref(), Some("7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"));
        assert_eq!(f.link_group.as_deref(), Some("a/file"));
        assert_eq!(m.get("hard").unwrap().link_group.as_deref(), Some("a/file"));
        assert_eq!(m.get("a").unwrap().kind, Kind::Dir);
        let round = Manifest::from_json(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(round, m);
    }

    #[test]
    fn diff_lists_changed_added_removed_chmodded() {
        let dir = tree();
        let r = dir.path();
        let before = scan(r).unwrap();
        assert!(diff(&before, &scan(r).unwrap()).is_empty(), "a rescan is identical");
        std::fs::write(r.join("a/file"), b"two").unwrap();
        std::fs::write(r.join("new"), b"hi").unwrap();
        std::fs::remove_file(r.join("gone")).unwrap();
        std::fs::set_permissions(r.join("mode"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(r.join("link")).unwrap();
        std::os::unix::fs::symlink("elsewhere", r.join("link")).unwrap();
        let d = diff(&before, &scan(r).unwrap());
        assert_eq!(d.added, vec!["new"]);
        assert_eq!(d.removed, vec!["gone"]);
        // "." changed mtime only, which is not recorded.
        assert_eq!(d.changed_paths(), vec!["a/file", "hard", "link"]);
        assert_eq!(d.changed[0].what, vec!["content"]);
        assert_eq!(d.changed[2].what, vec!["target"]);
        assert_eq!(d.chmodded_paths(), vec!["mode"]);
        assert!(d.summary(3).contains("removed: gone"));
        assert_eq!(d.counts(), "1 added, 1 removed, 3 changed, 1 chmod-ed");
    }

    #[test]
    fn excluded_subtrees_are_not_entered() {
        let dir = tree();
        let m = scan_excluding(dir.path(), &["a"]).unwrap();
        assert!(m.get("a").is_none() && m.get("a/file").is_none());
        // "hard" shares a's inode: still a group of one path seen.
        assert!(m.get("hard").is_some());
    }

    #[test]
    fn without_drops_a_subtree() {
        let dir = tree();
        let m = scan(dir.path()).unwrap().without(&["a"]);
        assert!(m.get("a").is_none() && m.get("a/b/keep").is_none());
        assert!(m.get("gone").is_some());
    }
}
