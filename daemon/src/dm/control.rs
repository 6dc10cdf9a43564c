//! The one place where device-mapper ioctls happen ([`KernelDm`], over
//! devicemapper-rs's `DM`), behind the [`DmControl`] trait so the stack
//! logic above it is host-testable with a fake.

use std::sync::Mutex;

use devicemapper::{DevId, Device, DmFlags, DmName, DmOptions, TargetTable, DM};

use super::status::{SnapshotStatus, StatusParseError};
use super::target::Table;

#[derive(Debug, thiserror::Error)]
pub enum DmOpError {
    #[error("Cannot open device-mapper control")]
    Open(#[source] devicemapper::DmError),
    #[error("dm {step} failed on {device}")]
    Ioctl {
        step: &'static str,
        device: String,
        #[source]
        source: devicemapper::DmError,
    },
    #[error("Bad dm device name '{0}'")]
    Name(String),
    #[error("Refusing to load a malformed table into {device}: {problem}")]
    BadTable { device: String, problem: String },
    #[error("Kernel table of {device} is not the expected one: kernel has '{kernel}', wanted '{wanted}'")]
    TableMismatch { device: String, kernel: String, wanted: String },
    #[error("Unexpected status of {device}: {lines} target lines")]
    StatusShape { device: String, lines: usize },
    #[error("Status of {device}")]
    Status {
        device: String,
        #[source]
        source: StatusParseError,
    },
}

/// Whether a suspend also freezes a filesystem mounted on the device (dm's
/// lockfs: the filesystem is synced and held consistent until the resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// Where a snapshot is taken while a filesystem may be mounted (an arm
    /// in a userspace reboot): the store's starting point must hold what
    /// the filesystem has written.
    Filesystem,
    /// Table swaps that change no byte the filesystem reads (a finished
    /// merge to linear, a commit dropping the snapshot), or that happen
    /// before it is mounted. Why not freeze anyway: a freeze counts against
    /// the block device even with nothing mounted, and a mount that starts
    /// meanwhile fails with EBUSY ("Can't mount, blockdev is frozen",
    /// verified in the guest kernel). The end of a background merge, swapped
    /// from rewindd's poll while init mounts /data, hit exactly that.
    No,
}

/// Device-mapper operations rewind uses, by device name.
pub trait DmControl: Send {
    /// The device number, if the device exists.
    fn device(&self, name: &str) -> Result<Option<Device>, DmOpError>;
    /// Creates the device, loads `table` and resumes it.
    fn create(&self, name: &str, table: &Table, read_only: bool) -> Result<Device, DmOpError>;
    /// Loads `table` into the inactive slot (active after the next resume).
    fn load(&self, name: &str, table: &Table) -> Result<(), DmOpError>;
    /// Suspends I/O (in-flight I/O completes, new I/O waits for the
    /// resume); `freeze` says whether a filesystem mounted on it is frozen
    /// too.
    fn suspend(&self, name: &str, freeze: Freeze) -> Result<(), DmOpError>;
    fn resume(&self, name: &str) -> Result<(), DmOpError>;
    fn remove(&self, name: &str) -> Result<(), DmOpError>;
    /// The active table.
    fn table(&self, name: &str) -> Result<Table, DmOpError>;
    /// Status text of each target line.
    fn status(&self, name: &str) -> Result<Vec<String>, DmOpError>;
    /// Sends a message to the device (sector 0); dm core answers the
    /// `@stats_*` ones itself (`dm::stats`). The answer, if any.
    fn message(&self, name: &str, msg: &str) -> Result<Option<String>, DmOpError>;
    /// The active table as the kernel prints it, for devices rewind did
    /// not build (a crypt layer over the top device): (start, length,
    /// type, params). Params may hold a key: never log them.
    fn raw_table(&self, name: &str) -> Result<Vec<(u64, u64, String, String)>, DmOpError> {
        Ok(self
            .table(name)?
            .lines
            .iter()
            .map(|l| {
                let text = l.params.to_string();
                let (kind, params) = text.split_once(' ').unwrap_or((&text, ""));
                (*l.start, *l.length, kind.to_string(), params.to_string())
            })
            .collect())
    }
}

fn dm_name(name: &str) -> Result<&DmName, DmOpError> {
    DmName::new(name).map_err(|_| DmOpError::Name(name.to_string()))
}

/// The real kernel interface. The `DM` handle is behind a mutex so one ioctl
/// runs at a time (the engine serialises anyway).
pub struct KernelDm {
    dm: Mutex<DM>,
}

impl KernelDm {
    /// Opens /dev/mapper/control (/dev/device-mapper on Android).
    pub fn open() -> Result<KernelDm, DmOpError> {
        Ok(KernelDm { dm: Mutex::new(DM::new().map_err(DmOpError::Open)?) })
    }

    fn with<T>(
        &self,
        step: &'static str,
        name: &str,
        f: impl FnOnce(&DM, &DmName) -> Result<T, devicemapper::DmError>,
    ) -> Result<T, DmOpError> {
        let n = dm_name(name)?;
        let dm = self.dm.lock().unwrap_or_else(|p| p.into_inner());
        f(&dm, n).map_err(|source| DmOpError::Ioctl { step, device: name.to_string(), source })
    }
}

impl DmControl for KernelDm {
    fn device(&self, name: &str) -> Result<Option<Device>, DmOpError> {
        let n = dm_name(name)?;
        let dm = self.dm.lock().unwrap_or_else(|p| p.into_inner());
        let list =
            dm.list_devices().map_err(|source| DmOpError::Ioctl { step: "list", device: name.to_string(), source })?;
        Ok(list.into_iter().find(|(dn, _, _)| **dn == *n).map(|(_, dev, _)| dev))
    }

    fn create(&self, name: &str, table: &Table, read_only: bool) -> Result<Device, DmOpError> {
        table.check().map_err(|problem| DmOpError::BadTable { device: name.to_string(), problem })?;
        let info = self.with("create", name, |dm, n| {
            let opts =
                if read_only { DmOptions::default().set_flags(DmFlags::DM_READONLY) } else { DmOptions::default() };
            dm.device_create(n, None, opts)
        })?;
        let id_load = self.with("load", name, |dm, n| {
            let opts =
                if read_only { DmOptions::default().set_flags(DmFlags::DM_READONLY) } else { DmOptions::default() };
            dm.table_load(&DevId::Name(n), &table.to_raw_table(), opts)
        });
        if let Err(e) = id_load {
            // Do not leave an empty device behind; the load error is the one
            // worth reporting.
            let _ = self.remove(name);
            return Err(e);
        }
        self.resume(name)?;
        Ok(info.device())
    }

    fn load(&self, name: &str, table: &Table) -> Result<(), DmOpError> {
        table.check().map_err(|problem| DmOpError::BadTable { device: name.to_string(), problem })?;
        self.with("load", name, |dm, n| dm.table_load(&DevId::Name(n), &table.to_raw_table(), DmOptions::default()))
            .map(|_| ())
    }

    fn suspend(&self, name: &str, freeze: Freeze) -> Result<(), DmOpError> {
        let flags = match freeze {
            Freeze::Filesystem => DmFlags::DM_SUSPEND,
            Freeze::No => DmFlags::DM_SUSPEND | DmFlags::DM_SKIP_LOCKFS,
        };
        self.with("suspend", name, |dm, n| dm.device_suspend(&DevId::Name(n), DmOptions::default().set_flags(flags)))
            .map(|_| ())
    }

    fn resume(&self, name: &str) -> Result<(), DmOpError> {
        self.with("resume", name, |dm, n| dm.device_suspend(&DevId::Name(n), DmOptions::default())).map(|_| ())
    }

    fn remove(&self, name: &str) -> Result<(), DmOpError> {
        self.with("remove", name, |dm, n| dm.device_remove(&DevId::Name(n), DmOptions::default())).map(|_| ())
    }

    fn table(&self, name: &str) -> Result<Table, DmOpError> {
        let raw = self.with("table", name, |dm, n| {
            dm.table_status(&DevId::Name(n), DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE))
        })?;
        Table::from_raw_table(&raw.1).map_err(|source| DmOpError::Ioctl {
            step: "parse table",
            device: name.to_string(),
            source,
        })
    }

    fn raw_table(&self, name: &str) -> Result<Vec<(u64, u64, String, String)>, DmOpError> {
        let raw = self.with("table", name, |dm, n| {
            dm.table_status(&DevId::Name(n), DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE))
        })?;
        Ok(raw.1)
    }

    fn status(&self, name: &str) -> Result<Vec<String>, DmOpError> {
        // DM_NOFLUSH: do not flush the COW store's metadata just to read
        // counters (the space watch polls every second).
        let raw = self.with("status", name, |dm, n| {
            dm.table_status(&DevId::Name(n), DmOptions::default().set_flags(DmFlags::DM_NOFLUSH))
        })?;
        Ok(raw.1.into_iter().map(|(_, _, _, s)| s).collect())
    }

    fn message(&self, name: &str, msg: &str) -> Result<Option<String>, DmOpError> {
        self.with("message", name, |dm, n| dm.target_msg(&DevId::Name(n), None, msg)).map(|(_, out)| out)
    }
}

/// Status of a one-line snapshot or snapshot-merge device.
pub fn snapshot_status(dm: &dyn DmControl, name: &str) -> Result<SnapshotStatus, DmOpError> {
    let lines = dm.status(name)?;
    match lines.as_slice() {
        [one] => SnapshotStatus::parse(one).map_err(|source| DmOpError::Status { device: name.to_string(), source }),
        _ => Err(DmOpError::StatusShape { device: name.to_string(), lines: lines.len() }),
    }
}

/// What [`ensure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created(Device),
    Existed(Device),
}

impl Ensured {
    pub fn device(self) -> Device {
        match self {
            Ensured::Created(d) | Ensured::Existed(d) => d,
        }
    }
}

/// Create or verify: if `name` exists its kernel table must equal `wanted`
/// (nothing is touched otherwise); if not, it is created with `wanted`.
pub fn ensure(dm: &dyn DmControl, name: &str, wanted: &Table, read_only: bool) -> Result<Ensured, DmOpError> {
    match dm.device(name)? {
        Some(dev) => {
            let kernel = dm.table(name)?;
            if &kernel != wanted {
                return Err(DmOpError::TableMismatch {
                    device: name.to_string(),
                    kernel: kernel.to_string().trim_end().replace('\n', "; "),
                    wanted: wanted.to_string().trim_end().replace('\n', "; "),
                });
            }
            Ok(Ensured::Existed(dev))
        }
        None => Ok(Ensured::Created(dm.create(name, wanted, read_only)?)),
    }
}
