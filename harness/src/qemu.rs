//! The QEMU command line, built in one place (and logged by the caller), and
//! the KVM probe that decides between KVM and TCG.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// Port rewindd listens on inside the guest (listen_tcp).
pub const GUEST_GRPC_PORT: u16 = 50051;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A disk presented as virtio-blk with a serial the guest maps to
/// /dev/block/by-name/<serial>.
#[derive(Debug, Clone)]
pub struct Disk {
    pub serial: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub enum Console {
    /// Serial console to a log file.
    File(PathBuf),
    /// Serial console (and monitor, Ctrl-A) on the terminal.
    Stdio,
}

#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub name: String,
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub disks: Vec<Disk>,
    /// Host directory shared over 9p with mount tag `host`.
    pub share: Option<PathBuf>,
    /// Host loopback port forwarded to the guest's gRPC port.
    pub grpc_port: Option<u16>,
    pub console: Console,
    pub qmp_socket: Option<PathBuf>,
    pub watchdog: bool,
}

/// Kernel command line of the test guest.
pub fn default_append() -> String {
    [
        "console=ttyS0",
        // A panic resets after 1 s; -no-reboot turns that into QEMU's exit.
        "panic=1",
        "loglevel=4",
        // TCG: skip work that only costs time in an emulated guest.
        "mitigations=off",
        "no_timer_check",
        "tsc=reliable",
        "random.trust_cpu=on",
        "i8042.noaux",
        "i8042.nomux",
        "i8042.nopnp",
    ]
    .join(" ")
}

/// The kernel command line with the boot reason a bootloader passes
/// (`androidboot.bootreason=<reason>`: Android's init copies it to
/// `ro.boot.bootreason`; rewindd reads it from /proc/cmdline here). None:
/// the first boot, or an end nobody can name.
pub fn append_with_reason(reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => {
            format!("{} androidboot.bootreason={r}", default_append())
        }
        _ => default_append(),
    }
}

impl QemuConfig {
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-name", &self.name]);
        push(&["-machine", "q35", "-accel", self.accel.as_str()]);
        push(&["-cpu", if self.accel == Accel::Kvm { "host" } else { "max" }]);
        push(&["-smp", &self.cpus.to_string(), "-m", &self.memory_mib.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        // Every reset ends the process: one process per boot, classified.
        push(&["-no-reboot"]);
        push(&["-kernel", &path_str(&self.kernel), "-initrd", &path_str(&self.initrd)]);
        push(&["-append", &self.append]);
        match &self.console {
            Console::File(p) => {
                push(&["-chardev", &format!("file,id=console,path={}", path_str(p)), "-serial", "chardev:console"])
            }
            Console::Stdio => push(&["-serial", "mon:stdio"]),
        }
        if let Some(q) = &self.qmp_socket {
            // wait=on: QEMU waits for the listener, so no event is missed.
            push(&["-qmp", &format!("unix:{},server=on,wait=on", path_str(q))]);
        }
        for (i, d) in self.disks.iter().enumerate() {
            push(&[
                "-drive",
                &format!("file={},if=none,id=disk{i},format=raw,cache=writeback", path_str(&d.path)),
                "-device",
                &format!("virtio-blk-pci,drive=disk{i},serial={}", d.serial),
            ]);
        }
        let mut netdev = "user,id=net0,ipv6=off".to_string();
        if let Some(port) = self.grpc_port {
            netdev += &format!(",hostfwd=tcp:127.0.0.1:{port}-:{GUEST_GRPC_PORT}");
        }
        push(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"]);
        if let Some(share) = &self.share {
            push(&[
                "-fsdev",
                &format!("local,id=host,path={},security_model=none", path_str(share)),
                "-device",
                "virtio-9p-pci,fsdev=host,mount_tag=host",
            ]);
        }
        if self.watchdog {
            push(&["-device", "i6300esb", "-watchdog-action", "reset"]);
        }
        push(&["-device", "pvpanic-pci", "-device", "virtio-rng-pci"]);
        a
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args(self.args());
        c
    }

    /// The command line as one shell-pasteable string, for the logs.
    pub fn command_line(&self) -> String {
        std::iter::once(QEMU.to_string())
            .chain(self.args().into_iter().map(|a| {
                if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,.:/@+".contains(c)) {
                    a
                } else {
                    crate::plan::shell_quote(&a)
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A free loopback TCP port (the OS picks; a tiny race with other guests is
/// caught by QEMU failing to forward, reported with its stderr).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// KVM or TCG. `REWIND_ACCEL=kvm|tcg` forces it; otherwise KVM is probed
/// once per (host kernel, QEMU version) and the answer cached: on these
/// machines KVM exists but its vCPUs hang, so only a guest that really
/// runs (the guest kernel reaching its no-root panic within seconds)
/// counts.
pub fn accel(kit_dir: &Path, kernel: &Path) -> Accel {
    match std::env::var("REWIND_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    let uname = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let version = Command::new(QEMU)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let key = format!("{uname} | {version} | {}", kernel.display());
    let cache = kit_dir.join("accel.cache");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Some((k, v)) = text.trim().rsplit_once(" => ") {
            if k == key {
                return if v == "kvm" { Accel::Kvm } else { Accel::Tcg };
            }
        }
    }
    let answer = if probe_kvm(kit_dir, kernel, Duration::from_secs(10)) { Accel::Kvm } else { Accel::Tcg };
    let _ = std::fs::create_dir_all(kit_dir);
    let _ = std::fs::write(&cache, format!("{key} => {}\n", answer.as_str()));
    answer
}

fn probe_kvm(dir: &Path, kernel: &Path, timeout: Duration) -> bool {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return false;
    }
    // The guest kernel itself, with no initrd: it must get as far as "cannot
    // mount root" and reset (panic=-1) within seconds. Firmware alone runs
    // under a broken KVM, so it proves nothing.
    let out = dir.join("kvm-probe.log");
    let _ = std::fs::remove_file(&out);
    let child = Command::new(QEMU)
        .args(["-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256", "-nodefaults"])
        .args(["-display", "none", "-no-reboot", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .args(["-chardev", &format!("file,id=con,path={}", out.display()), "-serial", "chardev:con"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let Ok(mut child) = child else { return false };
    let started = Instant::now();
    let mut ok = false;
    while started.elapsed() < timeout {
        if std::fs::read_to_string(&out).is_ok_and(|s| s.contains("Kernel panic")) {
            ok = true;
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            ok = std::fs::read_to_string(&out).is_ok_and(|s| s.contains("Kernel panic"));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QemuConfig {
        QemuConfig {
            name: "rewind-test".into(),
            accel: Accel::Tcg,
            cpus: 1,
            memory_mib: 1024,
            kernel: "/k/vmlinuz".into(),
            initrd: "/r/initrd.cpio".into(),
            append: default_append(),
            disks: vec![
                Disk { serial: "userdata".into(), path: "/r/userdata.img".into() },
                Disk { serial: "metadata".into(), path: "/r/metadata.img".into() },
            ],
            share: Some("/r/share".into()),
            grpc_port: Some(40001),
            console: Console::File("/r/console.log".into()),
            qmp_socket: Some("/r/qmp.sock".into()),
            watchdog: true,
        }
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn command_line_has_every_device() {
        let a = config().args();
        assert!(has_pair(&a, "-accel", "tcg"));
        assert!(has_pair(&a, "-cpu", "max"));
        assert!(a.contains(&"-no-reboot".to_string()));
        assert!(has_pair(&a, "-device", "virtio-blk-pci,drive=disk0,serial=userdata"));
        assert!(has_pair(&a, "-device", "virtio-blk-pci,drive=disk1,serial=metadata"));
        assert!(has_pair(&a, "-netdev", "user,id=net0,ipv6=off,hostfwd=tcp:127.0.0.1:40001-:50051"));
        assert!(has_pair(&a, "-qmp", "unix:/r/qmp.sock,server=on,wait=on"));
        assert!(has_pair(&a, "-device", "i6300esb"));
        assert!(has_pair(&a, "-watchdog-action", "reset"));
        assert!(has_pair(&a, "-fsdev", "local,id=host,path=/r/share,security_model=none"));
        assert!(has_pair(&a, "-chardev", "file,id=console,path=/r/console.log"));
        let append = a.iter().skip_while(|x| *x != "-append").nth(1).unwrap();
        assert!(append.contains("console=ttyS0") && append.contains("panic=1"));
        assert!(!append.contains("bootreason"));
        let with = append_with_reason(Some("reboot,apexd_initiated"));
        assert!(with.ends_with(" androidboot.bootreason=reboot,apexd_initiated"), "{with}");
        assert_eq!(append_with_reason(Some("two words")), default_append(), "never a word the kernel splits");
        assert_eq!(append_with_reason(None), default_append());
    }

    #[test]
    fn kvm_uses_the_host_cpu_and_stdio_console_muxes_the_monitor() {
        let mut c = config();
        c.accel = Accel::Kvm;
        c.console = Console::Stdio;
        c.qmp_socket = None;
        c.watchdog = false;
        let a = c.args();
        assert!(has_pair(&a, "-cpu", "host"));
        assert!(has_pair(&a, "-serial", "mon:stdio"));
        assert!(!a.iter().any(|x| x == "-qmp" || x == "i6300esb"));
    }

    #[test]
    fn logged_command_line_quotes_the_kernel_arguments() {
        let line = config().command_line();
        assert!(line.starts_with("qemu-system-x86_64 -name rewind-test"));
        assert!(line.contains("-append 'console=ttyS0 panic=1"));
    }
}
