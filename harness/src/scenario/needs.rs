//! What a scenario needs from its machine: a field of the scenario, set in
//! its registry, applied by `run` when it builds the QEMU guest and shown
//! by `rewind-harness scenario --list`.

use crate::plan::FsType;

use super::Options;

/// A scenario's own baseline and workload scripts (their text), run in
/// place of harness/workloads/ (`--baseline` / `--workload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scripts {
    pub baseline: &'static str,
    pub workload: &'static str,
}

/// What a scenario needs. Registries start from [`Needs::NOTHING`] or
/// [`Needs::DAEMON`] and add fields: `Needs { fs: Some(FsType::F2fs),
/// ..Needs::DAEMON }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Drives rewindd (rewind boots); `scenario --all` runs it only with
    /// `--with-daemon`.
    pub daemon: bool,
    /// Written for this filesystem only: the run uses it whatever `--fs`
    /// says. None: it runs on either (the witnesses follow the target's).
    pub fs: Option<FsType>,
    /// /data over a dm-crypt layer (Android's metadata encryption, ext4).
    pub metadata_encryption: bool,
    /// The QEMU guest restricted to what a device can do
    /// (`device::profile`): the scenarios a device runs.
    pub device_profile: bool,
    /// A userdata disk of at least this many MiB (a merge long enough to
    /// cut); `--userdata-mib` may ask for more.
    pub userdata_mib: Option<u64>,
    /// Host programs the guest must carry (found on PATH, added with their
    /// shared libraries, as `--guest-tool`).
    pub guest_tools: &'static [&'static str],
    /// Its own baseline and workload scripts.
    pub scripts: Option<Scripts>,
}

impl Needs {
    /// The harness and the kernel alone (raw plans).
    pub const NOTHING: Needs = Needs {
        daemon: false,
        fs: None,
        metadata_encryption: false,
        device_profile: false,
        userdata_mib: None,
        guest_tools: &[],
        scripts: None,
    };
    /// A working rewindd, nothing else.
    pub const DAEMON: Needs = Needs { daemon: true, ..Needs::NOTHING };

    /// `options` with what this scenario needs forced in (the flags a user
    /// gave stay where the scenario needs nothing).
    pub fn apply(&self, options: &Options) -> Options {
        let mut o = options.clone();
        o.metadata_encryption |= self.metadata_encryption;
        o.device_profile |= self.device_profile;
        if let Some(fs) = self.fs {
            o.fs = fs;
        }
        o.userdata_mib = o.userdata_mib.max(self.userdata_mib);
        o
    }

    /// "rewindd, f2fs only, ..." for `--list`; empty when it needs nothing.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.daemon {
            parts.push("rewindd".into());
        }
        if let Some(fs) = self.fs {
            parts.push(format!("{fs} only"));
        }
        if self.metadata_encryption {
            parts.push("metadata encryption".into());
        }
        if self.device_profile {
            parts.push("device profile".into());
        }
        if let Some(mib) = self.userdata_mib {
            parts.push(format!("userdata >= {mib} MiB"));
        }
        parts.extend(self.guest_tools.iter().map(|t| format!("host tool {t}")));
        if self.scripts.is_some() {
            parts.push("its own scripts".into());
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_force_what_they_name_and_leave_the_rest() {
        let asked = Options { fs: FsType::Ext4, userdata_mib: Some(2048), keep: true, ..Options::default() };
        let o = Needs::DAEMON.apply(&asked);
        assert_eq!((o.fs, o.userdata_mib, o.keep, o.metadata_encryption), (FsType::Ext4, Some(2048), true, false));
        let big = Needs { fs: Some(FsType::F2fs), userdata_mib: Some(1024), device_profile: true, ..Needs::DAEMON };
        let o = big.apply(&Options::default());
        assert_eq!((o.fs, o.userdata_mib, o.device_profile), (FsType::F2fs, Some(1024), true));
        // At least 1024 MiB: a bigger disk asked for stays.
        assert_eq!(big.apply(&asked).userdata_mib, Some(2048));
        let crypt = Needs { metadata_encryption: true, ..Needs::DAEMON };
        assert!(crypt.apply(&Options::default()).metadata_encryption);
    }

    #[test]
    fn list_says_what_a_scenario_needs() {
        assert_eq!(Needs::NOTHING.describe(), "");
        assert_eq!(Needs::DAEMON.describe(), "rewindd");
        let n = Needs { fs: Some(FsType::F2fs), userdata_mib: Some(1024), guest_tools: &["xz"], ..Needs::DAEMON };
        assert_eq!(n.describe(), "rewindd, f2fs only, userdata >= 1024 MiB, host tool xz");
    }
}
