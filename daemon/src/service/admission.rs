//! Who gets a connection, and for how long it may sit idle.
//!
//! rewindd's socket is open to any local caller who may reach it (queries
//! are harmless), but connections cost a file descriptor and memory each.
//! Without a limit, one unprivileged process holding a thousand idle
//! connections exhausts rewindd's descriptors, and init's own
//! `prepare-userdata` then cannot connect: the boot waits on a caller who
//! has no right to stop it. So callers are admitted in two pools by peer
//! uid: the trusted (`allowed_uids`, the ones that may change state) and
//! everyone else, each with its own cap, so the others can fill only
//! theirs. A connection with no bytes either way for [`IDLE_TIMEOUT`] is
//! closed, which also ends clients that stall halfway through a preface.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// Open connections from trusted callers (init, vold, the shell as root).
pub const MAX_TRUSTED_CONNECTIONS: usize = 64;
/// Open connections from every other caller together.
pub const MAX_OTHER_CONNECTIONS: usize = 16;
/// No byte read or written for this long closes the connection. Longer
/// than any call keeps a connection silent: the long ones (prepare,
/// restore, watch) stream progress, and the slowest unary call (creating
/// the COW files) takes seconds.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Admission {
    allowed_uids: Arc<Vec<u32>>,
    trusted: Arc<Semaphore>,
    others: Arc<Semaphore>,
    idle: Duration,
}

/// Why a connection was turned away, for the (rate-limited) log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TrustedFull,
    OthersFull,
}

impl Admission {
    pub fn new(allowed_uids: Vec<u32>) -> Admission {
        Admission::with_limits(allowed_uids, MAX_TRUSTED_CONNECTIONS, MAX_OTHER_CONNECTIONS, IDLE_TIMEOUT)
    }

    pub fn with_limits(allowed_uids: Vec<u32>, trusted: usize, others: usize, idle: Duration) -> Admission {
        Admission {
            allowed_uids: Arc::new(allowed_uids),
            trusted: Arc::new(Semaphore::new(trusted)),
            others: Arc::new(Semaphore::new(others)),
            idle,
        }
    }

    /// A permit for a caller with this uid (None: no credentials, an
    /// "other"), or why not. The permit lives as long as the connection.
    pub fn admit<S>(&self, stream: S, uid: Option<u32>) -> Result<Admitted<S>, Refused> {
        let trusted = uid.is_some_and(|u| self.allowed_uids.contains(&u));
        let (pool, refused) =
            if trusted { (&self.trusted, Refused::TrustedFull) } else { (&self.others, Refused::OthersFull) };
        let permit = Arc::clone(pool).try_acquire_owned().map_err(|_| refused)?;
        Ok(Admitted::new(stream, permit, self.idle))
    }
}

/// An admitted connection: holds its pool permit and closes itself when
/// idle. Everything else passes through.
pub struct Admitted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Admitted<S> {
    fn new(inner: S, permit: OwnedSemaphorePermit, idle: Duration) -> Admitted<S> {
        Admitted { inner, _permit: permit, idle, deadline: Box::pin(tokio::time::sleep(idle)) }
    }

    fn touched(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Called when the inner I/O is pending: Ready(error) once idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection idle for {} s, closed", self.idle.as_secs()),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.touched();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touched();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Admitted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn each_pool_has_its_own_cap_and_permits_return_on_close() {
        let a = Admission::with_limits(vec![0], 2, 1, IDLE_TIMEOUT);
        let other1 = a.admit((), Some(2000)).expect("first other");
        assert_eq!(a.admit((), Some(2000)).err(), Some(Refused::OthersFull));
        assert_eq!(a.admit((), None).err(), Some(Refused::OthersFull), "no credentials = other");
        // The others being full does not keep a trusted caller out.
        let t1 = a.admit((), Some(0)).expect("trusted");
        let _t2 = a.admit((), Some(0)).expect("trusted");
        assert_eq!(a.admit((), Some(0)).err(), Some(Refused::TrustedFull));
        drop(other1);
        drop(t1);
        assert!(a.admit((), Some(2000)).is_ok() && a.admit((), Some(0)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_closed_after_the_idle_timeout_and_traffic_keeps_it_open() {
        let a = Admission::with_limits(vec![0], 1, 1, Duration::from_secs(10));
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut conn = a.admit(ours, Some(0)).expect("admitted");
        let mut buf = [0u8; 4];
        // Traffic every 6 s: never idle for 10.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            theirs.write_all(b"ping").await.unwrap();
            conn.read_exact(&mut buf).await.expect("still open");
        }
        let e = conn.read(&mut buf).await.expect_err("closed when idle");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
