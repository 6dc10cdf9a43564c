//! A client-side HPACK encoder for the tests that indexes everything, as
//! grpc-core's does (captured from grpcio 1.85: the first call sends
//! `:authority` as a literal with incremental indexing and a literal name,
//! later calls send the one octet 0xc3, a dynamic-table reference): a field
//! it has sent before goes out as a one-octet reference, a new one as a
//! literal added to the table. loona-hpack's encoder never indexes a field
//! whose name is in the static table, so it would never send `:authority`
//! by reference.

use std::collections::VecDeque;

use super::block::CLIENT_TABLE_SIZE;

pub struct IndexingEncoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
}

impl IndexingEncoder {
    pub fn new() -> IndexingEncoder {
        IndexingEncoder { table: VecDeque::new(), size: 0 }
    }

    pub fn encode(&mut self, headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(name, value) in headers {
            if let Some(i) = self.table.iter().position(|(n, v)| n == name && v == value) {
                integer(62 + i, 7, 0x80, &mut out);
                continue;
            }
            out.push(0x40);
            string(name, &mut out);
            string(value, &mut out);
            self.add(name, value);
        }
        out
    }

    fn add(&mut self, name: &[u8], value: &[u8]) {
        self.table.push_front((name.to_vec(), value.to_vec()));
        self.size += name.len() + value.len() + 32;
        while self.size > CLIENT_TABLE_SIZE {
            let (n, v) = self.table.pop_back().expect("size counts entries");
            self.size -= n.len() + v.len() + 32;
        }
    }
}

fn integer(value: usize, prefix: u8, leading: u8, out: &mut Vec<u8>) {
    loona_hpack::encoder::encode_integer_into(value, prefix, leading, out).unwrap();
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    integer(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}
