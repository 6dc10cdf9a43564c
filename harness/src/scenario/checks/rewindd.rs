//! rewindd's own account (status, the state record on /metadata, its
//! logs) and the knobs scenarios turn (a checkpoint, extra config, a
//! restart with another config).

use rewind_daemon::state::{decode, State};
use serde_json::Value;

use crate::manifest::Manifest;
use crate::plan::{shell_quote, stage, BootPlan};
use crate::target::BootRecord;

use super::super::{Ctx, ScenarioError};
use super::data::data_manifest;

/// rewindd's status as `rewindctl status --json` prints it.
pub fn status(cx: &mut Ctx) -> Result<Value, ScenarioError> {
    let out = cx.exec_checked("rewindctl status --json")?;
    serde_json::from_str(&out).map_err(|e| ScenarioError::other(format!("rewindctl status --json: {e}: {out}")))
}

/// The phase of a status ("" when the field is missing, so the check
/// comparing it fails rather than the scenario stopping).
pub fn phase(st: &Value) -> String {
    st["phase"].as_str().unwrap_or("").to_string()
}

/// Checks rewindd's phase (`rewindctl status --json`) is `expected`;
/// returns the whole status for callers that read more of it.
pub fn check_phase(cx: &mut Ctx, name: &str, expected: &str) -> Result<Value, ScenarioError> {
    let st = status(cx)?;
    cx.check_eq(name, expected.to_string(), phase(&st));
    Ok(st)
}

/// `rewindctl start` with `attempts` and `reason`, required to succeed.
pub fn start(cx: &mut Ctx, attempts: u32, reason: &str) -> Result<(), ScenarioError> {
    start_as(cx, "rewindctl start succeeds", attempts, reason)
}

/// [`start`], its check named `name`.
pub fn start_as(cx: &mut Ctx, name: &str, attempts: u32, reason: &str) -> Result<(), ScenarioError> {
    let out = cx.exec(&format!("rewindctl start --attempts {attempts} --reason {}", shell_quote(reason)))?;
    cx.require(name, out.success(), format!("{}{}", out.stdout, out.stderr))
}

/// The old system: a rewind boot, the baseline on /data, a checkpoint
/// with `attempts` started; the guest stays up.
pub fn begin_checkpoint(cx: &mut Ctx, attempts: u32, reason: &str) -> Result<(), ScenarioError> {
    cx.boot_ready(&BootPlan::rewind())?;
    cx.run_baseline()?;
    start(cx, attempts, reason)
}

/// [`begin_checkpoint`], then the baseline's manifest (returned) and a
/// clean power-off.
pub fn prepare_checkpoint(cx: &mut Ctx, attempts: u32, reason: &str) -> Result<Manifest, ScenarioError> {
    begin_checkpoint(cx, attempts, reason)?;
    let baseline = data_manifest(cx)?;
    cx.shutdown()?;
    Ok(baseline)
}

/// The state record, read and checked with rewindd's own decoder (header,
/// checksum, consistency).
pub fn state(cx: &mut Ctx) -> Result<State, ScenarioError> {
    let text = cx.exec_checked("cat /metadata/rewind/state")?;
    decode(text.as_bytes()).map_err(|e| ScenarioError::other(format!("state record: {e}")))
}

/// Writes (or with None removes) `share/boot/<name>` of a QEMU guest: what
/// its init reads at every boot from the next one on.
pub fn set_boot_file(cx: &mut Ctx, name: &str, contents: Option<&str>) -> Result<(), ScenarioError> {
    let path = cx.target.artifacts_dir().join("share/boot").join(name);
    let res = match contents {
        Some(t) => std::fs::write(&path, t),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
    };
    res.map_err(|e| ScenarioError::other(format!("{}: {e}", path.display())))
}

/// Writes (or with None removes) the TOML the guest init appends to
/// rewindd's config from the next boot on. Top-level keys first: what
/// follows a `[table]` header belongs to that table.
pub fn set_rewindd_extra(cx: &mut Ctx, toml: Option<&str>) -> Result<(), ScenarioError> {
    set_boot_file(cx, "rewindd.extra.toml", toml)
}

/// Restarts the running rewindd with the guest's paths and `extra` config
/// lines (after `reboot_command = ["true"]`: a scenario sees what rewindd
/// would do instead of a reboot), and waits for its socket. The config
/// and log are /tmp/rewindd-<name>.{toml,log} in the guest.
pub fn restart_rewindd(cx: &mut Ctx, name: &str, extra: &[&str]) -> Result<(), ScenarioError> {
    let lines = [
        "fstab = \"/etc/fstab.rewind\"",
        "metadata_dir = \"/metadata/rewind\"",
        "socket = \"/dev/socket/rewindd\"",
        "reboot_command = [\"true\"]",
    ];
    let words: Vec<String> = lines.iter().chain(extra).map(|l| shell_quote(l)).collect();
    cx.exec_checked(&format!("printf '%s\\n' {} > /tmp/rewindd-{name}.toml", words.join(" ")))?;
    cx.exec_checked("kill $(pidof rewindd); sleep 1; rm -f /dev/socket/rewindd")?;
    cx.exec_checked(&format!(
        "setsid rewindd --config /tmp/rewindd-{name}.toml > /tmp/rewindd-{name}.log 2>&1 < /dev/null &"
    ))?;
    cx.exec_checked(
        "i=0; while [ ! -S /dev/socket/rewindd ] && [ $i -lt 100 ]; do usleep 100000; i=$((i+1)); done; test -S /dev/socket/rewindd",
    )?;
    Ok(())
}

/// A log of boot `boot` of a QEMU guest (`share/logs/boot-N/<file>`:
/// rewindd.log, prepare-userdata.log); empty when there is none.
pub fn boot_log(cx: &Ctx, boot: u32, file: &str) -> String {
    std::fs::read_to_string(cx.target.artifacts_dir().join(format!("share/logs/boot-{boot}/{file}")))
        .unwrap_or_default()
}

/// Boot `boot`'s prepare-userdata output.
pub fn prepare_log(cx: &Ctx, boot: u32) -> String {
    boot_log(cx, boot, "prepare-userdata.log")
}

/// Boot `boot`'s merge, waited-for or in the background: prepare-userdata's
/// output, then the guest's follower of a background merge.
pub fn merge_log(cx: &Ctx, boot: u32) -> String {
    [prepare_log(cx, boot), boot_log(cx, boot, "background-merge.log")].join("\n")
}

/// Last "NN% (a/b)" progress of a [`merge_log`], and whether the merge is
/// over: prepare-userdata finished, and a merge it left running in the
/// background ended.
pub fn merge_progress(log: &str) -> (Option<(u32, String)>, bool) {
    let last = log
        .lines()
        .rev()
        .filter(|l| l.starts_with("merg") && l.contains('%'))
        .filter_map(|l| {
            let rest = l.split_once(": ")?.1;
            let (pct, tail) = rest.split_once('%')?;
            Some((pct.trim().parse::<u32>().ok()?, tail.trim().to_string()))
        })
        .next();
    let background = log.lines().any(|l| l.starts_with("userdata prepared: rolling-back"));
    let over = log.contains("userdata prepared") && (!background || log.contains("background merge ended"));
    (last, over)
}

/// "(21 MiB/51 MiB)" -> (done, total) in bytes (rewindctl's human_bytes).
pub fn merge_bytes(tail: &str) -> Option<(u64, u64)> {
    let inner = tail.trim().strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = inner.split_once('/')?;
    let bytes = |s: &str| -> Option<u64> {
        let (num, unit) = s.trim().split_once(' ')?;
        let v: f64 = num.parse().ok()?;
        let mul = match unit {
            "B" => 1u64,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return None,
        };
        Some((v * mul as f64) as u64)
    };
    Some((bytes(a)?, bytes(b)?))
}

/// "merge 55% (a/b), not over" of a boot's merge, for details.
pub fn merge_summary(cx: &Ctx, boot: u32) -> String {
    let (last, over) = merge_progress(&merge_log(cx, boot));
    format!(
        "merge {}{}",
        last.map(|(p, t)| format!("{p}% {t}")).unwrap_or_else(|| "none".into()),
        if over { ", over" } else { ", not over" }
    )
}

/// Checks (as `name`) that boot `rec` discarded an attempt by a merge
/// (`what`: "the merge of attempt 1"), before /data was mounted or, the
/// last rollback, in the background; the
/// detail compares its time to /data with the scenario's first boot.
pub fn check_merged(cx: &mut Ctx, name: &str, rec: &BootRecord, what: &str) -> bool {
    let merged = merge_summary(cx, rec.index);
    let first = cx.target.boots().first().and_then(|b| b.reached_ms(stage::DATA_MOUNTED));
    // A last rollback's merge runs after prepare-userdata returned: a
    // small one is over before the guest's first look at it (no `merging`).
    let background = rec.reached(stage::MERGE_BACKGROUND);
    cx.check(
        name,
        merge_ran(rec),
        format!(
            "power-on to data-mounted {} with {what}{} vs {} in boot 1 (no checkpoint); prepare-userdata: {merged}",
            secs(rec.reached_ms(stage::DATA_MOUNTED)),
            if background { " (in the background)" } else { "" },
            secs(first),
        ),
    )
}

/// The next boot rolls the attempt back: it merged (checked as `merged`),
/// rewindd's phase is rolled-back, and userdata is exactly `baseline` (the
/// manifest of every file). Returns what /data holds now, for the
/// scenario's own checks.
pub fn boot_rolls_back_to(cx: &mut Ctx, merged: &str, baseline: &Manifest) -> Result<Manifest, ScenarioError> {
    let rec = cx.boot_ready(&BootPlan::rewind())?;
    check_merged(cx, merged, &rec, "the rollback merge");
    check_phase(cx, "phase is rolled-back", "rolled-back")?;
    let now = data_manifest(cx)?;
    cx.same_manifest("userdata is exactly the baseline (every file, checksummed)", baseline, &now);
    Ok(now)
}

/// Whether boot `rec` ran a rollback merge: inside prepare-userdata
/// (`merging`), or, the last rollback, after it (`merge-background`; a
/// small merge can be over before the guest's first look prints
/// `merging`).
pub fn merge_ran(rec: &BootRecord) -> bool {
    rec.reached(stage::MERGING) || rec.reached(stage::MERGE_BACKGROUND)
}

/// "1.23 s", or "not reached", for times of stages.
pub fn secs(ms: Option<u64>) -> String {
    ms.map(|m| format!("{:.2} s", m as f64 / 1000.0)).unwrap_or_else(|| "not reached".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_progress_reads_the_last_line_and_the_end() {
        let log = "arming\nmerging rewind-userdata: 0% (0 B/167 MiB)\nmerging rewind-userdata: 55% (82 MiB/148 MiB)\n";
        assert_eq!(merge_progress(log), (Some((55, "(82 MiB/148 MiB)".to_string())), false));
        assert!(merge_progress("merging rewind-userdata: 100% (10 MiB/10 MiB)\nuserdata prepared\n").1);
        assert_eq!(merge_progress("userdata prepared\n"), (None, true));
    }

    #[test]
    fn merge_progress_follows_a_background_merge_to_its_end() {
        let prepare = "userdata prepared: rolling-back (attempt 1 of 1)\n";
        let follower = "merging userdata in the background: 0% (0 MiB/50 MiB)\n\
                        merging userdata in the background: 40% (20 MiB/50 MiB)\n";
        let running = format!("{prepare}\n{follower}");
        assert_eq!(merge_progress(&running), (Some((40, "(20 MiB/50 MiB)".to_string())), false));
        let ended = format!("{running}background merge ended\n");
        assert!(merge_progress(&ended).1);
        // Cut before the follower wrote anything: not over.
        assert_eq!(merge_progress(prepare), (None, false));
    }

    #[test]
    fn merge_bytes_reads_human_units() {
        assert_eq!(merge_bytes("(82 MiB/148 MiB)"), Some((82 << 20, 148 << 20)));
        assert_eq!(merge_bytes("(0 B/1.5 GiB)"), Some((0, 3 << 29)));
        assert_eq!(merge_bytes("82 MiB/148 MiB"), None);
    }
}
