//! Device-mapper events, so the space watch need not wait for its next tick
//! to see a snapshot the kernel has just given up on.
//!
//! Why: when a write to the COW store fails (an I/O error, or a full
//! store), the kernel marks the snapshot `Invalid` in memory and tries to
//! write the store's header invalid, which a failing device cannot take.
//! Until rewindd records the loss on /metadata, a power cut leaves a store
//! that reads valid and would be merged into a mix of the baseline and the
//! attempt. Polled every `space.poll_interval_ms` (1 s), that window was up
//! to a second; the kernel raises a dm event on the invalidation (and on a
//! merge that stops), so a watcher woken by it shrinks the window to the
//! time the watch takes to look and write the record.
//!
//! How (the devicemapper crate's documented pattern, Linux 4.14+): the
//! control fd polls readable after any dm event since it was last armed;
//! re-arm first, then compare each device's `event_nr` with the last seen.
//! Global events also come from device creation, removal and resume, which
//! rewindd causes itself and which change no device's `event_nr`; only a
//! changed `event_nr` of one of rewindd's own devices wakes the watch.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use devicemapper::DM;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Each device's last `event_nr`, by name.
pub type EventNrs = BTreeMap<String, u32>;

/// How often the watcher looks at `stop` while no event comes.
const STOP_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("Cannot open device-mapper control for events")]
    Open(#[source] devicemapper::DmError),
    #[error("This kernel's device-mapper gives no event numbers (DM 4.37, Linux 4.14, is needed)")]
    NoEventNumbers,
    #[error("dm {step} failed while watching for events")]
    Ioctl {
        step: &'static str,
        #[source]
        source: devicemapper::DmError,
    },
    #[error("Polling the device-mapper control fd")]
    Poll(#[source] nix::Error),
}

/// The devices of `now` named `{prefix}-…` whose `event_nr` differs from
/// `before` (or that are new with an event already raised).
pub fn changed(before: &EventNrs, now: &EventNrs, prefix: &str) -> Vec<String> {
    let own = format!("{prefix}-");
    now.iter()
        .filter(|(name, nr)| name.starts_with(&own) && before.get(*name).map_or(**nr != 0, |b| b != *nr))
        .map(|(name, _)| name.clone())
        .collect()
}

fn event_nrs(dm: &DM) -> Result<EventNrs, EventError> {
    let list = dm.list_devices().map_err(|source| EventError::Ioctl { step: "list devices", source })?;
    let mut nrs = EventNrs::new();
    for (name, _, nr) in list {
        nrs.insert(name.to_string(), nr.ok_or(EventError::NoEventNumbers)?);
    }
    Ok(nrs)
}

/// Blocks, calling `wake` with the names of rewindd's devices (`prefix`)
/// that raised an event, until `stop` is set. An error ends the watch (the
/// caller logs it; the space watch's ticks go on without it).
pub fn watch(prefix: &str, stop: &AtomicBool, mut wake: impl FnMut(&[String])) -> Result<(), EventError> {
    let dm = DM::new().map_err(EventError::Open)?;
    let mut seen = event_nrs(&dm)?;
    dm.arm_poll().map_err(|source| EventError::Ioctl { step: "arm poll", source })?;
    let timeout = PollTimeout::try_from(STOP_CHECK.as_millis() as i32).unwrap_or(PollTimeout::NONE);
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(dm.file().as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(EventError::Poll(e)),
        }
        // Re-arm before looking, so an event raised while we look is not lost.
        dm.arm_poll().map_err(|source| EventError::Ioctl { step: "arm poll", source })?;
        let now = event_nrs(&dm)?;
        let names = changed(&seen, &now, prefix);
        seen = now;
        if !names.is_empty() {
            wake(&names);
        }
    }
    Ok(())
}

/// [`watch`] on its own thread; the returned flag stops it (within
/// [`STOP_CHECK`]).
pub fn spawn(
    prefix: String,
    wake: impl FnMut(&[String]) + Send + 'static,
    on_end: impl FnOnce(Result<(), EventError>) + Send + 'static,
) -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new().name("dm-events".into()).spawn(move || on_end(watch(&prefix, &flag, wake)))?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nrs(v: &[(&str, u32)]) -> EventNrs {
        v.iter().map(|(n, e)| (n.to_string(), *e)).collect()
    }

    #[test]
    fn only_rewinds_own_devices_with_a_new_event_number_wake_the_watch() {
        let before = nrs(&[("rewind-userdata", 0), ("rewind-userdata-cow", 0), ("system_a-verity", 3)]);
        // Nothing changed: a resume or a creation elsewhere raised the
        // global event only.
        assert!(changed(&before, &before, "rewind").is_empty());
        // Another device's event is not ours.
        let other = nrs(&[("rewind-userdata", 0), ("rewind-userdata-cow", 0), ("system_a-verity", 4)]);
        assert!(changed(&before, &other, "rewind").is_empty());
        // The snapshot invalidated: its event number moved.
        let invalid = nrs(&[("rewind-userdata", 1), ("rewind-userdata-cow", 0), ("system_a-verity", 3)]);
        assert_eq!(changed(&before, &invalid, "rewind"), vec!["rewind-userdata".to_string()]);
        // A device created since, with an event already raised, counts; one
        // created quiet does not.
        let new = nrs(&[("rewind-userdata", 0), ("rewind-userdata-cow", 0), ("rewind-metadata", 2), ("rewind-x", 0)]);
        assert_eq!(changed(&before, &new, "rewind"), vec!["rewind-metadata".to_string()]);
        // The prefix is matched with its dash: "rewindx-…" is someone else's.
        let lookalike = nrs(&[("rewindx-userdata", 9)]);
        assert!(changed(&EventNrs::new(), &lookalike, "rewind").is_empty());
    }
}
