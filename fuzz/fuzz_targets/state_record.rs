//! `state::decode`: the checkpoint record on /metadata (whatever a torn
//! write, a bad flash block or another program left there). Every input
//! is tried twice: as a whole file, and as a body behind a correct header
//! (the mutator cannot forge a sha256, and the body is what a bad writer
//! with the checksum right would leave). Must hold: no panic; a record
//! that decodes is valid (`State::validate`) and encode/decode round-trips
//! to the same state; memory stays proportional to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_daemon::state::{self, State};
use rewind_fuzz::bounded;
use sha2::{Digest, Sha256};

fn check(record: &[u8]) {
    let Ok(decoded) = bounded("state decode", record.len(), 32, || state::decode(record)) else { return };
    decoded.validate().unwrap_or_else(|e| panic!("decode accepted an invalid record: {e}"));
    let encoded = state::encode(&decoded).expect("a decoded record encodes");
    let again: State = state::decode(&encoded).unwrap_or_else(|e| panic!("re-encoded record refused: {e}"));
    assert_eq!(again, decoded);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut framed =
        format!("rewind-state v{} sha256={}\n", state::VERSION, hex::encode(Sha256::digest(data))).into_bytes();
    framed.extend_from_slice(data);
    check(&framed);
});
