//! A QEMU guest built from the kit: disks that persist across the boots of
//! one scenario (one run directory), one QEMU process per boot, its own
//! process group, killed and reaped on drop.

pub mod agent;
pub mod console;
pub mod contract;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::failure::{self, BootEnd, EndWitnesses};
use crate::kit::cpio::Archive;
use crate::kit::{self, project, Kit};
use crate::lock::{self, FileLock};
use crate::plan::{stage, BootPlan, Failure, FsType, Mode};
use crate::qemu::{self, Accel, Console, Disk, QemuConfig};
use crate::qmp::QmpListener;
use crate::target::{io_err, BootRecord, ExecOutput, Target, TargetError};
use crate::timeouts;

use self::agent::Agent;
use self::console::{ConsoleTail, Marker};

/// The guest init (PID 1), a busybox shell script.
pub const INIT_SCRIPT: &str = include_str!("init.sh");
/// rewindd's reboot command in the guest: leaves the reason on the share.
pub const REBOOT_SCRIPT: &str = include_str!("reboot.sh");
/// A bootctl stand-in: the boot slot's flag on the share.
pub const BOOTCTL_SCRIPT: &str = include_str!("bootctl.sh");
/// The clean shutdown: the .rc's `on shutdown` steps, then the unmounts.
pub const SHUTDOWN_SCRIPT: &str = include_str!("shutdown.sh");
/// Share paths the two scripts use (under the share's `boot/`).
pub const SHARE_REBOOT_REASON: &str = "boot/reboot-reason";
pub const SHARE_SLOT_MARKED: &str = "boot/slot-marked";
/// Default "old system" data and "new system" migration.
pub const DEFAULT_BASELINE: &str = include_str!("../../workloads/baseline.sh");
pub const DEFAULT_WORKLOAD: &str = include_str!("../../workloads/update.sh");

/// Guest paths of the scenario scripts (on the 9p share).
pub const GUEST_BASELINE: &str = "/host/scripts/baseline.sh";
pub const GUEST_WORKLOAD: &str = "/host/scripts/workload.sh";

/// A guest is data: what to boot, built with `with_*` methods.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Names the run directory and the progress lines.
    pub name: String,
    pub fs: FsType,
    pub userdata_mib: u64,
    pub metadata_mib: u64,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Script that fills userdata before the checkpoint (default: harness/workloads/baseline.sh).
    pub baseline: Option<PathBuf>,
    /// Script run by each boot of the "new system" (default: harness/workloads/update.sh).
    pub workload: Option<PathBuf>,
    /// Extra host programs (with their libraries) put in the guest's /usr/local/bin.
    pub guest_tools: Vec<PathBuf>,
    /// Keep the run directory (images, logs) after the guest is dropped.
    pub keep: bool,
    /// Emulate Android's metadata encryption: the guest init stacks a
    /// dm-crypt device (aes-xts-plain64, a key per run) on whatever /data
    /// comes from and mounts /data from it (ext4 only).
    pub metadata_encryption: bool,
    /// No per-boot log lines on stderr (the demo prints its own story).
    pub quiet: bool,
    /// Log each boot's QEMU command line on stderr (it is always in
    /// `qemu.cmdline` and the report).
    pub show_command_line: bool,
    /// Follow rewindd's WatchStatus during each rewind boot (from the
    /// host, through the forwarded port) and keep the samples in the boot
    /// records (`sampler`); off unless a report asks for it, since it is
    /// one more client of rewindd and a little guest CPU.
    pub sample_status: bool,
}

impl GuestConfig {
    pub fn new(name: &str) -> Self {
        GuestConfig {
            name: name.to_string(),
            fs: FsType::Ext4,
            userdata_mib: 512,
            metadata_mib: 32,
            memory_mib: 1024,
            cpus: 1,
            baseline: None,
            workload: None,
            guest_tools: Vec::new(),
            keep: false,
            metadata_encryption: false,
            quiet: false,
            show_command_line: true,
            sample_status: false,
        }
    }
    pub fn with_fs(mut self, fs: FsType) -> Self {
        self.fs = fs;
        self
    }
    pub fn with_userdata_mib(mut self, mib: u64) -> Self {
        self.userdata_mib = mib;
        self
    }
    pub fn with_memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }
    pub fn with_baseline(mut self, script: Option<PathBuf>) -> Self {
        self.baseline = script;
        self
    }
    pub fn with_workload(mut self, script: Option<PathBuf>) -> Self {
        self.workload = script;
        self
    }
    pub fn with_guest_tool(mut self, tool: PathBuf) -> Self {
        self.guest_tools.push(tool);
        self
    }
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }
    pub fn with_metadata_encryption(mut self) -> Self {
        self.metadata_encryption = true;
        self
    }
}

struct Running {
    child: Child,
    qmp: Option<QmpListener>,
    console: ConsoleTail,
    started: Instant,
    port: u16,
    /// Host power cut when this stage appears, after the delay.
    cut_at: Option<(String, Duration)>,
    cut_after: Option<Duration>,
    cut_deadline: Option<Instant>,
    sampler: Option<crate::sampler::Sampler>,
}

/// A QEMU guest (implements `Target`).
pub struct QemuGuest {
    cfg: GuestConfig,
    dir: PathBuf,
    share: PathBuf,
    kit: Kit,
    initrd: PathBuf,
    accel: Accel,
    _slot: FileLock,
    boots: Vec<BootRecord>,
    running: Option<Running>,
    agent: Agent,
    /// Why rewindd is not in this guest, if it is not.
    rewindd_missing: Option<String>,
    /// What the bootloader tells the next boot (how the last one ended).
    next_boot_reason: Option<String>,
}

fn make_disk(path: &Path, mib: u64, fs: FsType, label: &str) -> Result<(), TargetError> {
    let f = File::create(path).map_err(io_err(path))?;
    f.set_len(mib << 20).map_err(io_err(path))?;
    drop(f);
    let mut cmd = match fs {
        // No lazy init: a background inode-table zeroing thread would write
        // to userdata during a checkpoint on its own.
        FsType::Ext4 => {
            let mut c = Command::new("mkfs.ext4");
            c.args(["-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard", "-L", label]);
            c
        }
        FsType::F2fs => {
            let mut c = Command::new("mkfs.f2fs");
            c.args(["-q", "-f", "-l", label]);
            c
        }
    };
    cmd.arg(path);
    kit::host::run(&mut cmd).map_err(|e| TargetError::Disk { path: path.to_path_buf(), detail: e.to_string() })?;
    Ok(())
}

/// Guest path (on the 9p share) of the metadata-encryption key. Beside it,
/// `crypt.format` lets the init format userdata inside the crypt layer, at
/// the first boot only (the init removes it).
pub const GUEST_CRYPT_KEY: &str = "/host/boot/crypt.key";
/// The dm-crypt device the init stacks under /data (metadata encryption).
pub const CRYPT_DEVICE: &str = "userdata-crypt";

/// A fresh AES-256-XTS key (64 bytes) as the 128 hex digits dm-crypt's
/// table takes: what Android's metadata encryption uses.
fn crypt_key() -> Result<String, TargetError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut key = [0u8; 64];
    File::open(path).and_then(|mut f| f.read_exact(&mut key)).map_err(io_err(path))?;
    Ok(hex::encode(key))
}

/// Metadata encryption: userdata gets no filesystem here (it is made inside
/// the crypt layer by the guest's first boot, so the disk holds only
/// ciphertext); the key and the one-time format flag go on the share.
fn prepare_crypt(cfg: &GuestConfig, dir: &Path, share: &Path) -> Result<(), TargetError> {
    let img = dir.join("userdata.img");
    File::create(&img).and_then(|f| f.set_len(cfg.userdata_mib << 20)).map_err(io_err(&img))?;
    let boot = share.join("boot");
    let key = boot.join("crypt.key");
    std::fs::write(&key, crypt_key()? + "\n").map_err(io_err(&key))?;
    let flag = boot.join("crypt.format");
    std::fs::write(&flag, "format userdata inside the crypt layer at the first boot\n").map_err(io_err(&flag))
}

/// rewindd's config in the guest (boot contract: TCP for the host).
pub fn rewindd_toml() -> String {
    format!(
        "# rewindd in the QEMU test guest (written by rewind-harness)\n\
         fstab = \"/etc/fstab.rewind\"\n\
         metadata_dir = \"/metadata/rewind\"\n\
         socket = \"/dev/socket/rewindd\"\n\
         listen_tcp = \"0.0.0.0:{}\"\n\
         # The reason goes to the host (the next boot's androidboot.bootreason);\n\
         # -no-reboot turns the reboot into the end of the QEMU process.\n\
         reboot_command = [\"/usr/bin/rewind-guest-reboot\", \"{{reason}}\"]\n",
        qemu::GUEST_GRPC_PORT
    )
}

/// The fstab the guest uses: the boot contract's /data line for the
/// filesystem, with mount options a plain guest kernel honours (the
/// example fstabs in android/ carry device-only ones such as inlinecrypt).
pub fn guest_fstab(fs: FsType) -> String {
    let data = match fs {
        FsType::Ext4 => {
            "/dev/block/mapper/rewind-userdata /data ext4 noatime,nosuid,nodev \
             wait,check,checkpoint=block,rewind_raw=/dev/block/by-name/userdata"
        }
        FsType::F2fs => "/dev/block/by-name/userdata /data f2fs noatime,nosuid,nodev wait,check,checkpoint=fs",
    };
    format!(
        "# fstab of the rewind QEMU guest (written by rewind-harness)\n\
         /dev/block/by-name/metadata /metadata ext4 noatime,nosuid,nodev wait,check,first_stage_mount\n\
         {data}\n"
    )
}

impl QemuGuest {
    /// Builds the kit (cached), creates the disks and the initrd, and takes a
    /// machine-wide guest slot. Does not boot.
    pub fn new(cfg: GuestConfig) -> Result<QemuGuest, TargetError> {
        if cfg.metadata_encryption && cfg.fs != FsType::Ext4 {
            return Err(TargetError::Other(format!(
                "metadata encryption is emulated for ext4 userdata only (asked for {}): \
                 f2fs mode (checkpoint=fs) has no rewind-userdata device to stack the crypt layer on",
                cfg.fs
            )));
        }
        let kit = Kit::ensure()?;
        let slot = lock::acquire_slot(&crate::paths::slots_dir(), timeouts::SLOT_TIMEOUT)?;
        let runs = crate::paths::runs_dir();
        std::fs::create_dir_all(&runs).map_err(io_err(&runs))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        remove_dead_runs(&runs);
        let dir = runs.join(format!("{}-{stamp}-{}", cfg.name, std::process::id()));
        let share = dir.join("share");
        for d in [&dir, &share, &share.join("boot"), &share.join("scripts"), &share.join("xfer")] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        if cfg.keep {
            let _ = std::fs::write(dir.join(KEEP_MARKER), "kept by --keep\n");
        }
        if cfg.metadata_encryption {
            prepare_crypt(&cfg, &dir, &share)?;
        } else {
            make_disk(&dir.join("userdata.img"), cfg.userdata_mib, cfg.fs, "userdata")?;
        }
        make_disk(&dir.join("metadata.img"), cfg.metadata_mib, FsType::Ext4, "metadata")?;
        let scripts =
            [(&cfg.baseline, DEFAULT_BASELINE, "baseline.sh"), (&cfg.workload, DEFAULT_WORKLOAD, "workload.sh")];
        for (custom, default, name) in scripts {
            let dest = share.join("scripts").join(name);
            match custom {
                Some(p) => std::fs::copy(p, &dest).map(|_| ()).map_err(io_err(p))?,
                None => std::fs::write(&dest, default).map_err(io_err(&dest))?,
            }
        }

        // The overlay: project binaries, init, config, extra tools.
        let mut overlay = Archive::new();
        let ov = |e| TargetError::Other(format!("Building the overlay: {e}"));
        overlay.file_bytes("init", INIT_SCRIPT, 0o755).map_err(ov)?;
        overlay.file_bytes("usr/bin/rewind-guest-reboot", REBOOT_SCRIPT, 0o755).map_err(ov)?;
        overlay.file_bytes("usr/bin/bootctl", BOOTCTL_SCRIPT, 0o755).map_err(ov)?;
        overlay.file_bytes("usr/bin/rewind-guest-shutdown", SHUTDOWN_SCRIPT, 0o755).map_err(ov)?;
        overlay.file_bytes("etc/rewind/rewindd.toml", rewindd_toml(), 0o644).map_err(ov)?;
        // Where android/rewindd.rc's service line points rewindd.
        overlay.file_bytes("system/etc/rewindd.toml", rewindd_toml(), 0o644).map_err(ov)?;
        overlay.file_bytes("etc/rewind/boot-steps.sh", contract::steps_script(), 0o644).map_err(ov)?;
        overlay.file_bytes("etc/fstab.rewind", guest_fstab(cfg.fs), 0o644).map_err(ov)?;
        let manifest = project::guest_binary(&kit.dir, &project::MANIFEST).map_err(kit::KitError::from)?;
        overlay.file_from_host("usr/bin/rewind-manifest", &manifest, 0o755).map_err(ov)?;
        let mut rewindd_missing = None;
        for bin in [&project::REWINDD, &project::REWINDCTL] {
            match project::guest_binary(&kit.dir, bin) {
                Ok(p) => overlay.file_from_host(&format!("usr/bin/{}", bin.name), &p, 0o755).map_err(ov)?,
                Err(e) => rewindd_missing = Some(format!("{}: {e}", bin.name)),
            }
        }
        for tool in &cfg.guest_tools {
            let name = tool.file_name().and_then(|n| n.to_str()).unwrap_or("tool");
            kit::add_program(&mut overlay, &format!("usr/local/bin/{name}"), tool)?;
        }
        let initrd = dir.join("initrd.cpio");
        kit.write_initrd(&overlay, &initrd)?;
        let accel = qemu::accel(&kit.dir, &kit.kernel.vmlinuz);
        Ok(QemuGuest {
            agent: Agent::new(&share),
            cfg,
            dir,
            share,
            kit,
            initrd,
            accel,
            _slot: slot,
            boots: Vec::new(),
            running: None,
            rewindd_missing,
            next_boot_reason: None,
        })
    }

    pub fn kit(&self) -> &Kit {
        &self.kit
    }
    pub fn accel(&self) -> Accel {
        self.accel
    }
    pub fn share_dir(&self) -> &Path {
        &self.share
    }
    pub fn config(&self) -> &GuestConfig {
        &self.cfg
    }

    fn qemu_config(&self, boot_dir: &Path, port: u16, console: Console) -> QemuConfig {
        QemuConfig {
            name: format!("rewind-{}", self.cfg.name),
            accel: self.accel,
            cpus: self.cfg.cpus,
            memory_mib: self.cfg.memory_mib,
            kernel: self.kit.boot_kernel.clone(),
            initrd: self.initrd.clone(),
            append: qemu::append_with_reason(self.next_boot_reason.as_deref()),
            disks: self.disks(),
            share: Some(self.share.clone()),
            grpc_port: Some(port),
            qmp_socket: matches!(console, Console::File(_)).then(|| boot_dir.join("qmp.sock")),
            console,
            watchdog: true,
        }
    }

    /// userdata and metadata; and while a log-writes run records, the log
    /// disk its scenario left in the run directory (guest init then stacks
    /// dm-log-writes over the two).
    fn disks(&self) -> Vec<Disk> {
        let mut disks = vec![
            Disk { serial: "userdata".into(), path: self.dir.join("userdata.img") },
            Disk { serial: "metadata".into(), path: self.dir.join("metadata.img") },
        ];
        let log = self.dir.join(crate::logwrites::GUEST_LOG_IMAGE);
        if log.exists() {
            disks.push(Disk { serial: "logwrites".into(), path: log });
        }
        disks
    }

    fn write_plan(&self, plan: &BootPlan, index: u32, shell: bool) -> Result<(), TargetError> {
        let mut env = plan.to_env(index, self.cfg.fs, Some(GUEST_WORKLOAD));
        if shell {
            env += "REWIND_SHELL=1\n";
        }
        let p = self.share.join("boot/plan.env");
        std::fs::write(&p, env).map_err(io_err(&p))
    }

    /// Interactive guest: the serial console (and QEMU's monitor, Ctrl-A c)
    /// on this terminal; returns when QEMU exits.
    pub fn interactive(&mut self, plan: &BootPlan) -> Result<std::process::ExitStatus, TargetError> {
        let index = self.boots.len() as u32 + 1;
        self.write_plan(plan, index, true)?;
        self.agent.reset().map_err(io_err(&self.share))?;
        let port = qemu::free_port().map_err(io_err(Path::new("127.0.0.1")))?;
        let cfg = self.qemu_config(&self.dir, port, Console::Stdio);
        crate::progress::log(&format!("[{}] {}", self.cfg.name, cfg.command_line()));
        crate::progress::log(&format!(
            "[{}] rewindd gRPC (when running): http://127.0.0.1:{port}; quit: Ctrl-A x",
            self.cfg.name
        ));
        cfg.command().status().map_err(|e| TargetError::Start { detail: e.to_string() })
    }

    fn record_markers(rec: &mut BootRecord, run: &mut Running, markers: Vec<Marker>, name: &str) {
        let now_ms = run.started.elapsed().as_millis() as u64;
        for m in markers {
            match m {
                Marker::Stage(s) => {
                    if s == stage::READY {
                        rec.ready_ms = Some(now_ms);
                    }
                    if let Some((at, delay)) = &run.cut_at {
                        if *at == s && run.cut_deadline.is_none() {
                            run.cut_deadline = Some(Instant::now() + *delay);
                        }
                    }
                    rec.stages.push(s);
                    rec.stage_ms.push(now_ms);
                }
                Marker::Error(e) => {
                    crate::progress::log(&format!("[{name}] boot {}: guest error: {e}", rec.index));
                    rec.errors.push(e);
                }
                Marker::Other { .. } => {}
            }
        }
        rec.duration_ms = now_ms;
    }

    /// Advances the running boot: markers, host power cuts, QEMU's exit.
    /// Returns how the boot ended once it has.
    fn pump(&mut self) -> Option<BootEnd> {
        let name = self.cfg.name.clone();
        let run = self.running.as_mut()?;
        let rec = self.boots.last_mut()?;
        let markers = run.console.poll();
        Self::record_markers(rec, run, markers, &name);
        if let Some(after) = run.cut_after {
            if run.cut_deadline.is_none() && run.started.elapsed() >= after {
                run.cut_deadline = Some(Instant::now());
            }
        }
        if run.cut_deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(self.end_boot(true));
        }
        match run.child.try_wait() {
            Ok(Some(_)) | Err(_) => Some(self.end_boot(false)),
            Ok(None) => None,
        }
    }

    /// Kills (when asked) and reaps QEMU, then classifies the end.
    fn end_boot(&mut self, kill: bool) -> BootEnd {
        let Some(mut run) = self.running.take() else {
            return self
                .boots
                .last()
                .and_then(|b| b.ended.clone())
                .unwrap_or(BootEnd::Unexplained { detail: "no boot".into() });
        };
        let killed = kill && run.child.try_wait().ok().flatten().is_none();
        if killed {
            kill_group(&mut run.child);
        }
        let status = run.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        reap_group(&mut run.child);
        let events = run.qmp.as_mut().map(|q| q.finish(Duration::from_secs(2))).unwrap_or_default();
        let markers = run.console.flush();
        let name = self.cfg.name.clone();
        let Some(rec) = self.boots.last_mut() else {
            return BootEnd::Unexplained { detail: "no record".into() };
        };
        Self::record_markers(rec, &mut run, markers, &name);
        let end = failure::classify(&EndWitnesses {
            events: &events,
            console: run.console.text(),
            killed_by_host: killed,
            exit: &status,
        });
        rec.duration_ms = run.started.elapsed().as_millis() as u64;
        rec.ended = Some(end.clone());
        if let Some(s) = run.sampler.take() {
            rec.status_samples = s.finish();
        }
        // What a bootloader would tell the next boot: how this one ended,
        // with the reason rewindd's reboot command left on the share.
        let reason_file = self.share.join(SHARE_REBOOT_REASON);
        let requested = std::fs::read_to_string(&reason_file).ok();
        let _ = std::fs::remove_file(&reason_file);
        self.next_boot_reason = failure::next_boot_reason(&end, requested.as_deref());
        if !self.cfg.quiet {
            crate::progress::log(&format!(
                "[{name}] boot {} ({}): ended: {end} after {:.1} s, last stage {}; console {}",
                rec.index,
                rec.failure.as_deref().unwrap_or("no failure injected"),
                rec.duration_ms as f64 / 1000.0,
                rec.last_stage(),
                rec.console_log.display()
            ));
        }
        end
    }

    /// Starts QEMU for one boot and connects the QMP listener (QEMU waits
    /// for it before running the guest).
    fn spawn_qemu(
        &self,
        boot_dir: &Path,
        console_log: &Path,
        qmp_log: &Path,
    ) -> Result<(Child, QmpListener, u16, String, Instant), TargetError> {
        let port = qemu::free_port().map_err(io_err(Path::new("127.0.0.1")))?;
        let _ = std::fs::remove_file(console_log);
        let cfg = self.qemu_config(boot_dir, port, Console::File(console_log.to_path_buf()));
        let command_line = cfg.command_line();
        let _ = std::fs::write(boot_dir.join("qemu.cmdline"), format!("{command_line}\n"));
        if self.cfg.show_command_line {
            crate::progress::log(&format!("[{}] {command_line}", self.cfg.name));
        }
        let stderr_path = boot_dir.join("qemu.stderr");
        let stderr = File::create(&stderr_path).map_err(io_err(&stderr_path))?;
        let mut cmd = cfg.command();
        // SAFETY: prctl is async-signal-safe; nothing else runs in the
        // child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // If the harness dies (Ctrl-C, a test runner's SIGKILL), so
                // does QEMU: a TCG guest left behind eats a core forever.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().map_err(io_err(&stderr_path))?)
            .stderr(stderr)
            .spawn()
            .map_err(|e| TargetError::Start { detail: format!("{}: {e}", qemu::QEMU) })?;
        let started = Instant::now();
        match QmpListener::connect(&boot_dir.join("qmp.sock"), qmp_log, Duration::from_secs(20)) {
            Ok(q) => Ok((child, q, port, command_line, started)),
            Err(e) => {
                kill_group(&mut child);
                let _ = child.wait();
                let detail = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                Err(TargetError::Start { detail: format!("{e}; qemu stderr: {}", detail.trim()) })
            }
        }
    }

    fn running_index(&self) -> u32 {
        self.boots.last().map(|b| b.index).unwrap_or(0)
    }

    /// Queues a command without waiting for it (poweroff, sysrq).
    pub fn exec_detached(&mut self, command: &str) -> Result<(), TargetError> {
        if self.running.is_none() {
            return Err(TargetError::NotRunning);
        }
        self.agent.submit(command).map(|_| ()).map_err(io_err(&self.share))
    }

    /// Records a failure the scenario injects into a running boot (the
    /// report then says what was done, not "no failure injected").
    fn note_failure(&mut self, kind: &str) {
        if let Some(rec) = self.boots.last_mut() {
            if rec.failure.is_none() {
                rec.failure = Some(format!("{kind}@{} (by the scenario)", rec.last_stage()));
            }
        }
    }

    /// Guest-initiated reset (`echo b > /proc/sysrq-trigger`) from the agent.
    pub fn guest_reset(&mut self) -> Result<BootRecord, TargetError> {
        self.note_failure("guest-reset");
        self.exec_detached("echo b > /proc/sysrq-trigger")?;
        self.wait_end(timeouts::SHUTDOWN_TIMEOUT)
    }

    /// Kernel panic from the agent (`echo c > /proc/sysrq-trigger`).
    pub fn guest_panic(&mut self) -> Result<BootRecord, TargetError> {
        self.note_failure("panic");
        self.exec_detached("echo c > /proc/sysrq-trigger")?;
        self.wait_end(timeouts::SHUTDOWN_TIMEOUT)
    }
}

/// Marks a run directory kept on purpose (--keep).
const KEEP_MARKER: &str = ".keep";

/// Removes run directories left by harness processes that died without
/// dropping their guest (SIGKILL): `<name>-<millis>-<pid>` whose pid is
/// gone, older than half an hour, and not kept on purpose.
fn remove_dead_runs(runs: &Path) {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    for e in std::fs::read_dir(runs).into_iter().flatten().flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplit('-');
        let (Some(pid), Some(stamp)) =
            (parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next().and_then(|p| p.parse::<u128>().ok()))
        else {
            continue;
        };
        let old = now_ms.saturating_sub(stamp) > 30 * 60 * 1000;
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if old && !alive && path.is_dir() && !path.join(KEEP_MARKER).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn kill_group(child: &mut Child) {
    // The child leads its own process group (process_group(0)).
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
}

/// Reaps QEMU and reports anything of its process group still alive.
fn reap_group(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = child.wait();
    // Signal 0: does any process of the group remain?
    if nix::sys::signal::killpg(pgid, None).is_ok() {
        let lingered = timeouts::wait_until(Duration::from_secs(5), || {
            nix::sys::signal::killpg(pgid, None).is_err().then_some(())
        });
        if lingered.is_none() {
            crate::progress::log(&format!(
                "rewind-harness: warning: processes of QEMU's group {pgid} lingered after SIGKILL"
            ));
        }
    }
}

impl Target for QemuGuest {
    fn describe(&self) -> String {
        format!("qemu ({}, {}, kernel {})", self.accel.as_str(), self.cfg.fs, self.kit.kernel.release)
    }

    fn fs(&self) -> FsType {
        self.cfg.fs
    }

    fn boot(&mut self, plan: &BootPlan) -> Result<BootRecord, TargetError> {
        if self.running.is_some() {
            return Err(TargetError::AlreadyRunning { boot: self.running_index() });
        }
        if plan.mode == Mode::Rewind {
            if let Some(why) = &self.rewindd_missing {
                return Err(TargetError::Other(format!("rewindd is not in the guest kit: {why}")));
            }
        }
        let index = self.boots.len() as u32 + 1;
        let boot_dir = self.dir.join("boots").join(index.to_string());
        std::fs::create_dir_all(&boot_dir).map_err(io_err(&boot_dir))?;
        self.write_plan(plan, index, false)?;
        self.agent.reset().map_err(io_err(&self.share))?;
        let console_log = boot_dir.join("console.log");
        let qmp_log = boot_dir.join("qmp.log");
        let failure_text = plan.failure.as_ref().map(Failure::to_string);
        if !self.cfg.quiet {
            crate::progress::log(&format!(
                "[{}] boot {index} ({:?}, attempt {}, {}, boot reason {})",
                self.cfg.name,
                plan.mode,
                plan.attempt,
                failure_text.as_deref().unwrap_or("no failure injected"),
                self.next_boot_reason.as_deref().unwrap_or("none")
            ));
        }
        // The free port is picked before QEMU binds it; another process can
        // take it in between. Such a start fails at once: try a new port.
        let mut attempt = 0;
        let (child, qmp, port, command_line, started) = loop {
            attempt += 1;
            match self.spawn_qemu(&boot_dir, &console_log, &qmp_log) {
                Ok(v) => break v,
                Err(TargetError::Start { detail }) if attempt < 3 && detail.contains("forward") => {
                    crate::progress::log(&format!("[{}] boot {index}: port clash, retrying: {detail}", self.cfg.name));
                }
                Err(e) => return Err(e),
            }
        };
        let (cut_at, cut_after) = match &plan.failure {
            Some(Failure::HostPowerCut { at, delay }) => (Some((at.clone(), *delay)), None),
            Some(Failure::HostPowerCutAfter { after }) => (None, Some(*after)),
            _ => (None, None),
        };
        let mut rec = BootRecord::new(index, plan, console_log.clone(), qmp_log, command_line);
        rec.boot_reason = self.next_boot_reason.clone();
        self.boots.push(rec);
        self.running = Some(Running {
            child,
            qmp: Some(qmp),
            console: ConsoleTail::new(console_log),
            started,
            port,
            cut_at,
            cut_after,
            cut_deadline: None,
            sampler: (self.cfg.sample_status && plan.mode == Mode::Rewind)
                .then(|| crate::sampler::Sampler::start(format!("http://127.0.0.1:{port}"), started)),
        });
        // With a failure planned, the boot is expected to end (a killed
        // rewindd aside: the boot goes on); else to be ready.
        let expect_end = plan.failure.as_ref().is_some_and(Failure::ends_boot);
        let timeout = if expect_end { timeouts::BOOT_END_TIMEOUT } else { timeouts::BOOT_TIMEOUT };
        let deadline = Instant::now() + timeout;
        loop {
            if self.pump().is_some() {
                break;
            }
            let rec = self.boots.last().cloned().ok_or(TargetError::NotRunning)?;
            // A failure tied to a stage this boot never passed (no merge
            // to cut, say) would only time out: say so at once.
            if let Some(at) = plan.failure.as_ref().and_then(Failure::stage) {
                // A background merge's stages may come after ready.
                let following = stage::MERGE_STAGES.contains(&at)
                    && rec.reached(stage::MERGE_BACKGROUND)
                    && !rec.reached(stage::MERGE_ENDED);
                if at != stage::READY && rec.reached(stage::READY) && !rec.reached(at) && !following {
                    self.end_boot(true);
                    return Err(TargetError::Other(format!(
                        "Boot {index} reached ready without passing stage {at}: the planned {} was never injected",
                        plan.failure.as_ref().map(Failure::to_string).unwrap_or_default()
                    )));
                }
            }
            if !expect_end && rec.reached(stage::READY) {
                if !self.cfg.quiet {
                    crate::progress::log(&format!(
                        "[{}] boot {index}: ready in {:.1} s",
                        self.cfg.name,
                        rec.ready_ms.unwrap_or(0) as f64 / 1000.0
                    ));
                }
                break;
            }
            if Instant::now() >= deadline {
                let waited = timeout;
                let last_stage = rec.last_stage().to_string();
                self.end_boot(true);
                return Err(TargetError::BootTimeout {
                    boot: index,
                    stage: if expect_end { "its end".into() } else { stage::READY.into() },
                    last_stage,
                    waited,
                });
            }
            std::thread::sleep(timeouts::POLL);
        }
        self.boots.last().cloned().ok_or(TargetError::NotRunning)
    }

    fn exec_timeout(&mut self, command: &str, timeout: Duration) -> Result<ExecOutput, TargetError> {
        if self.running.is_none() {
            return Err(TargetError::NotRunning);
        }
        let started = Instant::now();
        let id = self.agent.submit(command).map_err(io_err(&self.share))?;
        loop {
            if let Some(res) = self.agent.poll(&id) {
                let f = res.map_err(io_err(&self.share))?;
                return Ok(ExecOutput {
                    status: f.status,
                    stdout: f.stdout,
                    stderr: f.stderr,
                    duration_ms: started.elapsed().as_millis() as u64,
                });
            }
            if let Some(end) = self.pump() {
                return Err(TargetError::GuestEnded {
                    boot: self.running_index(),
                    end,
                    doing: format!("running `{command}`"),
                });
            }
            if started.elapsed() > timeout {
                return Err(TargetError::ExecTimeout { command: command.to_string(), waited: started.elapsed() });
            }
            std::thread::sleep(timeouts::POLL);
        }
    }

    fn power_cut(&mut self) -> Result<BootRecord, TargetError> {
        if self.running.is_none() {
            return Err(TargetError::NotRunning);
        }
        self.note_failure("power-cut");
        self.end_boot(true);
        self.boots.last().cloned().ok_or(TargetError::NotRunning)
    }

    fn shutdown(&mut self) -> Result<BootRecord, TargetError> {
        // The .rc's shutdown steps, the unmounts, the metadata-encryption
        // layer removed before power-off as vold's is (guest/shutdown.sh).
        self.exec_detached(&format!("rewind-guest-shutdown {CRYPT_DEVICE}"))?;
        self.wait_end(timeouts::SHUTDOWN_TIMEOUT)
    }

    fn wait_end(&mut self, timeout: Duration) -> Result<BootRecord, TargetError> {
        let deadline = Instant::now() + timeout;
        while self.running.is_some() {
            if self.pump().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let rec = self.boots.last();
                return Err(TargetError::BootTimeout {
                    boot: self.running_index(),
                    stage: "its end".into(),
                    last_stage: rec.map(|r| r.last_stage().to_string()).unwrap_or_default(),
                    waited: timeout,
                });
            }
            std::thread::sleep(timeouts::POLL);
        }
        self.boots.last().cloned().ok_or(TargetError::NotRunning)
    }

    fn boots(&self) -> &[BootRecord] {
        &self.boots
    }

    fn console(&self) -> String {
        self.boots.last().and_then(|b| std::fs::read_to_string(&b.console_log).ok()).unwrap_or_default()
    }

    /// Consoles between `==== console ... ====` markers: every boot whose
    /// init reported an error, and the last boot.
    fn framed_console(&self) -> String {
        let last = self.boots.len();
        self.boots
            .iter()
            .enumerate()
            .filter(|(i, b)| !b.errors.is_empty() || i + 1 == last)
            .map(|(_, b)| {
                console::framed(
                    &format!("{} boot {}", self.cfg.name, b.index),
                    &std::fs::read_to_string(&b.console_log).unwrap_or_default(),
                )
            })
            .collect()
    }

    fn grpc_endpoint(&self) -> Option<String> {
        self.running.as_ref().map(|r| format!("http://127.0.0.1:{}", r.port))
    }

    fn push(&mut self, local: &Path, guest_path: &str) -> Result<(), TargetError> {
        let name = format!("push-{}", self.boots.len());
        let staged = self.share.join("xfer").join(&name);
        std::fs::copy(local, &staged).map_err(io_err(local))?;
        self.exec_checked(&format!(
            "cp /host/xfer/{name} {} && rm -f /host/xfer/{name}",
            crate::plan::shell_quote(guest_path)
        ))?;
        Ok(())
    }

    fn pull(&mut self, guest_path: &str, local: &Path) -> Result<(), TargetError> {
        let name = "pull";
        self.exec_checked(&format!("cp {} /host/xfer/{name}", crate::plan::shell_quote(guest_path)))?;
        let staged = self.share.join("xfer").join(name);
        std::fs::copy(&staged, local).map_err(io_err(local))?;
        let _ = std::fs::remove_file(staged);
        Ok(())
    }

    fn baseline_script(&self) -> String {
        GUEST_BASELINE.into()
    }
    fn workload_script(&self) -> String {
        GUEST_WORKLOAD.into()
    }

    fn artifacts_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    fn kept_artifacts(&self) -> Option<PathBuf> {
        self.cfg.keep.then(|| self.dir.clone())
    }

    fn disk_images(&self) -> Vec<PathBuf> {
        ["userdata.img", "metadata.img"].iter().map(|n| self.dir.join(n)).collect()
    }

    /// A guest still running goes down before the report is final: its
    /// last boot then has an end.
    fn finish_run(&mut self) {
        if self.running.is_some() {
            let _ = self.power_cut();
        }
    }

    fn save_powered_off(&self, dir: &Path) -> Result<(), TargetError> {
        if self.running.is_some() {
            return Err(TargetError::AlreadyRunning { boot: self.running_index() });
        }
        let boot = dir.join(SAVED_BOOT_FILES);
        std::fs::create_dir_all(&boot).map_err(io_err(&boot))?;
        for img in self.disk_images() {
            let to = dir.join(img.file_name().unwrap_or_default());
            crate::sparse::copy(&img, &to).map_err(io_err(&img))?;
        }
        copy_boot_files(&self.share.join("boot"), &boot)?;
        let reason = dir.join(SAVED_BOOT_REASON);
        std::fs::write(&reason, self.next_boot_reason.as_deref().unwrap_or_default()).map_err(io_err(&reason))
    }

    /// The saved disks replace this guest's; its share's boot files become
    /// the saved ones (a metadata-encryption key among them, and no
    /// one-time format flag: the saved boots formatted userdata already).
    fn start_from(&mut self, dir: &Path) -> Result<(), TargetError> {
        if !self.boots.is_empty() || self.running.is_some() {
            return Err(TargetError::Other(format!(
                "start_from({}) after boot {}: only a guest that has not booted yet can start from saved disks",
                dir.display(),
                self.boots.len()
            )));
        }
        let reason_path = dir.join(SAVED_BOOT_REASON);
        let reason = std::fs::read_to_string(&reason_path).map_err(io_err(&reason_path))?;
        for img in self.disk_images() {
            let from = dir.join(img.file_name().unwrap_or_default());
            crate::sparse::copy(&from, &img).map_err(io_err(&from))?;
        }
        let boot = self.share.join("boot");
        for e in std::fs::read_dir(&boot).map_err(io_err(&boot))? {
            let path = e.map_err(io_err(&boot))?.path();
            if path.is_file() {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        copy_boot_files(&dir.join(SAVED_BOOT_FILES), &boot)?;
        self.next_boot_reason = (!reason.is_empty()).then_some(reason);
        Ok(())
    }
}

/// Where [`Target::save_powered_off`] puts the share's boot files, and the
/// boot reason the next boot gets.
const SAVED_BOOT_FILES: &str = "share-boot";
const SAVED_BOOT_REASON: &str = "boot-reason";

/// The bootloader's and the crypt layer's files of a share's `boot/` (the
/// slot flag, the key), not the plan of the boot that wrote them.
fn copy_boot_files(from: &Path, to: &Path) -> Result<(), TargetError> {
    for e in std::fs::read_dir(from).map_err(io_err(from))? {
        let path = e.map_err(io_err(from))?.path();
        let name = path.file_name().unwrap_or_default();
        if path.is_file() && name != "plan.env" {
            std::fs::copy(&path, to.join(name)).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        if let Some(mut run) = self.running.take() {
            kill_group(&mut run.child);
            reap_group(&mut run.child);
        }
        if !self.cfg.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
