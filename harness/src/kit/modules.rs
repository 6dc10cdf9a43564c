//! Kernel module selection: which .ko files go into the guest and in which
//! order init loads them (plain `insmod`, deps first). Resolved from the
//! `modules.dep` that `depmod -b` writes for the unpacked kernel package.

use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("Kernel module {name} is neither a module nor built in (modules.dep)")]
    NotFound { name: String },
    #[error("Dependency cycle through kernel module {name}")]
    Cycle { name: String },
}

/// What the guest needs, in the order the soft dependencies must come:
/// modules.dep has no soft deps, so checksum and compressor providers that
/// ext4/f2fs look up by name at mount time are listed before them.
pub const REQUIRED_MODULES: &[&str] = &[
    // crc32c for ext4/jbd2 metadata checksums; crc32 for f2fs.
    "crc32c_generic",
    "crc32_generic",
    "virtio_ring",
    "virtio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "i6300esb",
    "dm_mod",
    "dm_bufio",
    "dm_snapshot",
    "dm_flakey",
    "dm_log_writes",
    "dm_delay",
    // The metadata-encryption guest option stacks dm-crypt aes-xts-plain64
    // on /data's device: xts wraps ecb(aes) (aes_generic is built in), and
    // the crypto API's module autoload has no modprobe in the guest.
    "ecb",
    "xts",
    "dm_crypt",
    "ext4",
    // f2fs compression algorithms, looked up through the crypto API.
    "lz4",
    "zstd",
    "f2fs",
];

/// Nice to have: a missing one is skipped.
pub const OPTIONAL_MODULES: &[&str] = &[
    // Turns a guest kernel panic into a QMP GUEST_PANICKED event, a second
    // witness beside the console's "Kernel panic".
    "pvpanic",
    "pvpanic_pci",
    // The guest's entropy: rewindd's std HashMaps ask getrandom early.
    "virtio_rng",
];

/// Module name as the kernel spells it: basename, no extension, '-' -> '_'.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base
        .strip_suffix(".ko.xz")
        .or_else(|| base.strip_suffix(".ko.zst"))
        .or_else(|| base.strip_suffix(".ko.gz"))
        .or_else(|| base.strip_suffix(".ko"))
        .unwrap_or(base);
    stem.replace('-', "_")
}

/// Parsed `modules.dep` + `modules.builtin`.
#[derive(Debug, Default)]
pub struct ModuleDb {
    /// name -> (path relative to lib/modules/<ver>, direct+transitive deps as names)
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl ModuleDb {
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Self {
        let mut modules = HashMap::new();
        for line in modules_dep.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(path), (path.to_string(), deps));
        }
        let builtin = modules_builtin.lines().map(str::trim).filter(|l| !l.is_empty()).map(module_name).collect();
        ModuleDb { modules, builtin }
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&name.replace('-', "_"))
    }

    /// Module paths in load order: every module after all of its deps, the
    /// wanted order kept otherwise. Built-in modules are satisfied as is.
    pub fn resolve(&self, required: &[&str], optional: &[&str]) -> Result<Vec<String>, ModuleError> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        let mut visiting = HashSet::new();
        for name in required {
            self.visit(&name.replace('-', "_"), &mut order, &mut done, &mut visiting)?;
        }
        for name in optional {
            let name = name.replace('-', "_");
            if self.modules.contains_key(&name) {
                self.visit(&name, &mut order, &mut done, &mut visiting)?;
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        order: &mut Vec<String>,
        done: &mut HashSet<String>,
        visiting: &mut HashSet<String>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) {
            return Ok(());
        }
        let Some((path, deps)) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                done.insert(name.to_string());
                return Ok(());
            }
            return Err(ModuleError::NotFound { name: name.to_string() });
        };
        if !visiting.insert(name.to_string()) {
            return Err(ModuleError::Cycle { name: name.to_string() });
        }
        // modprobe loads the listed deps last-to-first; do the same so the
        // order matches what a real system does.
        for dep in deps.iter().rev() {
            self.visit(dep, order, done, visiting)?;
        }
        visiting.remove(name);
        done.insert(name.to_string());
        order.push(path.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-snapshot.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
";
    const BUILTIN: &str = "kernel/lib/zstd/zstd_decompress.ko\nkernel/drivers/char/mem.ko\n";

    fn pos(order: &[String], suffix: &str) -> usize {
        order.iter().position(|p| p.ends_with(suffix)).unwrap_or_else(|| panic!("{suffix} missing"))
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(module_name("kernel/drivers/md/dm-mod.ko"), "dm_mod");
        assert_eq!(module_name("kernel/fs/f2fs/f2fs.ko.xz"), "f2fs");
        assert_eq!(module_name("9pnet_virtio.ko"), "9pnet_virtio");
    }

    #[test]
    fn deps_come_before_their_users() {
        let db = ModuleDb::parse(DEP, BUILTIN);
        let order = db.resolve(&["crc32c_generic", "dm-snapshot", "virtio_blk", "ext4"], &[]).unwrap();
        assert!(pos(&order, "virtio_ring.ko") < pos(&order, "/virtio.ko"));
        assert!(pos(&order, "/virtio.ko") < pos(&order, "virtio_blk.ko"));
        assert!(pos(&order, "dm-mod.ko") < pos(&order, "dm-bufio.ko"));
        assert!(pos(&order, "dm-bufio.ko") < pos(&order, "dm-snapshot.ko"));
        assert!(pos(&order, "jbd2.ko") < pos(&order, "ext4.ko"));
        // The soft dep, listed first, stays first.
        assert_eq!(pos(&order, "crc32c_generic.ko"), 0);
        // Each module once.
        let unique: HashSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len());
    }

    #[test]
    fn builtins_are_satisfied_and_unknowns_fail() {
        let db = ModuleDb::parse(DEP, BUILTIN);
        assert_eq!(db.resolve(&["zstd_decompress"], &[]).unwrap(), Vec::<String>::new());
        assert!(matches!(db.resolve(&["dm_bow"], &[]), Err(ModuleError::NotFound { .. })));
        // Optional unknowns are skipped.
        assert!(db.resolve(&[], &["dm_bow"]).unwrap().is_empty());
    }

    #[test]
    fn cycles_are_reported() {
        let db = ModuleDb::parse("a.ko: b.ko\nb.ko: a.ko\n", "");
        assert!(matches!(db.resolve(&["a"], &[]), Err(ModuleError::Cycle { .. })));
    }
}
