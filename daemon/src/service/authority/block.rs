//! One header block, decoded with the client's HPACK state and encoded
//! again for h2 with an invalid `:authority` replaced.
//!
//! The decoder keeps the dynamic table the client's encoder fills (RFC 7541
//! section 2.3), so a value the client indexed once and then refers to by
//! number is still seen and still replaced. The encoder on the h2 side never
//! indexes: every field goes out as a literal "never indexed" with a literal
//! name, so h2's decoder table stays empty and cannot drift from anything.
//! "Never indexed" rather than "without indexing" because the decoder does
//! not say which fields the client marked sensitive, and an intermediary
//! must not drop that mark (RFC 7541 section 6.2.3); marking all of them is
//! the safe superset (h2 only flags the values sensitive).

use super::RewriteError;

/// The HPACK table size the client's encoder may use: rewindd's h2 never
/// advertises SETTINGS_HEADER_TABLE_SIZE (tonic's server builder has no
/// such option), so the protocol default holds for the whole connection.
pub const CLIENT_TABLE_SIZE: usize = 4096;

/// Largest decoded header list accepted, counted as RFC 7541 section 4.1
/// counts (name + value + 32 per field). hyper advertises 16 KiB to the
/// client and answers larger lists itself; above this the connection is
/// closed instead, so a small block of indexed references cannot make the
/// normaliser expand it into megabytes.
pub const MAX_HEADER_LIST: usize = 64 * 1024;

/// What an invalid `:authority` becomes: the name grpc clients use when told
/// to (`grpc.default_authority`, `-authority`), and the one rewindd's own
/// client effectively sends.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const AUTHORITY: &[u8] = b":authority";
/// First octet of a literal field, never indexed, with a literal name
/// (RFC 7541 section 6.2.3: pattern 0001, index 0).
const NEVER_INDEXED_NEW_NAME: u8 = 0x10;

/// h2 builds the request URI with `http::uri::Authority`; whatever that
/// parser refuses, h2 answers with RST_STREAM(PROTOCOL_ERROR).
pub fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The HPACK side of the client→server direction of one connection.
pub struct BlockRewriter {
    decoder: loona_hpack::Decoder<'static>,
}

/// One block's result.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The block for h2.
    pub block: Vec<u8>,
    /// The `:authority` value that was replaced, if any.
    pub replaced: Option<Vec<u8>>,
}

impl BlockRewriter {
    pub fn new() -> BlockRewriter {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(CLIENT_TABLE_SIZE);
        BlockRewriter { decoder }
    }

    /// Decodes `block` (a complete header block: HEADERS plus its
    /// CONTINUATIONs, padding removed) and encodes it again. On an error
    /// the decoder's table may be half updated: the connection must end.
    pub fn rewrite(&mut self, block: &[u8]) -> Result<Rewritten, RewriteError> {
        // A never-indexed literal costs at most a few octets more than the
        // field's own bytes; most blocks are a few hundred octets.
        let mut out = Vec::with_capacity(block.len() * 2 + 64);
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut replaced = None;
        self.decoder
            .decode_with_cb(block, |name, value| {
                if too_large {
                    return;
                }
                list_size += name.len() + value.len() + 32;
                if list_size > MAX_HEADER_LIST {
                    too_large = true;
                    return;
                }
                let value: &[u8] = if name.as_ref() == AUTHORITY && !is_valid_authority(&value) {
                    replaced = Some(value.to_vec());
                    REPLACEMENT_AUTHORITY
                } else {
                    &value
                };
                encode_never_indexed(&name, value, &mut out);
            })
            .map_err(RewriteError::Hpack)?;
        if too_large {
            return Err(RewriteError::HeaderListTooLarge { limit: MAX_HEADER_LIST });
        }
        Ok(Rewritten { block: out, replaced })
    }
}

/// A literal field, never indexed, name and value as plain (not Huffman)
/// strings: RFC 7541 sections 6.2.3 and 5.2.
fn encode_never_indexed(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(NEVER_INDEXED_NEW_NAME);
    encode_string(name, out);
    encode_string(value, out);
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    // H bit 0 (plain octets), length with a 7-bit prefix.
    loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out).expect("writing to a Vec cannot fail");
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(block: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        loona_hpack::Decoder::new().decode(block).expect("a block h2 can decode")
    }

    use super::super::testing::IndexingEncoder;

    fn request(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/rewind.v1.Checkpoint/GetStatus".to_vec()),
            (b":authority", authority.to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
            (b"te", b"trailers".to_vec()),
        ]
    }

    fn owned(list: &[(&'static [u8], Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter().map(|(n, v)| (n.to_vec(), v.clone())).collect()
    }

    #[test]
    fn what_grpc_clients_send_is_invalid_and_localhost_is_valid() {
        // grpc-core: the socket path, %-encoded, without its leading slash.
        assert!(!is_valid_authority(b"tmp%2Fgrpcx%2Fr.sock"));
        // grpc-go before 1.4x, grpc-java: the path itself.
        assert!(!is_valid_authority(b"/dev/socket/rewindd"));
        assert!(!is_valid_authority(b""));
        for ok in [&b"localhost"[..], b"[::]:50051", b"127.0.0.1:50051", b"rewindd"] {
            assert!(is_valid_authority(ok), "{}", String::from_utf8_lossy(ok));
        }
    }

    /// The client indexes the bad authority once and refers to it by
    /// number afterwards: every request still reaches h2 with localhost,
    /// and h2's table (a fresh decoder per block here) needs nothing.
    #[test]
    fn indexed_authority_is_replaced_in_every_later_block() {
        let mut client = IndexingEncoder::new();
        let mut rewriter = BlockRewriter::new();
        let bad = b"tmp%2Fgrpcx%2Fr.sock";
        for round in 0..5 {
            let headers = request(bad);
            let fields: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let block = client.encode(&fields);
            if round > 0 {
                assert_eq!(block.len(), headers.len(), "later blocks are one-octet references: {block:?}");
            }
            let out = rewriter.rewrite(&block).unwrap();
            assert_eq!(out.replaced.as_deref(), Some(&bad[..]));
            assert_eq!(decode(&out.block), owned(&request(REPLACEMENT_AUTHORITY)), "round {round}");
        }
    }

    #[test]
    fn valid_authority_and_every_other_field_pass_unchanged() {
        let mut client = loona_hpack::Encoder::new();
        let mut rewriter = BlockRewriter::new();
        let mut headers = request(b"[::]:50051");
        headers.push((b"rewind-trace", vec![0, 1, 2, 255]));
        headers.push((b"x-empty", Vec::new()));
        headers.push((b"x-long", vec![b'a'; 3000]));
        let block = client.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())));
        let out = rewriter.rewrite(&block).unwrap();
        assert_eq!(out.replaced, None);
        assert_eq!(decode(&out.block), owned(&headers));
        assert_eq!(out.block[0], NEVER_INDEXED_NEW_NAME, "fields go out as never-indexed literals");
    }

    #[test]
    fn table_size_updates_are_followed_and_bounded() {
        let mut rewriter = BlockRewriter::new();
        // Size update to 0 (empties the table), then an indexed :method GET.
        assert_eq!(
            decode(&rewriter.rewrite(&[0x20, 0x82]).unwrap().block),
            vec![(b":method".to_vec(), b"GET".to_vec())]
        );
        // A size above what rewindd's h2 allows the client is refused.
        let mut too_big = Vec::new();
        loona_hpack::encoder::encode_integer_into(CLIENT_TABLE_SIZE + 1, 5, 0x20, &mut too_big).unwrap();
        too_big.push(0x82);
        assert!(matches!(rewriter.rewrite(&too_big), Err(RewriteError::Hpack(_))));
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        for block in [&[0x80][..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], &[0x10, 0x05, b'a'], &[0x40], &[0x20]] {
            assert!(BlockRewriter::new().rewrite(block).is_err(), "{block:?}");
        }
    }

    /// An HPACK bomb: one big indexed entry referenced thousands of times.
    #[test]
    fn a_header_list_that_expands_past_the_limit_is_refused() {
        let mut client = loona_hpack::Encoder::new();
        let big = vec![b'x'; 4000];
        let mut block = client.encode([(&b"x-big"[..], &big[..])]);
        for _ in 0..100 {
            block.push(0x80 | 62);
        }
        let err = BlockRewriter::new().rewrite(&block).unwrap_err();
        assert!(matches!(err, RewriteError::HeaderListTooLarge { .. }), "{err}");
    }
}
