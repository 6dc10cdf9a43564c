//! `dm/target.rs`: one target (`<type> <params>`) as a table line names it
//! (`Target::from_str`), e.g. from the kernel's table of a device rewind
//! finds at start. Must hold: no panic; Display/FromStr round-trip (the
//! kernel echoes what we load, and "create or verify" compares them); the
//! target type is one of the four rewind loads.
#![no_main]

use devicemapper::TargetParams;
use libfuzzer_sys::fuzz_target;
use rewind_daemon::dm::Target;
use rewind_fuzz::{bounded, text};

fuzz_target!(|data: &[u8]| {
    let line = text(data);
    let Ok(target) = bounded("target parse", data.len(), 8, || line.parse::<Target>()) else { return };
    let printed = target.to_string();
    let again = printed.parse::<Target>().unwrap_or_else(|e| panic!("'{line}' printed as '{printed}': {e}"));
    assert_eq!(again, target, "'{line}' printed as '{printed}'");
    assert_eq!(format!("{} {}", target.kind(), target.param_str()), printed);
    let _ = target.target_type();
});
