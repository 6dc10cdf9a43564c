//! `state::decode`: the checkpoint record on /metadata (whatever a torn
//! write, a bad flash block or another program left there). Every input
//! is tried three ways: as a whole file; as a body behind a correct header
//! (the mutator cannot forge a sha256, and the body is what a bad writer
//! with the checksum right would leave); and, when the body is a `State`
//! at all, encoded again with every partition's COW-list hash made right,
//! so the rules past the hashes see arbitrary values too. Must hold: no panic; a record
//! that decodes is valid (`State::validate`) and encode/decode round-trips
//! to the same state; what rewindd computes from an accepted record at
//! once (the status report's COW size, the COW device's table that boot
//! loads) does not panic either; memory stays proportional to the input.
#![no_main]

use devicemapper::Device;
use libfuzzer_sys::fuzz_target;
use rewind_daemon::cowstore;
use rewind_daemon::state::{self, State};
use rewind_fuzz::bounded;
use sha2::{Digest, Sha256};

fn check(record: &[u8]) {
    let Ok(decoded) = bounded("state decode", record.len(), 32, || state::decode(record)) else { return };
    decoded.validate().unwrap_or_else(|e| panic!("decode accepted an invalid record: {e}"));
    let encoded = state::encode(&decoded).expect("a decoded record encodes");
    let again: State = state::decode(&encoded).unwrap_or_else(|e| panic!("re-encoded record refused: {e}"));
    assert_eq!(again, decoded);
    for p in &decoded.partitions {
        let _ = p.cow_bytes();
        let raw = Device { major: 254, minor: 0 };
        if let Ok(table) = cowstore::linear_table(&p.cow_files, raw, p.raw_size_bytes) {
            table.check().unwrap_or_else(|e| panic!("linear_table built a table check refuses: {e}"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed =
        format!("rewind-state v{} sha256={}\n", state::VERSION, hex::encode(Sha256::digest(data))).into_bytes();
    framed.extend_from_slice(data);
    check(&framed);
    if let Ok(mut forged) = serde_json::from_slice::<State>(data) {
        for p in &mut forged.partitions {
            p.cow_sha256 = state::extents_hash(&p.cow_files);
        }
        if let Ok(record) = state::encode(&forged) {
            check(&record);
        }
    }
});
