//! Names of kept files: what a source file is called inside an attempt's
//! directory, and how its origin is shown to people.
//!
//! Source names come from apps and the kernel and may hold anything but
//! `/` and NUL: newlines, terminal escapes, invalid UTF-8. A kept name is
//! printable ASCII only (every other byte, and `%`, `\`, space, becomes
//! `%XX`), so listings, JSON and shells show it as it is, and two different
//! source names never share a kept name (the mapping is one to one).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One path component as it is stored.
pub fn component(raw: &OsStr) -> String {
    let mut out = String::new();
    for &b in raw.as_bytes() {
        let plain = (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'/' | b'\\');
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Never produced by read_dir, but a kept name must not climb.
    match out.as_str() {
        "" => "%00".to_string(),
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => out,
    }
}

/// A relative path, component by component, joined with `/`.
pub fn stored(path: &Path) -> String {
    path.iter().map(component).collect::<Vec<_>>().join("/")
}

/// How a source path is shown: lossy UTF-8 with control characters
/// escaped (`\n`, `\u{1b}`).
pub fn shown(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `name` is a name this module could have made (what a reader
/// asks for is checked against the index, this only guards the path).
pub fn is_stored_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty() && c != "." && c != ".." && c.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'\\')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn control_characters_and_odd_bytes_are_escaped_one_to_one() {
        let nasty = OsString::from_vec(b"trace\n\x1b[31mred %41 \xff".to_vec());
        let kept = component(&nasty);
        assert_eq!(kept, "trace%0A%1B[31mred%20%2541%20%FF");
        assert!(kept.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        // `%` itself is escaped, so a name that reads like an escape stays apart.
        assert_ne!(component(OsStr::new("a%0A")), component(OsStr::new("a\n")));
        assert_eq!(stored(Path::new("data/tombstones/tombstone_00")), "data/tombstones/tombstone_00");
        assert!(is_stored_name(&stored(Path::new("data/anr/x\ny"))));
        assert_eq!(shown(Path::new("/data/anr/x\ny\u{1b}")), "/data/anr/x\\ny\\u{1b}");
    }

    #[test]
    fn readers_cannot_ask_for_paths_outside_the_attempt() {
        for bad in ["", "/etc/passwd", "../state", "a/../../state", "a//b", "a/./b", "a\\b", "a b"] {
            assert!(!is_stored_name(bad), "{bad:?}");
        }
        assert!(is_stored_name("kmsg.tail"));
        assert!(is_stored_name("pstore/console-ramoops-0"));
    }
}
