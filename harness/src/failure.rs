//! How a boot ended, told from independent witnesses: QMP events (WATCHDOG,
//! GUEST_PANICKED, SHUTDOWN with its reason), the console ("Kernel panic")
//! and whether the host itself killed QEMU. With `-no-reboot` every reset
//! ends the QEMU process, so each boot is one process.

use serde::Serialize;

use crate::qmp::QmpEvent;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootEnd {
    /// The guest powered off (ACPI off after `poweroff -f`).
    CleanShutdown,
    /// Kernel panic.
    Panic,
    /// The i6300esb watchdog fired and reset the machine.
    WatchdogReset,
    /// The host killed QEMU (SIGKILL): a power cut.
    HostPowerCut,
    /// The guest reset itself (sysrq b, reboot -f, triple fault).
    GuestReset,
    /// QEMU was asked to quit by the host (QMP quit, SIGTERM).
    HostShutdown,
    /// QEMU exited in a way none of the above explains.
    Unexplained { detail: String },
}

impl std::fmt::Display for BootEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootEnd::CleanShutdown => f.write_str("clean shutdown"),
            BootEnd::Panic => f.write_str("kernel panic"),
            BootEnd::WatchdogReset => f.write_str("watchdog reset"),
            BootEnd::HostPowerCut => f.write_str("host power cut"),
            BootEnd::GuestReset => f.write_str("guest reset"),
            BootEnd::HostShutdown => f.write_str("host shutdown"),
            BootEnd::Unexplained { detail } => write!(f, "unexplained end ({detail})"),
        }
    }
}

/// Everything known when QEMU is gone.
pub struct EndWitnesses<'a> {
    pub events: &'a [QmpEvent],
    pub console: &'a str,
    pub killed_by_host: bool,
    /// QEMU's exit status as text ("exit status: 0", "signal: 9 (SIGKILL)").
    pub exit: &'a str,
}

/// Classifies a boot's end. Order matters: a panic also ends in a
/// guest-reset SHUTDOWN (panic=1), and a watchdog reset too.
pub fn classify(w: &EndWitnesses<'_>) -> BootEnd {
    if w.killed_by_host {
        return BootEnd::HostPowerCut;
    }
    if w.events.iter().any(|e| e.event == "WATCHDOG") {
        return BootEnd::WatchdogReset;
    }
    let shutdown_reason = w
        .events
        .iter()
        .rev()
        .find(|e| e.event == "SHUTDOWN")
        .and_then(|e| e.data.get("reason").and_then(|r| r.as_str()).map(str::to_string));
    if w.events.iter().any(|e| e.event == "GUEST_PANICKED")
        || shutdown_reason.as_deref() == Some("guest-panic")
        || w.console.contains("Kernel panic - not syncing")
    {
        return BootEnd::Panic;
    }
    match shutdown_reason.as_deref() {
        Some("guest-shutdown") => BootEnd::CleanShutdown,
        Some("guest-reset") => BootEnd::GuestReset,
        Some("host-qmp-quit") | Some("host-signal") | Some("host-qmp-system-reset") => BootEnd::HostShutdown,
        Some(other) => BootEnd::Unexplained { detail: format!("SHUTDOWN reason {other}, {}", w.exit) },
        None => BootEnd::Unexplained { detail: format!("no SHUTDOWN event, {}", w.exit) },
    }
}

/// The reason a bootloader would give the next boot
/// (`androidboot.bootreason`, Android's canonical words) after this end.
/// `requested` is what the guest's reboot command asked for (rewindd's
/// `reboot_command` with `{reason}`, left on the share): a guest reset
/// with it is `reboot,<reason>`, one without it a hard reset (sysrq b).
/// None when the end is not understood: no reason is made up.
pub fn next_boot_reason(end: &BootEnd, requested: Option<&str>) -> Option<String> {
    let word = |r: &str| {
        r.trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "_,.:-".contains(c) { c } else { '_' })
            .collect::<String>()
    };
    Some(match end {
        BootEnd::Panic => "kernel_panic".into(),
        BootEnd::WatchdogReset => "watchdog".into(),
        // Power lost, memory included: a cold boot.
        BootEnd::HostPowerCut | BootEnd::HostShutdown => "cold".into(),
        BootEnd::GuestReset => match requested.map(word).filter(|w| !w.is_empty()) {
            Some(w) => format!("reboot,{w}"),
            None => "hard".into(),
        },
        BootEnd::CleanShutdown => "shutdown,userrequested".into(),
        BootEnd::Unexplained { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each end gives the next boot the reason an Android bootloader
    /// reports for it (source.android.com, "Canonical boot reason").
    #[test]
    fn each_end_gives_the_next_boot_its_reason() {
        let r = |end: BootEnd, req: Option<&str>| next_boot_reason(&end, req);
        assert_eq!(r(BootEnd::Panic, None).as_deref(), Some("kernel_panic"));
        assert_eq!(r(BootEnd::WatchdogReset, None).as_deref(), Some("watchdog"));
        assert_eq!(r(BootEnd::HostPowerCut, Some("ignored")).as_deref(), Some("cold"));
        assert_eq!(r(BootEnd::GuestReset, Some("apexd_initiated\n")).as_deref(), Some("reboot,apexd_initiated"));
        assert_eq!(r(BootEnd::GuestReset, Some("two words")).as_deref(), Some("reboot,two_words"));
        assert_eq!(r(BootEnd::GuestReset, None).as_deref(), Some("hard"));
        assert_eq!(r(BootEnd::CleanShutdown, None).as_deref(), Some("shutdown,userrequested"));
        assert_eq!(r(BootEnd::Unexplained { detail: "x".into() }, None), None);
    }

    fn ev(event: &str, data: serde_json::Value) -> QmpEvent {
        QmpEvent { event: event.into(), data, at_ms: 0 }
    }

    fn classify_with(events: &[QmpEvent], console: &str, killed: bool) -> BootEnd {
        classify(&EndWitnesses { events, console, killed_by_host: killed, exit: "exit status: 0" })
    }

    #[test]
    fn each_end_is_told_apart() {
        let reset = ev("SHUTDOWN", json!({"guest": true, "reason": "guest-reset"}));
        let off = ev("SHUTDOWN", json!({"guest": true, "reason": "guest-shutdown"}));
        let wd = ev("WATCHDOG", json!({"action": "reset"}));
        assert_eq!(classify_with(std::slice::from_ref(&off), "", false), BootEnd::CleanShutdown);
        assert_eq!(classify_with(std::slice::from_ref(&reset), "", false), BootEnd::GuestReset);
        assert_eq!(
            classify_with(
                std::slice::from_ref(&reset),
                "\u{1b}[0m[ 3.1] Kernel panic - not syncing: sysrq triggered crash",
                false
            ),
            BootEnd::Panic
        );
        assert_eq!(classify_with(&[ev("GUEST_PANICKED", json!({}))], "", false), BootEnd::Panic);
        assert_eq!(classify_with(&[wd, reset.clone()], "", false), BootEnd::WatchdogReset);
        assert_eq!(classify_with(&[], "", true), BootEnd::HostPowerCut);
        assert_eq!(
            classify_with(&[ev("SHUTDOWN", json!({"guest": false, "reason": "host-qmp-quit"}))], "", false),
            BootEnd::HostShutdown
        );
        assert!(matches!(classify_with(&[], "", false), BootEnd::Unexplained { .. }));
    }
}
