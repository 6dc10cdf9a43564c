//! The daemon's module graph, read from the source: no file imports one
//! that (through any chain) imports it back, and no module imports one
//! above it in the layering ARCHITECTURE.md draws. `types` imports nothing
//! of the crate. A new module gets a layer in [`LAYERS`] or this test fails
//! and says so.
//!
//! An edge is any `use crate::…`/`use super::…` (groups expanded) or an
//! inline `crate::…`/`super::…` path in code, resolved to the deepest module
//! file it names; comments, `mod` declarations, unit-test modules
//! (`*/tests.rs`) and the test fixtures (`testing.rs`) are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest first. A module may import its own layer's
/// (when no circle results) and the ones below, never one above.
const LAYERS: &[&[&str]] = &[
    &["types"],
    &["sys", "fiemap", "dm", "config", "logging", "fstab"],
    &["ext4map", "slot", "evidence"],
    &["state"],
    &["cowstore"],
    &["error"],
    &["backend"],
    &["boot"],
    &["engine"],
    &["service"],
    &["client"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Module path ("backend::snapshot") of a source file under src/.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs").to_string();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code without comments (line comments and doc comments; block
/// comments are not used in this crate's code) and without inline unit-test
/// modules (`#[cfg(test)] mod tests { … }`, whose `super` is the file
/// itself).
fn code_only(text: &str) -> String {
    let code = text
        .lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal ("http://…") keeps the line.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let line_end = after.find(';').unwrap_or(after.len());
        match after.find('{') {
            // An inline module: skip to its matching brace.
            Some(open) if open < line_end => {
                let mut depth = 0;
                let mut end = after.len();
                for (j, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            // A declaration (`#[cfg(test)] mod tests;`): not an edge.
            _ => rest = &after[line_end.min(after.len())..],
        }
    }
    out.push_str(rest);
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').expect("closing brace")];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(join(prefix, path));
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// Every `crate::`/`super::` path a file's code names.
fn paths_named(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` statements, groups expanded.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let at_word = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        let after = &rest[i + 4..];
        if at_word && (after.starts_with("crate::") || after.starts_with("super::")) {
            let end = after.find(';').expect("use ends with ;");
            expand(&after[..end], "", &mut out);
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    // Inline paths.
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(root) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                out.push(tail[..end].trim_end_matches(':').to_string());
            }
            rest = &tail[end..];
        }
    }
    out
}

/// Resolves a named path to the deepest existing module, relative to the
/// naming module for `super::`.
fn resolve(path: &str, from: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segs.first() {
        Some(&"crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some(&"super") => {
            // `super` of module a::b (a/b.rs or a/b/mod.rs) is a.
            let mut b = from.to_vec();
            while segs.first() == Some(&"super") {
                segs.remove(0);
                b.pop();
            }
            b
        }
        _ => return None,
    };
    let mut best = None;
    for s in segs {
        base.push(s.to_string());
        if modules.contains(&base) {
            best = Some(base.clone());
        } else {
            break;
        }
    }
    best
}

#[test]
fn module_graph_has_no_circle_and_points_down() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name != "tests.rs" && name != "testing.rs" && !f.starts_with(src.join("bin"))
    });
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let code = code_only(&std::fs::read_to_string(f).expect("read"));
        for p in paths_named(&code) {
            if let Some(to) = resolve(&p, &from, &modules) {
                if to != from && !to.is_empty() {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        edges.entry(from).or_default();
    }

    let name = |m: &Vec<String>| if m.is_empty() { "crate".to_string() } else { m.join("::") };
    // Layering: by top-level module.
    let mut wrong = Vec::new();
    for (from, tos) in &edges {
        let Some(ftop) = from.first() else { continue };
        let fl = layer_of(ftop).unwrap_or_else(|| panic!("module {ftop} has no layer in LAYERS; give it one"));
        for to in tos {
            let ttop = &to[0];
            let tl = layer_of(ttop).unwrap_or_else(|| panic!("module {ttop} has no layer in LAYERS; give it one"));
            if ftop == "types" && ttop != "types" {
                wrong.push(format!("{} -> {} (types must import nothing of the crate)", name(from), name(to)));
            } else if tl > fl {
                wrong.push(format!("{} (layer {fl}) -> {} (layer {tl}) imports upward", name(from), name(to)));
            }
        }
    }
    assert!(wrong.is_empty(), "edges against the layering:\n{}", wrong.join("\n"));

    // No circle: depth-first search over file modules.
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|x| x == m).unwrap_or(0);
                let mut c = stack[i..].to_vec();
                c.push(m.clone());
                return Some(c);
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for to in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(to, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!("import circle: {}", cycle.iter().map(name).collect::<Vec<_>>().join(" -> "));
        }
    }
    let count: usize = edges.values().map(|t| t.len()).sum();
    eprintln!("{} modules, {count} import edges, no circle, all pointing down", edges.len());
}

/// The reader itself: groups, aliases, `super`, inline paths, comments.
#[test]
fn the_reader_finds_the_edges_it_should() {
    let code = code_only(
        "use crate::{a::{B, c::D}, e as f};\nuse super::g::H;\n// use crate::comment;\nlet x = crate::k::L::new();\n\
         #[cfg(test)]\nmod tests {\n    use super::*;\n}\n#[cfg(test)]\nmod fake;\nuse crate::after;\n",
    );
    let mut p = paths_named(&code);
    p.sort();
    p.dedup();
    assert_eq!(
        p,
        ["crate", "crate::a::B", "crate::a::c::D", "crate::after", "crate::e", "crate::k::L::new", "super::g::H"]
    );
    let modules: BTreeSet<Vec<String>> =
        [vec!["k".to_string()], vec!["boot".into()], vec!["boot".into(), "ctx".into()]].into_iter().collect();
    assert_eq!(resolve("crate::k::L::new", &[], &modules), Some(vec!["k".to_string()]));
    let from = vec!["boot".to_string(), "start".to_string()];
    assert_eq!(resolve("super::ctx::Ctx", &from, &modules), Some(vec!["boot".to_string(), "ctx".to_string()]));
}
