//! The client→server byte stream of one HTTP/2 connection, frame by frame
//! (RFC 9113 section 4): every frame passes through unchanged except
//! header blocks, which are collected (HEADERS + CONTINUATION), rewritten
//! by [`BlockRewriter`] and written out again as HEADERS + CONTINUATION.
//!
//! Nothing else needs adjusting when a header block changes size: header
//! frames are not flow-controlled, and the frames from h2 to the client
//! (SETTINGS, WINDOW_UPDATE, responses) do not depend on their length.

use bytes::{Buf, BufMut, BytesMut};

use super::block::{BlockRewriter, Rewritten};
use super::RewriteError;

/// What an HTTP/2 client sends first ("prior knowledge", as gRPC does).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;

/// Largest frame payload written toward h2: the SETTINGS_MAX_FRAME_SIZE
/// every HTTP/2 endpoint must accept (and rewindd's h2 advertises).
pub const MAX_OUT_FRAME: usize = 16_384;
/// Largest header block buffered (fragments of one HEADERS and its
/// CONTINUATIONs, padding and priority removed). h2 itself buffers at most
/// its max_header_list_size (16 KiB under hyper); a longer block closes
/// the connection here.
pub const MAX_BLOCK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    /// The reserved bit cleared.
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut BytesMut) {
        let len = u32::try_from(self.len).expect("frames written here are at most MAX_OUT_FRAME");
        out.put_slice(&len.to_be_bytes()[1..]);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream);
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Until the preface is complete.
    Preface,
    /// Not HTTP/2 with prior knowledge (an HTTP/1 request, garbage): left
    /// to hyper to refuse, byte for byte.
    Opaque,
    FrameHeader,
    /// Passing `remaining` octets of a frame's payload through.
    Payload {
        remaining: usize,
    },
    /// Waiting for the whole payload of a HEADERS or CONTINUATION frame.
    HeaderFragment(FrameHeader),
}

/// A header block being collected.
#[derive(Debug)]
struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    block: Vec<u8>,
}

/// The client→server direction of one connection.
pub struct ClientFrames {
    state: State,
    pending: Option<Pending>,
    hpack: BlockRewriter,
}

/// An `:authority` that was replaced, for the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Replaced {
    pub stream: u32,
    pub authority: Vec<u8>,
}

impl ClientFrames {
    pub fn new() -> ClientFrames {
        ClientFrames { state: State::Preface, pending: None, hpack: BlockRewriter::new() }
    }

    /// Moves what can be moved from `input` to `out`, rewritten; leaves an
    /// incomplete frame header or header fragment in `input` for later.
    /// Calls `on_replace` for each `:authority` replaced. After an error
    /// the stream cannot be continued.
    pub fn process(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        on_replace: &mut dyn FnMut(Replaced),
    ) -> Result<(), RewriteError> {
        loop {
            match self.state {
                State::Preface => {
                    let n = input.len().min(PREFACE.len());
                    if input[..n] != PREFACE[..n] {
                        self.state = State::Opaque;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.put(input.split_to(n));
                    self.state = State::FrameHeader;
                }
                State::Opaque => {
                    out.put(input.split());
                    return Ok(());
                }
                State::FrameHeader => {
                    if input.len() < FRAME_HEADER_LEN {
                        return Ok(());
                    }
                    let header = FrameHeader::parse(&input[..FRAME_HEADER_LEN]);
                    self.state = self.next_state(header)?;
                    if matches!(self.state, State::Payload { .. }) {
                        out.put(input.split_to(FRAME_HEADER_LEN));
                    } else {
                        input.advance(FRAME_HEADER_LEN);
                        // The whole fragment must be in memory to be used.
                        input.reserve(header.len);
                    }
                }
                State::Payload { remaining } => {
                    if remaining == 0 {
                        self.state = State::FrameHeader;
                        continue;
                    }
                    if input.is_empty() {
                        return Ok(());
                    }
                    let n = remaining.min(input.len());
                    out.put(input.split_to(n));
                    self.state = State::Payload { remaining: remaining - n };
                }
                State::HeaderFragment(header) => {
                    if input.len() < header.len {
                        return Ok(());
                    }
                    let payload = input.split_to(header.len);
                    if let Some(replaced) = self.fragment(header, &payload, out)? {
                        on_replace(replaced);
                    }
                    self.state = State::FrameHeader;
                }
            }
        }
    }

    /// Which state a frame with this header leads to; refuses what h2 would
    /// treat as a connection error anyway, and what cannot be rewritten.
    fn next_state(&self, h: FrameHeader) -> Result<State, RewriteError> {
        if let Some(p) = &self.pending {
            // RFC 9113 section 6.10: nothing may come between a header
            // block's frames.
            if h.kind != CONTINUATION || h.stream != p.stream {
                return Err(RewriteError::InterruptedHeaderBlock { stream: p.stream, frame_type: h.kind });
            }
        }
        match h.kind {
            CONTINUATION if self.pending.is_none() => Err(RewriteError::StrayContinuation { stream: h.stream }),
            HEADERS | CONTINUATION => {
                let buffered = self.pending.as_ref().map_or(0, |p| p.block.len());
                // Padding and priority can add at most 256 + 5 octets.
                if buffered + h.len > MAX_BLOCK + 256 + PRIORITY_LEN {
                    return Err(RewriteError::HeaderBlockTooLarge { stream: h.stream, limit: MAX_BLOCK });
                }
                Ok(State::HeaderFragment(h))
            }
            // Only servers push; h2 ends the connection on one from a client.
            PUSH_PROMISE => Err(RewriteError::PushPromiseFromClient { stream: h.stream }),
            _ => Ok(State::Payload { remaining: h.len }),
        }
    }

    /// One HEADERS or CONTINUATION payload; at END_HEADERS the block is
    /// rewritten and written out.
    fn fragment(
        &mut self,
        h: FrameHeader,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<Option<Replaced>, RewriteError> {
        if h.kind == HEADERS {
            let mut rest = payload;
            let mut pad = 0usize;
            if h.flags & PADDED != 0 {
                let (&len, tail) = rest.split_first().ok_or(RewriteError::BadHeadersFrame { stream: h.stream })?;
                pad = usize::from(len);
                rest = tail;
            }
            let mut priority = None;
            if h.flags & PRIORITY != 0 {
                if rest.len() < PRIORITY_LEN {
                    return Err(RewriteError::BadHeadersFrame { stream: h.stream });
                }
                let (p, tail) = rest.split_at(PRIORITY_LEN);
                priority = Some(p.try_into().expect("split at PRIORITY_LEN"));
                rest = tail;
            }
            if pad > rest.len() {
                return Err(RewriteError::BadHeadersFrame { stream: h.stream });
            }
            self.pending = Some(Pending {
                stream: h.stream,
                end_stream: h.flags & END_STREAM != 0,
                priority,
                block: rest[..rest.len() - pad].to_vec(),
            });
        } else if let Some(p) = self.pending.as_mut() {
            p.block.extend_from_slice(payload);
        }
        let Some(p) = self.pending.as_ref() else { return Ok(None) };
        if p.block.len() > MAX_BLOCK {
            return Err(RewriteError::HeaderBlockTooLarge { stream: p.stream, limit: MAX_BLOCK });
        }
        if h.flags & END_HEADERS == 0 {
            return Ok(None);
        }
        let Some(p) = self.pending.take() else { return Ok(None) };
        let Rewritten { block, replaced } = self.hpack.rewrite(&p.block)?;
        write_block(&p, &block, out);
        Ok(replaced.map(|authority| Replaced { stream: p.stream, authority }))
    }
}

/// HEADERS (with the original END_STREAM and priority, no padding), then
/// CONTINUATIONs, each payload at most [`MAX_OUT_FRAME`].
fn write_block(p: &Pending, block: &[u8], out: &mut BytesMut) {
    let prefix = p.priority.map_or(0, |_| PRIORITY_LEN);
    let first = block.len().min(MAX_OUT_FRAME - prefix);
    let mut flags = if p.end_stream { END_STREAM } else { 0 };
    if p.priority.is_some() {
        flags |= PRIORITY;
    }
    if first == block.len() {
        flags |= END_HEADERS;
    }
    FrameHeader { len: prefix + first, kind: HEADERS, flags, stream: p.stream }.write(out);
    if let Some(priority) = p.priority {
        out.put_slice(&priority);
    }
    out.put_slice(&block[..first]);
    let mut rest = &block[first..];
    while !rest.is_empty() {
        let n = rest.len().min(MAX_OUT_FRAME);
        let flags = if n == rest.len() { END_HEADERS } else { 0 };
        FrameHeader { len: n, kind: CONTINUATION, flags, stream: p.stream }.write(out);
        out.put_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub const SETTINGS: u8 = 0x4;
    pub const DATA: u8 = 0x0;

    /// A frame as a client writes it.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        FrameHeader { len: payload.len(), kind, flags, stream }.write(&mut out);
        out.put_slice(payload);
        out.to_vec()
    }

    /// Splits a byte stream back into frames (after the preface).
    pub fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let h = FrameHeader::parse(&bytes[..FRAME_HEADER_LEN]);
            let payload = bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + h.len].to_vec();
            out.push((h.kind, h.flags, h.stream, payload));
            bytes = &bytes[FRAME_HEADER_LEN + h.len..];
        }
        out
    }

    /// Feeds `input` in pieces of `chunk` octets; returns the output and
    /// the replacements.
    fn run(input: &[u8], chunk: usize) -> (Result<Vec<u8>, RewriteError>, Vec<Replaced>) {
        let mut frames = ClientFrames::new();
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut replaced = Vec::new();
        for piece in input.chunks(chunk) {
            buf.put_slice(piece);
            if let Err(e) = frames.process(&mut buf, &mut out, &mut |r| replaced.push(r)) {
                return (Err(e), replaced);
            }
        }
        (Ok(out.to_vec()), replaced)
    }

    use super::super::testing::IndexingEncoder;

    fn encode(client: &mut IndexingEncoder, authority: &[u8], extra: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/rewind.v1.Checkpoint/GetStatus"),
            (b":authority", authority),
            (b"te", b"trailers"),
        ];
        headers.extend_from_slice(extra);
        client.encode(&headers)
    }

    fn decoded_authority(decoder: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> Vec<u8> {
        let list = decoder.decode(block).unwrap();
        list.into_iter().find(|(n, _)| n == b":authority").map(|(_, v)| v).unwrap()
    }

    /// A connection's worth of frames, fed whole, in 7-octet pieces and
    /// one octet at a time: the same output. Non-header frames come out
    /// byte for byte, in order; header blocks decode (with one decoder for
    /// the whole connection, as h2's) to the request with localhost.
    #[test]
    fn a_connection_is_rewritten_the_same_however_it_arrives() {
        let mut client = IndexingEncoder::new();
        let bad = b"tmp%2Fgrpcx%2Fr.sock";
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
        for stream in [1u32, 3, 5] {
            let block = encode(&mut client, bad, &[]);
            if stream > 1 {
                assert_eq!(block.len(), 5, "later requests are dynamic-table references only: {block:?}");
            }
            input.extend(frame(HEADERS, END_HEADERS, stream, &block));
            input.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        let (whole, replaced) = run(&input, input.len());
        let whole = whole.unwrap();
        assert_eq!(replaced.iter().map(|r| r.stream).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(replaced.iter().all(|r| r.authority == bad));
        for chunk in [1, 7, 100] {
            assert_eq!(run(&input, chunk).0.unwrap(), whole, "chunk {chunk}");
        }
        let out = frames(&whole);
        let mut server = loona_hpack::Decoder::new();
        let kinds: Vec<_> = out.iter().map(|f| (f.0, f.2)).collect();
        assert_eq!(
            kinds,
            vec![(SETTINGS, 0), (HEADERS, 1), (DATA, 1), (HEADERS, 3), (DATA, 3), (HEADERS, 5), (DATA, 5)]
        );
        assert_eq!(out[0].3, vec![0, 4, 0, 0, 0xff, 0xff]);
        for f in out.iter().filter(|f| f.0 == HEADERS) {
            assert_eq!(f.1, END_HEADERS);
            assert_eq!(decoded_authority(&mut server, &f.3), b"localhost");
        }
        for f in out.iter().filter(|f| f.0 == DATA) {
            assert_eq!((f.1, f.3.as_slice()), (END_STREAM, &[0u8, 0, 0, 0, 0][..]));
        }
    }

    /// Padding is dropped, priority and END_STREAM kept, CONTINUATIONs
    /// joined; a block longer than one frame goes out split again.
    #[test]
    fn padded_prioritised_and_continued_blocks_are_rebuilt() {
        let mut client = IndexingEncoder::new();
        let big = vec![b'v'; 20_000];
        let block = encode(&mut client, b"/dev/socket/rewindd", &[(b"x-big", &big)]);
        let (a, b) = block.split_at(100);
        let mut headers = vec![3u8]; // pad length
        headers.extend([0x80, 0, 0, 1, 15]); // exclusive dependency on 1, weight 16
        headers.extend_from_slice(a);
        headers.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 7, &headers));
        let (b1, b2) = b.split_at(b.len() / 2);
        input.extend(frame(CONTINUATION, 0, 7, b1));
        input.extend(frame(CONTINUATION, END_HEADERS, 7, b2));
        let out = frames(&run(&input, 4096).0.unwrap());
        assert!(out.len() >= 2 && out.iter().all(|f| f.3.len() <= MAX_OUT_FRAME && f.2 == 7), "{}", out.len());
        assert_eq!((out[0].0, out[0].1), (HEADERS, PRIORITY | END_STREAM));
        assert_eq!(&out[0].3[..PRIORITY_LEN], &[0x80, 0, 0, 1, 15]);
        let last = out.len() - 1;
        for (i, f) in out.iter().enumerate().skip(1) {
            assert_eq!((f.0, f.1), (CONTINUATION, if i == last { END_HEADERS } else { 0 }));
        }
        let mut block = out[0].3[PRIORITY_LEN..].to_vec();
        for f in &out[1..] {
            block.extend_from_slice(&f.3);
        }
        let list = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert!(list.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(list.contains(&(b"x-big".to_vec(), big)));
    }

    #[test]
    fn a_valid_authority_is_left_alone() {
        let mut client = IndexingEncoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut client, b"[::]:50051", &[])));
        let (out, replaced) = run(&input, 3);
        assert!(replaced.is_empty());
        let out = frames(&out.unwrap());
        assert_eq!(decoded_authority(&mut loona_hpack::Decoder::new(), &out[0].3), b"[::]:50051");
    }

    #[test]
    fn what_is_not_http2_passes_through_untouched() {
        for input in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"PRI * HTTP/1.1", b"\x16\x03\x01"] {
            for chunk in [1, 5, 100] {
                assert_eq!(run(input, chunk).0.unwrap(), input, "{chunk}");
            }
        }
    }

    #[test]
    fn frames_h2_would_end_the_connection_for_are_errors() {
        let mut client = IndexingEncoder::new();
        let block = encode(&mut client, b"x%2Fy", &[]);
        let with = |frames: &[Vec<u8>]| {
            let mut input = PREFACE.to_vec();
            frames.iter().for_each(|f| input.extend(f));
            run(&input, 64).0
        };
        let (a, b) = block.split_at(10);
        assert!(matches!(
            with(&[frame(HEADERS, 0, 1, a), frame(DATA, 0, 1, b"x"), frame(CONTINUATION, END_HEADERS, 1, b)]),
            Err(RewriteError::InterruptedHeaderBlock { stream: 1, frame_type: DATA })
        ));
        assert!(matches!(
            with(&[frame(HEADERS, 0, 1, a), frame(CONTINUATION, END_HEADERS, 3, b)]),
            Err(RewriteError::InterruptedHeaderBlock { stream: 1, .. })
        ));
        assert!(matches!(
            with(&[frame(CONTINUATION, END_HEADERS, 1, b)]),
            Err(RewriteError::StrayContinuation { stream: 1 })
        ));
        assert!(matches!(
            with(&[frame(PUSH_PROMISE, END_HEADERS, 1, b)]),
            Err(RewriteError::PushPromiseFromClient { .. })
        ));
        assert!(matches!(
            with(&[frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 1, 2])]),
            Err(RewriteError::BadHeadersFrame { .. })
        ));
        assert!(matches!(
            with(&[frame(HEADERS, PRIORITY | END_HEADERS, 1, &[0, 0])]),
            Err(RewriteError::BadHeadersFrame { .. })
        ));
        assert!(matches!(with(&[frame(HEADERS, END_HEADERS, 1, &[0x80])]), Err(RewriteError::Hpack(_))));
        let huge = vec![0u8; MAX_OUT_FRAME];
        let mut many = vec![frame(HEADERS, 0, 1, &huge)];
        many.extend((0..4).map(|_| frame(CONTINUATION, 0, 1, &huge)));
        assert!(matches!(with(&many), Err(RewriteError::HeaderBlockTooLarge { .. })));
    }

    /// Oversized frames are refused from their header, before their
    /// payload is buffered.
    #[test]
    fn an_oversized_header_frame_is_refused_before_buffering() {
        let mut input = PREFACE.to_vec();
        let mut h = BytesMut::new();
        FrameHeader { len: 0xff_ffff, kind: HEADERS, flags: 0, stream: 1 }.write(&mut h);
        input.extend_from_slice(&h);
        assert!(matches!(run(&input, 64).0, Err(RewriteError::HeaderBlockTooLarge { .. })));
    }
}
