//! The boot-reason parsers of `sys/linux.rs` (recorded with every attempt
//! in the history): `androidboot.bootreason=` from /proc/cmdline and from
//! /proc/bootconfig. Must hold: no panic; the reason is a piece of the
//! input, on one line; from the command line it holds no whitespace, and
//! from bootconfig a quoted value comes back without its quotes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_daemon::sys::{boot_reason_from, boot_reason_from_bootconfig};
use rewind_fuzz::{bounded, text};

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let from_cmdline = bounded("cmdline", data.len(), 2, || boot_reason_from(&input));
    assert!(input.contains(from_cmdline.as_str()));
    assert!(!from_cmdline.chars().any(char::is_whitespace), "{from_cmdline:?}");
    let from_bootconfig = bounded("bootconfig", data.len(), 2, || boot_reason_from_bootconfig(&input));
    assert!(input.contains(from_bootconfig.as_str()));
    assert!(!from_bootconfig.contains('\n'), "{from_bootconfig:?}");
    let quoted = input
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "androidboot.bootreason")
        .is_some_and(|(_, v)| v.trim().starts_with('"'));
    if quoted {
        assert!(!from_bootconfig.contains('"'), "{from_bootconfig:?}");
    }
});
