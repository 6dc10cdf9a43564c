//! Lets gRPC clients that send the socket path as `:authority` call rewindd
//! over its Unix socket.
//!
//! grpc-core (Python grpcio, C++, Ruby...) names a `unix:` channel after its
//! path, %-encoded and without the leading slash
//! (`tmp%2Fgrpcx%2Fr.sock`); grpc-java and older grpc-go send the path
//! itself. h2 builds each request's URI with `http::uri::Authority`, which
//! refuses both (a `%` outside userinfo, a `/`), and answers
//! RST_STREAM(PROTOCOL_ERROR) before any service code runs (h2 has no
//! option to relax this; hyperium/h2 PR 487 is still open). The authority
//! means nothing on a Unix socket, so this layer rewrites an invalid one to
//! `localhost` before h2 sees it, and leaves every valid one alone.
//!
//! HTTP/2 compresses headers with HPACK, whose dynamic table is state shared
//! by the two ends: a value is usually sent once and then referred to by
//! number. So the rewrite is not a byte patch: each header block is fully
//! decoded with the client's table ([`block`]) and encoded again without
//! any indexing toward h2, whose table therefore stays empty; the frames
//! around the blocks ([`frames`]) are re-cut, everything else passes byte
//! for byte. Anything that cannot be rewritten exactly (a malformed block,
//! frames between a block's pieces, oversized blocks) closes the
//! connection, which is what h2 does with those anyway.
//!
//! Only the Unix socket is wrapped: TCP clients send `host:port`.

mod block;
mod frames;
mod stream;
#[cfg(test)]
mod testing;

pub use block::{is_valid_authority, REPLACEMENT_AUTHORITY};
pub use stream::AuthorityNormaliser;

/// Why a connection's byte stream could not be rewritten (the connection is
/// then closed).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the header block of stream {stream} was interrupted by a frame of type {frame_type:#x} (RFC 9113 section 6.10)")]
    InterruptedHeaderBlock { stream: u32, frame_type: u8 },
    #[error("CONTINUATION frame on stream {stream} without a header block before it")]
    StrayContinuation { stream: u32 },
    #[error("PUSH_PROMISE from a client (stream {stream})")]
    PushPromiseFromClient { stream: u32 },
    #[error("HEADERS frame on stream {stream} is shorter than its padding or priority fields")]
    BadHeadersFrame { stream: u32 },
    #[error("the header block of stream {stream} is longer than {limit} octets")]
    HeaderBlockTooLarge { stream: u32, limit: usize },
    #[error("a header list decodes to more than {limit} octets")]
    HeaderListTooLarge { limit: usize },
    #[error("cannot decode a header block (HPACK)")]
    Hpack(#[source] loona_hpack::decoder::DecoderError),
}
