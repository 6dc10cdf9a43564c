//! The accepted connection, wrapped: reads go through [`ClientFrames`],
//! writes go straight to the socket. The connection info (peer uid) is the
//! socket's, so the caller check sees the same caller.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use super::frames::{ClientFrames, Replaced};

/// Octets read from the socket per read call.
const READ_CHUNK: usize = 16 * 1024;

/// A connection whose invalid `:authority` values reach h2 as `localhost`.
pub struct AuthorityNormaliser<S> {
    inner: S,
    frames: ClientFrames,
    /// Read from the socket, not yet rewritten (an incomplete frame).
    input: BytesMut,
    /// Rewritten, not yet handed to h2.
    output: BytesMut,
    eof: bool,
    /// Set after a rewrite error: every later read fails the same way.
    failed: Option<String>,
    /// Only the first replacement of a connection is logged.
    logged: bool,
}

impl<S> AuthorityNormaliser<S> {
    pub fn new(inner: S) -> AuthorityNormaliser<S> {
        AuthorityNormaliser {
            inner,
            frames: ClientFrames::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
            failed: None,
            logged: false,
        }
    }

    fn note(logged: &mut bool, replaced: Replaced) {
        if !*logged {
            *logged = true;
            tracing::debug!(
                "stream {}: :authority {:?} is not a valid URI authority (h2 would reset the stream); serving it as localhost",
                replaced.stream,
                String::from_utf8_lossy(&replaced.authority)
            );
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityNormaliser<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())));
            }
            if this.eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // A frame cut short stays unsent: h2 sees the connection
                // end, as it would have mid-frame.
                this.eof = true;
                continue;
            }
            this.input.extend_from_slice(read.filled());
            let logged = &mut this.logged;
            if let Err(e) = this.frames.process(&mut this.input, &mut this.output, &mut |r| Self::note(logged, r)) {
                let why = format!("closing the connection: {e}");
                tracing::warn!("gRPC connection: {why}");
                this.failed = Some(why);
                // What was rewritten before the error still goes to h2, so
                // it answers the requests that were complete.
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityNormaliser<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityNormaliser<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::super::frames::tests::{frame, DATA, SETTINGS};
    use super::super::frames::PREFACE;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADERS: u8 = 0x1;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;

    /// The real h2 server behind the normaliser, fed by a hand-written
    /// client whose HPACK encoder indexes (as grpc-core's does): ten
    /// requests on one connection, the bad authority literal once and
    /// indexed nine times, one request with a valid authority in between.
    /// h2 accepts every one with the right authority and the other headers
    /// and bodies intact, and answers each.
    #[tokio::test]
    async fn h2_accepts_every_request_of_a_client_that_sends_the_socket_path() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(AuthorityNormaliser::new(server_io)).await.expect("handshake");
            let mut seen = Vec::new();
            while let Some(accepted) = conn.accept().await {
                let (request, mut respond) = accepted.expect("h2 accepts the request");
                let authority = request.uri().authority().map(|a| a.to_string());
                let path = request.uri().path().to_string();
                let trace = request.headers().get("rewind-trace").map(|v| v.as_bytes().to_vec());
                let mut body = request.into_body();
                let mut data = Vec::new();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("body");
                    let _ = body.flow_control().release_capacity(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                seen.push((authority, path, trace, data));
                let response = http::Response::builder().status(200).body(()).unwrap();
                respond.send_response(response, true).expect("respond");
                if seen.len() == 11 {
                    break;
                }
            }
            // Let h2 write the last responses out.
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                std::future::poll_fn(|cx| conn.poll_closed(cx)),
            )
            .await;
            seen
        });

        let (mut reader, mut writer) = tokio::io::split(client_io);
        let drain = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = reader.read_to_end(&mut all).await;
            all
        });
        let mut client = super::super::testing::IndexingEncoder::new();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        let bad: &[u8] = b"tmp%2Fgrpcx%2Fr.sock";
        for i in 0..11u32 {
            let authority: &[u8] = if i == 5 { b"rewindd.local:1" } else { bad };
            let trace = format!("call-{i}");
            let headers: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/rewind.v1.Checkpoint/GetStatus"),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"rewind-trace", trace.as_bytes()),
            ];
            let stream = 1 + 2 * i;
            bytes.extend(frame(HEADERS, END_HEADERS, stream, &client.encode(&headers)));
            bytes.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, i as u8]));
        }
        // Written in odd pieces, as a socket may deliver them.
        for piece in bytes.chunks(33) {
            writer.write_all(piece).await.unwrap();
        }
        let seen = tokio::time::timeout(std::time::Duration::from_secs(10), server).await.expect("h2 answers").unwrap();
        drop(writer);
        drain.abort();
        assert_eq!(seen.len(), 11);
        for (i, (authority, path, trace, data)) in seen.into_iter().enumerate() {
            let want = if i == 5 { "rewindd.local:1" } else { "localhost" };
            assert_eq!(authority.as_deref(), Some(want), "request {i}");
            assert_eq!(path, "/rewind.v1.Checkpoint/GetStatus");
            assert_eq!(trace, Some(format!("call-{i}").into_bytes()));
            assert_eq!(data, vec![0, 0, 0, 0, i as u8]);
        }
    }

    /// A rewrite error fails the read (hyper closes the connection) and
    /// keeps failing.
    #[tokio::test]
    async fn a_protocol_violation_fails_the_connection() {
        let (mut client_io, server_io) = tokio::io::duplex(1 << 16);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x9, END_HEADERS, 1, &[0x82]));
        client_io.write_all(&bytes).await.unwrap();
        let mut wrapped = AuthorityNormaliser::new(server_io);
        let mut got = vec![0u8; 64];
        let n = wrapped.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], PREFACE, "what came before the error is delivered");
        for _ in 0..2 {
            let err = wrapped.read(&mut got).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("CONTINUATION"), "{err}");
        }
    }
}
