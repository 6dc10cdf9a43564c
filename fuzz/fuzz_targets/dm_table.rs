//! `dm/target.rs`: a whole table (`<start> <length> <type> <params>` per
//! line), as `dmsetup table` prints it and as `Table::from_raw_table`
//! takes the kernel's answer. Must hold: no panic (`check` and `len`
//! included); text and raw forms round-trip; a table `check` accepts
//! covers exactly [0, len()) without gaps or overlaps.
#![no_main]

use devicemapper::TargetTable;
use libfuzzer_sys::fuzz_target;
use rewind_daemon::dm::Table;
use rewind_fuzz::{bounded, text};

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let Ok(table) = bounded("table parse", data.len(), 16, || input.parse::<Table>()) else { return };
    let printed = table.to_string();
    let again = printed.parse::<Table>().unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
    assert_eq!(again, table, "{input:?} printed as {printed:?}");
    let raw = table.to_raw_table();
    assert_eq!(Table::from_raw_table(&raw).ok().as_ref(), Some(&table), "raw form {raw:?}");
    let _ = table.kind();
    if table.check().is_ok() {
        let mut next = 0u64;
        for l in &table.lines {
            assert_eq!(*l.start, next, "{printed:?} passed check with a gap");
            assert!(*l.length > 0, "{printed:?} passed check with an empty line");
            next = next.checked_add(*l.length).unwrap_or_else(|| panic!("{printed:?} passed check past 2^64 sectors"));
        }
        assert_eq!(*table.len(), next, "{printed:?}");
    }
});
