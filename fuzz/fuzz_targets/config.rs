//! `config.rs`: rewindd.toml (`Config::from_toml_str`, what
//! `Config::from_file` parses), then `validate` as `Config::load` runs it.
//! Must hold: no panic; a parsed config serialises back to TOML that
//! parses to the same config, and validation gives the same answer for
//! both.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rewind_daemon::config::Config;
use rewind_fuzz::{bounded, text};

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let origin = Path::new("/system/etc/rewindd.toml");
    let Ok(config) = bounded("config parse", data.len(), 64, || Config::from_toml_str(&input, origin)) else {
        return;
    };
    let valid = config.validate().is_ok();
    let printed = toml::to_string(&config).expect("a parsed config serialises");
    let again = Config::from_toml_str(&printed, origin).unwrap_or_else(|e| panic!("{printed}: {e}"));
    assert_eq!(again, config, "{printed}");
    assert_eq!(again.validate().is_ok(), valid);
});
