//! Where rewindd listens: the Unix socket init hands over
//! (`ANDROID_SOCKET_rewindd`), a socket file it binds itself (`--socket`),
//! and optionally TCP (`--listen-tcp`, test guests only).

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The variable init sets for a `socket rewindd stream ...` line in the .rc.
pub const INIT_SOCKET_ENV: &str = "ANDROID_SOCKET_rewindd";

/// Backlog for listen(2): a handful of boot-time clients at most.
const BACKLOG: libc::c_int = 16;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{INIT_SOCKET_ENV}={value:?} is not a file descriptor number")]
    BadFdVar { value: String },
    #[error("fd {fd} from {INIT_SOCKET_ENV} is not usable")]
    FdStat {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("fd {fd} from {INIT_SOCKET_ENV} is not a Unix stream socket ({what})")]
    NotAStreamSocket { fd: RawFd, what: String },
    #[error("Cannot set up the socket from {INIT_SOCKET_ENV} (fd {fd})")]
    Adopt {
        fd: RawFd,
        #[source]
        source: std::io::Error,
    },
    #[error("Another rewindd answers on {path}; refusing to take its socket over")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to remove it")]
    NotASocketFile { path: PathBuf },
    #[error("Cannot remove the stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot bind the Unix socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Cannot listen on TCP {addr}")]
    TcpBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The fd number init passed, if any.
pub fn init_socket_fd() -> Result<Option<RawFd>, TransportError> {
    match std::env::var(INIT_SOCKET_ENV) {
        Err(_) => Ok(None),
        Ok(value) => match value.trim().parse::<RawFd>() {
            Ok(fd) if fd >= 0 => Ok(Some(fd)),
            _ => Err(TransportError::BadFdVar { value }),
        },
    }
}

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of a c_int; the fd is only
    // queried.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Takes over init's socket. Checks first that the number names an open
/// Unix stream socket: from_raw_fd on anything else would hand a random fd
/// (or a closed one, later reused) to the server.
pub fn adopt_init_socket(fd: RawFd) -> Result<tokio::net::UnixListener, TransportError> {
    // SAFETY: fstat only writes into `st`; a bad fd gives EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(TransportError::FdStat { fd, source: std::io::Error::last_os_error() });
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(TransportError::NotAStreamSocket { fd, what: format!("file mode {:#o}", st.st_mode) });
    }
    let domain = sockopt_int(fd, libc::SO_DOMAIN).map_err(|source| TransportError::FdStat { fd, source })?;
    let kind = sockopt_int(fd, libc::SO_TYPE).map_err(|source| TransportError::FdStat { fd, source })?;
    if domain != libc::AF_UNIX || kind != libc::SOCK_STREAM {
        return Err(TransportError::NotAStreamSocket { fd, what: format!("domain {domain}, type {kind}") });
    }
    // init binds the socket but leaves listen(2) to the daemon. The fd
    // must not leak into the commands the engine runs (reboot, commit).
    // SAFETY: plain syscalls on a checked socket fd.
    unsafe {
        if libc::listen(fd, BACKLOG) != 0 || libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            return Err(TransportError::Adopt { fd, source: std::io::Error::last_os_error() });
        }
    }
    // SAFETY: checked above to be an open AF_UNIX stream socket; from here
    // the listener owns it (init keeps no use for it).
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    std_listener.set_nonblocking(true).map_err(|source| TransportError::Adopt { fd, source })?;
    tokio::net::UnixListener::from_std(std_listener).map_err(|source| TransportError::Adopt { fd, source })
}

/// A socket file rewindd created: removed on drop, unless another process
/// has replaced it since (then it is that one's).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("cannot remove socket {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// Binds `path`, first removing a stale socket file left by a dead daemon.
/// Refuses when a live server answers there or the path is not a socket.
pub fn bind_unix(path: &Path, mode: u32) -> Result<(tokio::net::UnixListener, SocketFile), TransportError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(TransportError::NotASocketFile { path: path.to_path_buf() });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(TransportError::InUse { path: path.to_path_buf() });
        }
        // Nobody accepts: the file is left over from a daemon that died.
        tracing::info!("removing stale socket {}", path.display());
        std::fs::remove_file(path)
            .map_err(|source| TransportError::RemoveStale { path: path.to_path_buf(), source })?;
    }
    let bind_err = |source| TransportError::Bind { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(bind_err)?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?;
    let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
    let file = SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let listener = tokio::net::UnixListener::from_std(std_listener).map_err(bind_err)?;
    Ok((listener, file))
}

pub async fn bind_tcp(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, TransportError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| TransportError::TcpBind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rewindd");
        let (listener, file) = bind_unix(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: something answers (the kernel accepts into the backlog).
        assert!(matches!(bind_unix(&path, 0o666), Err(TransportError::InUse { .. })));
        // Dead daemon: listener closed, file left behind.
        drop(listener);
        std::mem::forget(file);
        let (_listener, file) = bind_unix(&path, 0o666).expect("stale socket replaced");
        drop(file);
        assert!(!path.exists(), "socket file removed on drop");
    }

    #[test]
    fn regular_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rewindd");
        std::fs::write(&path, "data").unwrap();
        assert!(matches!(bind_unix(&path, 0o666), Err(TransportError::NotASocketFile { .. })));
        assert!(path.exists());
    }

    #[tokio::test]
    async fn init_socket_is_checked_before_adoption() {
        let file = tempfile::tempfile().unwrap();
        use std::os::fd::AsRawFd;
        assert!(matches!(adopt_init_socket(file.as_raw_fd()), Err(TransportError::NotAStreamSocket { .. })));
        assert!(matches!(adopt_init_socket(987_654), Err(TransportError::FdStat { .. })));
        // A bound, not yet listening AF_UNIX socket, as init leaves it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        use std::os::fd::IntoRawFd;
        let fd = std_listener.into_raw_fd();
        let listener = adopt_init_socket(fd).expect("adopted");
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, _) = tokio::join!(listener.accept(), client);
        accepted.unwrap();
    }
}
