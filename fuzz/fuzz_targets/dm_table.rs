//! `dm/target.rs`: a whole table (`<start> <length> <type> <params>` per
//! line), as `dmsetup table` prints it and as `Table::from_raw_table`
//! takes the kernel's answer. Must hold: no panic (`check` and `len`
//! included); text and raw forms round-trip; a table `check` accepts
//! covers exactly [0, len()) without gaps or overlaps. `check` is also the
//! last look at a table rewind built itself (from the COW extents of the
//! record) before it is loaded, so it is run a second time on lines made
//! straight from the input's bytes (16 a line: start, length), numbers the
//! mutator cannot easily spell in decimal.
#![no_main]

use devicemapper::{Device, Sectors, TargetLine, TargetTable};
use libfuzzer_sys::fuzz_target;
use rewind_daemon::dm::{Table, Target};
use rewind_fuzz::{bounded, text};

/// What must hold of a table `check` accepts.
fn accepted(table: &Table, what: &str) {
    if table.check().is_err() {
        return;
    }
    let mut next = 0u64;
    for l in &table.lines {
        assert_eq!(*l.start, next, "{what} passed check with a gap");
        assert!(*l.length > 0, "{what} passed check with an empty line");
        next = next.checked_add(*l.length).unwrap_or_else(|| panic!("{what} passed check past 2^64 sectors"));
    }
    assert_eq!(*table.len(), next, "{what}");
}

fuzz_target!(|data: &[u8]| {
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    let lines = data
        .chunks_exact(16)
        .map(|c| {
            let target = Target::linear(Device { major: 254, minor: 0 }, Sectors(0));
            TargetLine::new(Sectors(word(&c[..8])), Sectors(word(&c[8..])), target)
        })
        .collect();
    accepted(&Table { lines }, "binary lines");

    let input = text(data);
    let Ok(table) = bounded("table parse", data.len(), 16, || input.parse::<Table>()) else { return };
    let printed = table.to_string();
    let again = printed.parse::<Table>().unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
    assert_eq!(again, table, "{input:?} printed as {printed:?}");
    let raw = table.to_raw_table();
    assert_eq!(Table::from_raw_table(&raw).ok().as_ref(), Some(&table), "raw form {raw:?}");
    let _ = table.kind();
    accepted(&table, &printed);
});
