//! An in-memory device-mapper for host tests. It keeps active/inactive
//! tables and suspension like the kernel and *enforces* the rules rewind
//! must follow, failing the test's operation instead of corrupting data:
//! - a snapshot device is created or removed only while every device using
//!   the same origin (snapshot-origin / snapshot-merge) is suspended;
//! - no two tables use the same COW device;
//! - a device in use as origin/cow by another table cannot be removed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use devicemapper::{Device, DmError, ErrorEnum};

use super::control::{DmControl, DmOpError, Freeze};
use super::target::{Table, Target};

#[derive(Debug, Clone)]
pub struct FakeDev {
    pub dev: Device,
    pub active: Option<Table>,
    pub inactive: Option<Table>,
    pub suspended: bool,
    pub read_only: bool,
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub devs: BTreeMap<String, FakeDev>,
    next_minor: u32,
    /// Every operation, "op name", in order.
    pub log: Vec<String>,
    /// The devices of each suspend that froze a filesystem, in order.
    pub frozen: Vec<String>,
    /// Scripted status lines per device; the last one repeats.
    pub status: HashMap<String, VecDeque<String>>,
    /// "op name" that fails once.
    pub fail: Option<String>,
    /// dm-stats regions per device, as the kernel keeps them on the mapped
    /// device (across table swaps, gone with the device).
    pub stats: HashMap<String, Vec<FakeRegion>>,
    /// `@stats_create` fails from this many creations on (None: never).
    pub stats_create_limit: Option<usize>,
}

/// A dm-stats region of the fake: one area, its sectors written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRegion {
    pub id: u64,
    pub start: u64,
    pub len: u64,
    pub step: u64,
    pub program_id: String,
    pub written: u64,
}

#[derive(Clone, Default)]
pub struct FakeDm {
    pub s: Arc<Mutex<FakeState>>,
}

fn refuse(step: &'static str, device: &str, why: &str) -> DmOpError {
    DmOpError::Ioctl { step, device: device.to_string(), source: DmError::Dm(ErrorEnum::Invalid, why.to_string()) }
}

fn origin_of(t: &Table) -> Option<Device> {
    t.lines.iter().find_map(|l| match &l.params {
        Target::Origin(p) => Some(p.origin),
        Target::Merge(p) => Some(p.origin),
        _ => None,
    })
}

fn snapshot_of(t: &Table) -> Option<(Device, Device)> {
    t.lines.iter().find_map(|l| match &l.params {
        Target::Snapshot(p) | Target::Merge(p) => Some((p.origin, p.cow)),
        _ => None,
    })
}

fn is_plain_snapshot(t: &Table) -> bool {
    t.lines.iter().any(|l| matches!(l.params, Target::Snapshot(_)))
}

impl FakeDm {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.s.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }
    pub fn active(&self, name: &str) -> Option<Table> {
        self.lock().devs.get(name).and_then(|d| d.active.clone())
    }
    pub fn exists(&self, name: &str) -> bool {
        self.lock().devs.contains_key(name)
    }
    pub fn script_status(&self, name: &str, lines: &[&str]) {
        self.lock().status.insert(name.to_string(), lines.iter().map(|s| s.to_string()).collect());
    }
    pub fn fail_once(&self, op: &str) {
        self.lock().fail = Some(op.to_string());
    }
    pub fn regions(&self, name: &str) -> Vec<FakeRegion> {
        self.lock().stats.get(name).cloned().unwrap_or_default()
    }
    /// A write of `sectors` at `start` through the device: counted by every
    /// region it overlaps, for the part inside it, as dm-stats does.
    pub fn write(&self, name: &str, start: u64, sectors: u64) {
        let mut s = self.lock();
        for r in s.stats.get_mut(name).into_iter().flatten() {
            let (a, b) = (start.max(r.start), (start + sectors).min(r.start + r.len));
            r.written += b.saturating_sub(a);
        }
    }

    /// The `@stats_*` messages, with the kernel's output formats.
    fn stats_message(s: &mut FakeState, name: &str, msg: &str) -> Result<Option<String>, DmOpError> {
        let w: Vec<&str> = msg.split_ascii_whitespace().collect();
        let bad = || refuse("message", name, "invalid argument");
        let made = s.stats.values().map(Vec::len).sum::<usize>();
        let limit = s.stats_create_limit;
        let regions = s.stats.entry(name.to_string()).or_default();
        match w.as_slice() {
            ["@stats_create", range, "/1", program] => {
                if limit.is_some_and(|l| made >= l) {
                    return Err(refuse("message", name, "out of memory"));
                }
                let (a, b) = range.split_once('+').ok_or_else(bad)?;
                let (start, len): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                let mut id = 0;
                while regions.iter().any(|r| r.id == id) {
                    id += 1;
                }
                regions.push(FakeRegion { id, start, len, step: len, program_id: program.to_string(), written: 0 });
                regions.sort_by_key(|r| r.id);
                Ok(Some(id.to_string()))
            }
            ["@stats_list", program] => Ok(Some(
                regions
                    .iter()
                    .filter(|r| r.program_id == *program)
                    .map(|r| format!("{}: {}+{} {} {} -\n", r.id, r.start, r.len, r.step, r.program_id))
                    .collect(),
            )),
            ["@stats_print", id] => {
                let id: u64 = id.parse().map_err(|_| bad())?;
                let r = regions.iter().find(|r| r.id == id).ok_or_else(|| refuse("message", name, "no such region"))?;
                Ok(Some(format!("{}+{} 0 0 0 0 {} 0 {} 0 0 0 0 0 0\n", r.start, r.step, r.written / 8, r.written)))
            }
            ["@stats_delete", id] => {
                let id: u64 = id.parse().map_err(|_| bad())?;
                let before = regions.len();
                regions.retain(|r| r.id != id);
                if regions.len() == before {
                    return Err(refuse("message", name, "no such region"));
                }
                Ok(None)
            }
            _ => Err(bad()),
        }
    }

    fn check_fail(s: &mut FakeState, op: &str, name: &str) -> Result<(), DmOpError> {
        let key = format!("{op} {name}");
        s.log.push(key.clone());
        if s.fail.as_deref() == Some(key.as_str()) {
            s.fail = None;
            return Err(refuse("injected", name, "injected failure"));
        }
        Ok(())
    }

    /// Kernel rule: loading/unloading a snapshot needs its origin users
    /// suspended.
    fn origin_users_suspended(s: &FakeState, origin: Device, except: &str) -> bool {
        s.devs.iter().filter(|(n, _)| n.as_str() != except).all(|(_, d)| {
            let uses = d.active.as_ref().and_then(origin_of) == Some(origin);
            !uses || d.suspended
        })
    }

    fn cow_users(s: &FakeState, cow: Device, except: &str) -> usize {
        s.devs
            .iter()
            .filter(|(n, _)| n.as_str() != except)
            .filter(|(_, d)| {
                [d.active.as_ref(), d.inactive.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|t| snapshot_of(t).map(|x| x.1) == Some(cow))
            })
            .count()
    }
}

impl DmControl for FakeDm {
    fn device(&self, name: &str) -> Result<Option<Device>, DmOpError> {
        Ok(self.lock().devs.get(name).map(|d| d.dev))
    }

    fn create(&self, name: &str, table: &Table, read_only: bool) -> Result<Device, DmOpError> {
        let mut s = self.lock();
        Self::check_fail(&mut s, "create", name)?;
        table.check().map_err(|p| refuse("create", name, &p))?;
        if s.devs.contains_key(name) {
            return Err(refuse("create", name, "exists"));
        }
        if let Some((origin, cow)) = snapshot_of(table) {
            if is_plain_snapshot(table) && !Self::origin_users_suspended(&s, origin, name) {
                return Err(refuse("create", name, "KERNEL RULE: origin not suspended while loading a snapshot"));
            }
            if Self::cow_users(&s, cow, name) > 0 {
                return Err(refuse("create", name, "COW device already in use"));
            }
        }
        s.next_minor += 1;
        let dev = Device { major: 254, minor: s.next_minor };
        s.devs.insert(
            name.to_string(),
            FakeDev { dev, active: Some(table.clone()), inactive: None, suspended: false, read_only },
        );
        Ok(dev)
    }

    fn load(&self, name: &str, table: &Table) -> Result<(), DmOpError> {
        let mut s = self.lock();
        Self::check_fail(&mut s, "load", name)?;
        table.check().map_err(|p| refuse("load", name, &p))?;
        if let Some((_, cow)) = snapshot_of(table) {
            if Self::cow_users(&s, cow, name) > 0 {
                return Err(refuse("load", name, "COW device already in use by another table"));
            }
        }
        let d = s.devs.get_mut(name).ok_or_else(|| refuse("load", name, "no such device"))?;
        d.inactive = Some(table.clone());
        Ok(())
    }

    fn suspend(&self, name: &str, freeze: Freeze) -> Result<(), DmOpError> {
        let mut s = self.lock();
        Self::check_fail(&mut s, "suspend", name)?;
        let d = s.devs.get_mut(name).ok_or_else(|| refuse("suspend", name, "no such device"))?;
        d.suspended = true;
        if freeze == Freeze::Filesystem {
            s.frozen.push(name.to_string());
        }
        Ok(())
    }

    fn resume(&self, name: &str) -> Result<(), DmOpError> {
        let mut s = self.lock();
        Self::check_fail(&mut s, "resume", name)?;
        let d = s.devs.get_mut(name).ok_or_else(|| refuse("resume", name, "no such device"))?;
        if let Some(t) = d.inactive.take() {
            // Swapping a snapshot-merge in (it loads a snapshot) needs the
            // device itself suspended, which it is while resuming.
            if !d.suspended && d.active.is_some() {
                return Err(refuse("resume", name, "table swap on a device that was not suspended"));
            }
            d.active = Some(t);
        }
        d.suspended = false;
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), DmOpError> {
        let mut s = self.lock();
        Self::check_fail(&mut s, "remove", name)?;
        let d = s.devs.get(name).cloned().ok_or_else(|| refuse("remove", name, "no such device"))?;
        let in_use = s.devs.iter().filter(|(n, _)| n.as_str() != name).any(|(_, o)| {
            [o.active.as_ref(), o.inactive.as_ref()].into_iter().flatten().any(|t| {
                t.lines.iter().any(|l| match &l.params {
                    Target::Linear(p) => p.device == d.dev,
                    Target::Origin(p) => p.origin == d.dev,
                    Target::Snapshot(p) | Target::Merge(p) => p.origin == d.dev || p.cow == d.dev,
                })
            })
        });
        if in_use {
            return Err(refuse("remove", name, "device in use"));
        }
        if let Some(t) = d.active.as_ref() {
            if is_plain_snapshot(t) {
                if let Some((origin, _)) = snapshot_of(t) {
                    if !Self::origin_users_suspended(&s, origin, name) {
                        return Err(refuse(
                            "remove",
                            name,
                            "KERNEL RULE: origin not suspended while unloading a snapshot",
                        ));
                    }
                }
            }
        }
        s.devs.remove(name);
        s.stats.remove(name);
        Ok(())
    }

    fn table(&self, name: &str) -> Result<Table, DmOpError> {
        let s = self.lock();
        s.devs.get(name).and_then(|d| d.active.clone()).ok_or_else(|| refuse("table", name, "no such device"))
    }

    fn status(&self, name: &str) -> Result<Vec<String>, DmOpError> {
        let mut s = self.lock();
        if !s.devs.contains_key(name) {
            return Err(refuse("status", name, "no such device"));
        }
        let line = match s.status.get_mut(name) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap_or_default(),
            Some(q) => q.front().cloned().unwrap_or_default(),
            None => "16/2048 16".to_string(),
        };
        Ok(vec![line])
    }

    fn message(&self, name: &str, msg: &str) -> Result<Option<String>, DmOpError> {
        let mut s = self.lock();
        Self::check_fail(&mut s, "message", name)?;
        if !s.devs.contains_key(name) {
            return Err(refuse("message", name, "no such device"));
        }
        Self::stats_message(&mut s, name, msg)
    }
}
