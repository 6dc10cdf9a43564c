//! Named timeouts, derived from measured TCG boot times on the 2-core
//! development machines (see the comments), and `wait_until` for polling.

use std::time::{Duration, Instant};

/// Boot to `ready` (raw plan, PVH kernel, TCG) measured: median 5.3 s alone
/// (`rewind-harness bench`), 8-15 s beside a second guest and a cargo
/// build; rewind plans add rewindd's start and prepare-userdata (~1 s, a
/// rollback merge of 10 MiB 0.5 s). Ten times the loaded figure, because a
/// CI machine can be slower still.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A boot whose end is expected (injected failure): the boot, the failure,
/// and a watchdog period (a hang is reset 10.1 s after it starts, measured).
pub const BOOT_END_TIMEOUT: Duration = Duration::from_secs(150);

/// i6300esb timeout the guest arms, seconds. Short so a hang is caught fast,
/// long enough that a busy TCG guest still feeds it (busybox feeds every 1 s).
pub const WATCHDOG_SECS: u32 = 10;

/// One command in the guest (mkfs, fsck, a manifest of /data).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(300);

/// A clean poweroff (umount + sync + ACPI off).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// Waiting for one of the machine-wide guest slots.
pub const SLOT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Poll period of console/QMP/agent waits.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_value_or_gives_up() {
        let mut n = 0;
        assert_eq!(
            wait_until(Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
        assert_eq!(wait_until(Duration::from_millis(10), || None::<()>), None);
    }
}
