//! rewindd's history as the checks read it: from `rewindctl history
//! --json` in the guest or GetHistory over gRPC, as rewindd's own
//! [`Event`]s. Kinds are compared as [`EventKind`]s, never as words.

use rewind_daemon::types::{Event, EventKind};
use rewind_proto::v1 as pb;
use serde_json::Value;

use super::super::{Ctx, ScenarioError};

/// The events, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History(pub Vec<Event>);

impl History {
    /// `rewindctl history --json`'s `{"events": [...]}` (or a bare array).
    /// Missing fields read as empty, so a check on them fails rather than
    /// the scenario stopping.
    pub fn from_json(v: &Value) -> History {
        let events = v.as_array().or_else(|| v["events"].as_array()).cloned().unwrap_or_default();
        let text = |e: &Value, k: &str| e[k].as_str().unwrap_or("").to_string();
        let number = |e: &Value, k: &str| e[k].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        History(
            events
                .iter()
                .map(|e| Event {
                    time_unix: e["time_unix"].as_u64().unwrap_or(0),
                    kind: text(e, "kind"),
                    attempt: number(e, "attempt"),
                    attempts: number(e, "attempts"),
                    partition: text(e, "partition"),
                    detail: text(e, "detail"),
                    boot_reason: text(e, "boot_reason"),
                })
                .collect(),
        )
    }

    /// GetHistory's events.
    pub fn from_grpc(events: &[pb::HistoryEvent]) -> History {
        History(
            events
                .iter()
                .map(|e| Event {
                    time_unix: e.time_unix,
                    kind: e.kind.clone(),
                    attempt: e.attempt,
                    attempts: e.attempts,
                    partition: e.partition.clone(),
                    detail: e.detail.clone(),
                    boot_reason: e.boot_reason.clone(),
                })
                .collect(),
        )
    }

    /// The events from the last `started` on (a device keeps the events of
    /// earlier checkpoints); all of them when none is `started`.
    pub fn this_run(&self) -> History {
        let from = self.rposition(EventKind::Started).unwrap_or(0);
        History(self.0[from..].to_vec())
    }

    pub fn events(&self) -> &[Event] {
        &self.0
    }

    pub fn has(&self, kind: EventKind) -> bool {
        self.0.iter().any(|e| e.is(kind))
    }

    pub fn count(&self, kind: EventKind) -> usize {
        self.0.iter().filter(|e| e.is(kind)).count()
    }

    /// Index of the first event of `kind`.
    pub fn position(&self, kind: EventKind) -> Option<usize> {
        self.0.iter().position(|e| e.is(kind))
    }

    /// Index of the last event of `kind`.
    pub fn rposition(&self, kind: EventKind) -> Option<usize> {
        self.0.iter().rposition(|e| e.is(kind))
    }

    /// Index of the first event of `kind` whose detail contains `text`.
    pub fn position_with(&self, kind: EventKind, text: &str) -> Option<usize> {
        self.0.iter().position(|e| e.is(kind) && e.detail.contains(text))
    }

    /// Index of the last event of `kind` whose detail contains `text`.
    pub fn rposition_with(&self, kind: EventKind, text: &str) -> Option<usize> {
        self.0.iter().rposition(|e| e.is(kind) && e.detail.contains(text))
    }

    /// Whether an event of `kind` has `text` in its detail.
    pub fn has_with(&self, kind: EventKind, text: &str) -> bool {
        self.position_with(kind, text).is_some()
    }

    /// The last event of `kind`.
    pub fn last_of(&self, kind: EventKind) -> Option<&Event> {
        self.rposition(kind).map(|i| &self.0[i])
    }

    /// Whether the newest event is of `kind`.
    pub fn last_is(&self, kind: EventKind) -> bool {
        self.0.last().is_some_and(|e| e.is(kind))
    }

    /// The attempt number of every `attempt` event, in order.
    pub fn attempts_counted(&self) -> Vec<u32> {
        self.0.iter().filter(|e| e.is(EventKind::Attempt)).map(|e| e.attempt).collect()
    }

    /// "kind#attempt ...": the history as a check's detail.
    pub fn story(&self) -> String {
        self.0.iter().map(|e| format!("{}#{}", e.kind, e.attempt)).collect::<Vec<_>>().join(" ")
    }

    /// "kind: detail | ...": the history with its details, for checks on them.
    pub fn text(&self) -> String {
        self.0.iter().map(|e| format!("{}: {}", e.kind, e.detail)).collect::<Vec<_>>().join(" | ")
    }
}

/// rewindd's whole history (`rewindctl history --json`).
pub fn history(cx: &mut Ctx) -> Result<History, ScenarioError> {
    let out = cx.exec_checked("rewindctl history --json")?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| ScenarioError::other(format!("rewindctl history --json: {e}: {out}")))?;
    Ok(History::from_json(&v))
}

/// The history after three failed attempts used up the checkpoint: each
/// attempt counted once, each discarded, the last rollback after attempt 3
/// (a rollback before it would leave attempt 3 running on its data).
pub fn check_three_attempts_rolled_back(cx: &mut Ctx, h: &History) {
    cx.check_eq("history counts attempts 1, 2 and 3, once each", vec![1, 2, 3], h.attempts_counted());
    let rollbacks = h.count(EventKind::RollbackFinished);
    let last_attempt = h.rposition(EventKind::Attempt);
    let last_rollback = h.rposition(EventKind::RollbackFinished);
    cx.check(
        "history shows every attempt rolled back, the last after attempt 3",
        rollbacks >= 3 && matches!((last_attempt, last_rollback), (Some(a), Some(r)) if r > a),
        h.story(),
    );
}

/// How each failed attempt ended, as the next boot's reason says it
/// (`androidboot.bootreason`, recorded with that boot's events): the
/// rollback that discards attempt k (`rollback-begun` with attempt k) was
/// recorded by the boot after it, so its boot reason is attempt k's end.
/// `expected[k - 1]` is attempt k's.
pub fn check_boot_reasons_after_attempts(cx: &mut Ctx, h: &History, expected: &[&str]) {
    let got: Vec<String> = (1..=expected.len() as u32)
        .map(|k| {
            h.0.iter()
                .find(|e| e.is(EventKind::RollbackBegun) && e.attempt == k)
                .map(|e| e.boot_reason.clone())
                .unwrap_or_default()
        })
        .collect();
    let want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    cx.check_eq("history: the boot after each failed attempt carries how it ended (boot reason)", want, got);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::adb::{fake_adb, AdbConfig, AdbTarget, NoPowerControl};
    use EventKind::{Attempt, Committed, RollbackBegun, RollbackFinished, Started};

    /// A history from "kind#attempt ..." (kinds by their EventKind).
    fn events(story: &[(EventKind, u32)]) -> History {
        let json: Vec<Value> =
            story.iter().map(|(k, a)| serde_json::json!({ "kind": k.as_str(), "attempt": a })).collect();
        History::from_json(&serde_json::json!({ "events": json }))
    }

    /// (counted once each, rolled back) as the two checks record them.
    fn three_attempts(story: &[(EventKind, u32)]) -> (bool, bool) {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "true"), Box::new(NoPowerControl), cfg).expect("fake device");
        let mut cx = Ctx::new(&mut t, "test", super::super::super::Options::default());
        let h = events(story);
        check_three_attempts_rolled_back(&mut cx, &h);
        let c = &cx.report.checks;
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "history counts attempts 1, 2 and 3, once each");
        assert_eq!(c[1].name, "history shows every attempt rolled back, the last after attempt 3");
        assert_eq!(c[1].detail, h.story());
        (c[0].passed, c[1].passed)
    }

    #[test]
    fn three_attempts_each_rolled_back_and_nothing_else_passes() {
        let r = |n| [(RollbackBegun, n), (RollbackFinished, n)];
        let seq = |parts: &[&[(EventKind, u32)]]| parts.concat();
        let good = seq(&[&[(Started, 0), (Attempt, 1)], &r(1), &[(Attempt, 2)], &r(1), &[(Attempt, 3)], &r(1)]);
        assert_eq!(three_attempts(&good), (true, true));
        // Attempt 3 still running on its data: not rolled back after it.
        let open = seq(&[&[(Started, 0), (Attempt, 1)], &r(1), &[(Attempt, 2)], &r(1), &r(1), &[(Attempt, 3)]]);
        assert_eq!(three_attempts(&open), (true, false));
        // An attempt counted twice, or one missing.
        let twice =
            seq(&[&[(Attempt, 1)], &r(1), &[(Attempt, 1)], &r(1), &[(Attempt, 2)], &r(1), &[(Attempt, 3)], &r(1)]);
        assert_eq!(three_attempts(&twice), (false, true));
        let two = seq(&[&[(Attempt, 1)], &r(1), &[(Attempt, 2)], &r(1), &r(1)]);
        assert_eq!(three_attempts(&two), (false, true));
        // Fewer than three rollbacks.
        let short = seq(&[&[(Attempt, 1), (Attempt, 2), (Attempt, 3)], &r(1)]);
        assert_eq!(three_attempts(&short), (true, false));
    }

    #[test]
    fn boot_reasons_are_read_from_each_attempts_rollback() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = AdbConfig { artifacts: dir.path().join("artifacts"), ..AdbConfig::default() };
        let mut t = AdbTarget::new(fake_adb(dir.path(), "true"), Box::new(NoPowerControl), cfg).expect("fake device");
        let mut cx = Ctx::new(&mut t, "test", super::super::super::Options::default());
        let ev = |kind: EventKind, attempt, reason: &str| pb::HistoryEvent {
            kind: kind.as_str().into(),
            attempt,
            boot_reason: reason.into(),
            ..Default::default()
        };
        let h = History::from_grpc(&[
            ev(Attempt, 1, "shutdown,userrequested"),
            ev(RollbackBegun, 1, "cold"),
            ev(Attempt, 2, "cold"),
            ev(RollbackBegun, 2, "kernel_panic"),
        ]);
        check_boot_reasons_after_attempts(&mut cx, &h, &["cold", "kernel_panic"]);
        check_boot_reasons_after_attempts(&mut cx, &h, &["cold", "watchdog"]);
        check_boot_reasons_after_attempts(&mut cx, &h, &["cold", "kernel_panic", "watchdog"]);
        let passed: Vec<bool> = cx.report.checks.iter().map(|c| c.passed).collect();
        assert_eq!(passed, vec![true, false, false], "a wrong or a missing reason fails");
    }

    #[test]
    fn grpc_events_keep_kind_attempt_detail_and_order() {
        let ev = |kind: EventKind, attempt, detail: &str| pb::HistoryEvent {
            kind: kind.as_str().into(),
            attempt,
            detail: detail.into(),
            ..Default::default()
        };
        let h = History::from_grpc(&[ev(Attempt, 1, "attempt 1 of 3 armed"), ev(RollbackFinished, 1, "merged")]);
        assert_eq!(h.story(), format!("{Attempt}#1 {RollbackFinished}#1"));
        assert_eq!(h.text(), format!("{Attempt}: attempt 1 of 3 armed | {RollbackFinished}: merged"));
        assert_eq!(h.attempts_counted(), vec![1]);
        assert!(h.has_with(Attempt, "armed") && !h.has_with(RollbackFinished, "armed"));
        assert!(h.last_is(RollbackFinished) && !h.last_is(Attempt));
    }

    #[test]
    fn this_run_is_the_events_from_the_last_start_on() {
        let h =
            events(&[(Started, 0), (Attempt, 1), (Committed, 1), (Started, 0), (Attempt, 1), (RollbackFinished, 1)]);
        let run = h.this_run();
        assert_eq!(run.story(), format!("{Started}#0 {Attempt}#1 {RollbackFinished}#1"));
        assert_eq!(run.attempts_counted(), vec![1]);
        assert_eq!(run.position(Committed), None, "the earlier run's commit is not this run's");
        // No `started` at all (a record from before history had it): all.
        assert_eq!(events(&[(Attempt, 2)]).this_run().events().len(), 1);
        // A bare array reads too; a missing field reads as empty.
        let bare = History::from_json(&serde_json::json!([{ "kind": Attempt.as_str() }]));
        assert_eq!((bare.count(Attempt), bare.events()[0].attempt, bare.events()[0].detail.as_str()), (1, 0, ""));
    }
}
