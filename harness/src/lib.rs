//! rewind-harness: boots real kernels in QEMU guests built from a cached
//! kit, injects boot failures, and verifies userdata without trusting
//! rewindd. See `scenario` for how scenarios are written and registered.
//!
//! Code map:
//! - `kit/`      the guest kit: kernel .deb, module selection, initramfs (cpio)
//! - `qemu`      the QEMU command line (one place) and the KVM probe
//! - `qmp`       QMP event listener
//! - `plan`      one boot's plan (mode, failure, workload, commit)
//! - `guest/`    a QEMU guest (`QemuGuest`), its console tail and exec agent
//! - `failure`   how a boot ended (panic, watchdog, power cut, ...)
//! - `target`    the `Target` trait scenarios drive (QEMU; `device/`: adb, Cuttlefish)
//! - `device/`   Android targets: any device over adb, Cuttlefish (launch_cvd/stop_cvd)
//! - `manifest`  file tree manifests of /data and their diff
//! - `report`    JSON and JUnit reports
//! - `bench`     measurements on a running guest (f2fs checkpoint=disable costs)
//! - `scenario/` scenarios (registries by what they prove), their `Needs`, the
//!   one run loop over any `Target`, and `checks` (the shared witnesses)
//! - `campaign/` random power cuts over an update's phases, from a seed (trials, shards, reports)
//! - `logwrites/` dm-log-writes: a phase logged, replayed at its flush points onto copies
//! - `cli`       the `rewind-harness` command line

pub mod android_rc;
pub mod bench;
pub mod campaign;
pub mod cli;
pub mod device;
pub mod failure;
pub mod grpc;
pub mod guest;
pub mod html;
pub mod kit;
pub mod lock;
pub mod logwrites;
pub mod manifest;
pub mod paths;
pub mod plan;
pub mod progress;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod sampler;
pub mod scenario;
pub mod sparse;
pub mod story;
pub mod target;
pub mod timeouts;

pub use guest::{GuestConfig, QemuGuest};
pub use plan::{stage, BootPlan, Failure, FsType, Mode};
pub use target::{BootRecord, ExecOutput, Target, TargetError};
