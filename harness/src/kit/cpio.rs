//! A tree of initramfs entries written as one newc archive. The kernel
//! accepts several archives concatenated, so the kit writes a cached "base"
//! archive and a cheap per-run "overlay" one; entries of a later archive
//! replace earlier ones.
//!
//! Entries are kept sorted so a parent directory always precedes its
//! children, and mtimes are zero so the same inputs give the same bytes
//! (the cache key then says everything).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cpio::newc::{self, ModeFileType};

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("Invalid archive path {0:?} (must be relative, no '..')")]
    InvalidPath(String),
    #[error("Cannot read {path} for the archive")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("File {path} is too large for a newc archive")]
    TooLarge { path: String },
    #[error("Cannot write the archive")]
    Write(#[source] io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, source: Source },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

/// An initramfs under construction: archive path ("usr/bin/foo") -> node.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() || trimmed.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(CpioError::InvalidPath(path.to_string()));
    }
    Ok(trimmed.to_string())
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<(), CpioError> {
        let path = normalize(path)?;
        // Parents first: the kernel does not create missing directories.
        let mut prefix = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for c in &components[..components.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            self.entries.entry(prefix.clone()).or_insert(Node::Dir { mode: 0o755 });
        }
        self.entries.insert(path, node);
        Ok(())
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        self.insert(path, Node::Dir { mode })
    }

    pub fn file_from_host(&mut self, path: &str, host: &Path, mode: u32) -> Result<(), CpioError> {
        self.insert(path, Node::File { mode, source: Source::Host(host.to_path_buf()) })
    }

    pub fn file_bytes(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Result<(), CpioError> {
        self.insert(path, Node::File { mode, source: Source::Bytes(bytes.into()) })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.insert(path, Node::Symlink { target: target.to_string() })
    }

    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<(), CpioError> {
        self.insert(path, Node::CharDev { mode, major, minor })
    }

    pub fn contains(&self, path: &str) -> bool {
        normalize(path).map(|p| self.entries.contains_key(&p)).unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in archive order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// Removes `path` when `pred` holds for its node.
    pub fn remove_if(&mut self, path: &str, pred: impl Fn(&Node) -> bool) {
        if let Ok(p) = normalize(path) {
            if self.entries.get(&p).is_some_and(pred) {
                self.entries.remove(&p);
            }
        }
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Writes the archive (with its trailer) to `out`.
    pub fn write_to<W: Write>(&self, mut out: W) -> Result<W, CpioError> {
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let b = newc::Builder::new(path).ino(ino as u32 + 1).uid(0).gid(0).mtime(0);
            out = match node {
                Node::Dir { mode } => {
                    let b = b.mode(mode & 0o7777).set_mode_file_type(ModeFileType::Directory).nlink(2);
                    b.write(out, 0).finish().map_err(CpioError::Write)?
                }
                Node::Symlink { target } => {
                    let b = b.mode(0o777).set_mode_file_type(ModeFileType::Symlink).nlink(1);
                    let mut w = b.write(out, target.len() as u32);
                    w.write_all(target.as_bytes()).map_err(CpioError::Write)?;
                    w.finish().map_err(CpioError::Write)?
                }
                Node::CharDev { mode, major, minor } => {
                    let b = b
                        .mode(mode & 0o7777)
                        .set_mode_file_type(ModeFileType::Char)
                        .rdev_major(*major)
                        .rdev_minor(*minor)
                        .nlink(1);
                    b.write(out, 0).finish().map_err(CpioError::Write)?
                }
                Node::File { mode, source } => {
                    let b = b.mode(mode & 0o7777).set_mode_file_type(ModeFileType::Regular).nlink(1);
                    match source {
                        Source::Bytes(bytes) => {
                            let len =
                                u32::try_from(bytes.len()).map_err(|_| CpioError::TooLarge { path: path.clone() })?;
                            let mut w = b.write(out, len);
                            w.write_all(bytes).map_err(CpioError::Write)?;
                            w.finish().map_err(CpioError::Write)?
                        }
                        Source::Host(host) => {
                            let read_err = |source| CpioError::ReadSource { path: host.clone(), source };
                            let mut f = File::open(host).map_err(read_err)?;
                            let len = f.metadata().map_err(read_err)?.len();
                            let len = u32::try_from(len).map_err(|_| CpioError::TooLarge { path: path.clone() })?;
                            let mut w = b.write(out, len);
                            let copied = io::copy(&mut f, &mut w).map_err(read_err)?;
                            if copied != u64::from(len) {
                                return Err(read_err(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "file changed size while archiving",
                                )));
                            }
                            w.finish().map_err(CpioError::Write)?
                        }
                    }
                }
            };
        }
        newc::trailer(out).map_err(CpioError::Write)
    }

    /// Writes the archive to a file (via a temp name, so a crash never
    /// leaves a truncated archive under the final name).
    pub fn write_file(&self, path: &Path) -> Result<(), CpioError> {
        let tmp = path.with_extension("tmp");
        let f = File::create(&tmp).map_err(CpioError::Write)?;
        let mut w = self.write_to(io::BufWriter::new(f))?;
        w.flush().map_err(CpioError::Write)?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(CpioError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        loop {
            let mut r = newc::Reader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let name = r.entry().name().to_string();
            let mode = r.entry().mode();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut r, &mut data).unwrap();
            out.push((name, mode, data));
            rest = r.finish().unwrap();
        }
        out
    }

    #[test]
    fn parents_precede_children_and_content_round_trips() {
        let mut a = Archive::new();
        a.file_bytes("/usr/bin/tool", b"hello".to_vec(), 0o755).unwrap();
        a.symlink("bin/sh", "/usr/bin/busybox").unwrap();
        a.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let bytes = a.write_to(Vec::new()).unwrap();
        let entries = read_all(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/sh", "dev", "dev/console", "usr", "usr/bin", "usr/bin/tool"]);
        let tool = entries.iter().find(|e| e.0 == "usr/bin/tool").unwrap();
        assert_eq!(tool.2, b"hello");
        assert_eq!(tool.1, 0o100755);
        let link = entries.iter().find(|e| e.0 == "bin/sh").unwrap();
        assert_eq!(link.2, b"/usr/bin/busybox");
        assert_eq!(link.1 & 0o170000, 0o120000);
        let dev = entries.iter().find(|e| e.0 == "dev/console").unwrap();
        assert_eq!(dev.1 & 0o170000, 0o020000);
    }

    #[test]
    fn output_is_deterministic_and_newc_aligned() {
        let mut a = Archive::new();
        a.file_bytes("a/b", b"xyz".to_vec(), 0o644).unwrap();
        a.dir("c", 0o700).unwrap();
        let one = a.write_to(Vec::new()).unwrap();
        let two = a.write_to(Vec::new()).unwrap();
        assert_eq!(one, two);
        assert!(one.starts_with(b"070701"));
        assert_eq!(one.len() % 4, 0, "newc archives are 4-byte aligned");
        assert!(one.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn rejects_escaping_paths() {
        let mut a = Archive::new();
        assert!(a.file_bytes("../etc/passwd", b"".to_vec(), 0o644).is_err());
        assert!(a.dir("/", 0o755).is_err());
        assert!(a.dir("a//b", 0o755).is_err());
    }

    #[test]
    fn host_files_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"from host").unwrap();
        let mut a = Archive::new();
        a.file_from_host("etc/f", &p, 0o600).unwrap();
        let entries = read_all(&a.write_to(Vec::new()).unwrap());
        assert_eq!(entries.last().unwrap().2, b"from host");
    }
}
