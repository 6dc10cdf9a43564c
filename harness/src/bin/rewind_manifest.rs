//! rewind-manifest ROOT [--exclude REL]...: prints the JSON manifest of
//! every file under ROOT (see rewind_harness::manifest). Runs in the guest,
//! static, independent of rewindd.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut root = None;
    let mut exclude: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--exclude" => match args.next() {
                Some(p) => exclude.push(p),
                None => {
                    eprintln!("rewind-manifest: --exclude needs a path");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: rewind-manifest ROOT [--exclude REL]...");
                return ExitCode::SUCCESS;
            }
            _ if root.is_none() => root = Some(a),
            _ => {
                eprintln!("rewind-manifest: unexpected argument {a:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(root) = root else {
        eprintln!("usage: rewind-manifest ROOT [--exclude REL]...");
        return ExitCode::from(2);
    };
    let refs: Vec<&str> = exclude.iter().map(|e| e.trim_matches('/')).collect();
    match rewind_harness::manifest::scan_excluding(std::path::Path::new(&root), &refs) {
        Ok(m) => match serde_json::to_string(&m) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rewind-manifest: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg += &format!(": {s}");
                src = s.source();
            }
            eprintln!("rewind-manifest: {msg}");
            ExitCode::FAILURE
        }
    }
}
