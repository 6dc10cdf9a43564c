//! rewindd's logging: tracing to stderr, and also to /dev/kmsg when it can
//! be opened for writing (the kernel log is what survives on a device at
//! early-fs, before logd, and what a test guest's serial console shows).
//! Levels come from `--log-level`, else `RUST_LOG`, else `info`.
//!
//! On Android also to logcat, tag `rewindd`: each event is one datagram to
//! logd's `/dev/socket/logdw`, in the format liblog itself writes (a packed
//! header: log id, tid, realtime seconds and nanoseconds; then priority,
//! tag and message, each NUL-terminated). Why not `android_logger`: it links
//! liblog (an NDK/platform library Cargo builds here cannot link), and
//! stderr is not an answer either, init sends a service's stderr to
//! /dev/null unless the .rc says `stdio_to_kmsg`. Every domain may send to
//! logdw (AOSP's domain.te), so no sepolicy is needed. logd may not run yet
//! at early-fs: the socket is (re)connected lazily and kmsg keeps the lines
//! of that window.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub const KMSG_PATH: &str = "/dev/kmsg";
/// The kernel cuts records near 1 KiB; cut ours first, on a char boundary.
const KMSG_MAX: usize = 960;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("Invalid log level {spec:?}")]
    Filter {
        spec: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("A logger is already installed")]
    AlreadySet(#[source] tracing_subscriber::util::TryInitError),
}

/// syslog priority of a tracing level, as /dev/kmsg reads it.
pub fn kmsg_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Collects an event's message and its other fields as `key=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// One kmsg record for an event: `<prio>rewindd: message key=value`.
pub fn kmsg_record(level: &Level, event: &Event<'_>) -> String {
    let mut line = Line::default();
    event.record(&mut line);
    let mut record = format!("<{}>rewindd: {}{}", kmsg_priority(level), line.message, line.fields);
    // One record per line: a newline inside would start an unprefixed one.
    record = record.replace('\n', " | ");
    if record.len() > KMSG_MAX {
        let mut cut = KMSG_MAX;
        while !record.is_char_boundary(cut) {
            cut -= 1;
        }
        record.truncate(cut);
    }
    record.push('\n');
    record
}

/// Writes each event as one write(2) to /dev/kmsg (the kernel takes one
/// record per write).
struct KmsgLayer {
    file: Mutex<std::fs::File>,
}

impl<S: Subscriber> Layer<S> for KmsgLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let record = kmsg_record(event.metadata().level(), event);
        if let Ok(mut file) = self.file.lock() {
            // Logging must never fail the daemon: a full or closed kmsg is
            // ignored (stderr still has the line).
            let _ = file.write_all(record.as_bytes());
        }
    }
}

pub const LOGDW_PATH: &str = "/dev/socket/logdw";
pub const LOGCAT_TAG: &str = "rewindd";
/// liblog's LOGGER_ENTRY_MAX_PAYLOAD is 4068 bytes (priority, tag, message
/// and their NULs); longer messages are cut, on a char boundary.
const LOGD_MAX_MESSAGE: usize = 4000;
/// log_id_t LOG_ID_MAIN.
const LOG_ID_MAIN: u8 = 0;

/// android_LogPriority of a tracing level.
pub fn logd_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 6,
        Level::WARN => 5,
        Level::INFO => 4,
        Level::DEBUG => 3,
        Level::TRACE => 2,
    }
}

/// One logd datagram: `android_log_header_t` (packed, little-endian: u8
/// log id, u16 tid, u32 tv_sec, u32 tv_nsec), then the payload liblog
/// sends (u8 priority, tag NUL, message NUL).
pub fn logd_packet(priority: u8, tid: u16, realtime: std::time::Duration, tag: &str, message: &str) -> Vec<u8> {
    let mut msg = message;
    if msg.len() > LOGD_MAX_MESSAGE {
        let mut cut = LOGD_MAX_MESSAGE;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg = &msg[..cut];
    }
    let mut p = Vec::with_capacity(12 + tag.len() + msg.len() + 2);
    p.push(LOG_ID_MAIN);
    p.extend_from_slice(&tid.to_le_bytes());
    // log_time holds 32-bit seconds (good until 2106).
    p.extend_from_slice(&(realtime.as_secs() as u32).to_le_bytes());
    p.extend_from_slice(&realtime.subsec_nanos().to_le_bytes());
    p.push(priority);
    p.extend_from_slice(tag.as_bytes());
    p.push(0);
    // A NUL inside would end the message early for readers.
    p.extend(msg.bytes().map(|b| if b == 0 { b' ' } else { b }));
    p.push(0);
    p
}

/// Sends each event to logd (Android).
struct LogdLayer {
    path: std::path::PathBuf,
    sock: Mutex<Option<std::os::unix::net::UnixDatagram>>,
}

impl LogdLayer {
    fn new(path: &std::path::Path) -> Self {
        LogdLayer { path: path.to_path_buf(), sock: Mutex::new(None) }
    }
}

impl<S: Subscriber> Layer<S> for LogdLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Line::default();
        event.record(&mut line);
        let realtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // tid is 16 bits in the header (as liblog truncates it too).
        let tid = nix::unistd::gettid().as_raw() as u16;
        let packet = logd_packet(
            logd_priority(event.metadata().level()),
            tid,
            realtime,
            LOGCAT_TAG,
            &format!("{}{}", line.message, line.fields),
        );
        let Ok(mut sock) = self.sock.lock() else { return };
        if sock.is_none() {
            *sock = std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(&self.path).map(|_| s)).ok();
        }
        // Logging never fails the daemon: on an error (logd not up yet, or
        // restarted) drop the socket and connect again at the next event.
        if let Some(s) = sock.as_ref() {
            if s.send(&packet).is_err() {
                *sock = None;
            }
        }
    }
}

/// Builds the level filter: `--log-level` wins over `RUST_LOG`.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let spec = match level {
        Some(spec) => spec.to_string(),
        None => std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".to_string()),
    };
    EnvFilter::try_new(&spec).map_err(|source| LoggingError::Filter { spec, source })
}

/// Installs the global logger. `kmsg`: also write to /dev/kmsg if it opens.
/// Returns whether kmsg is in use.
pub fn init(level: Option<&str>, kmsg: bool) -> Result<bool, LoggingError> {
    let filter = filter(level)?;
    // Colours only on a terminal: a guest's serial console or a log file
    // would show the escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let kmsg_layer = if kmsg {
        std::fs::OpenOptions::new().write(true).open(KMSG_PATH).ok().map(|file| KmsgLayer { file: Mutex::new(file) })
    } else {
        None
    };
    let using_kmsg = kmsg_layer.is_some();
    // logcat on Android only: elsewhere there is no logd.
    let logd_layer = cfg!(target_os = "android").then(|| LogdLayer::new(std::path::Path::new(LOGDW_PATH)));
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(kmsg_layer)
        .with(logd_layer)
        .try_init()
        .map_err(LoggingError::AlreadySet)?;
    Ok(using_kmsg)
}

/// Logs panics (with where they happened) before the default hook prints
/// them, so a crash of rewindd leaves a line in kmsg, not only on a stderr
/// that init sends to /dev/null.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".to_string());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        tracing::error!("panic in thread {thread} at {location}: {payload}");
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Captures kmsg records through a real subscriber.
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(kmsg_record(event.metadata().level(), event));
        }
    }

    #[test]
    fn kmsg_records_have_priority_prefix_and_one_line() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&lines)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("commit failed");
            tracing::warn!(partition = "userdata", "cow at {}%", 81);
            tracing::info!("two\nlines");
            tracing::info!("{}", "x".repeat(5000));
        });
        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], "<3>rewindd: commit failed\n");
        assert_eq!(lines[1], "<4>rewindd: cow at 81% partition=\"userdata\"\n");
        assert_eq!(lines[2], "<6>rewindd: two | lines\n");
        assert!(lines[3].len() <= KMSG_MAX + 1);
        assert!(lines[3].ends_with('\n'));
    }

    #[test]
    fn logd_packets_have_liblogs_layout() {
        let p = logd_packet(4, 0x1234, std::time::Duration::new(0x01020304, 0x0A0B0C0D), "rewindd", "armed");
        let mut want = vec![0u8, 0x34, 0x12, 0x04, 0x03, 0x02, 0x01, 0x0D, 0x0C, 0x0B, 0x0A, 4];
        want.extend_from_slice(b"rewindd\0armed\0");
        assert_eq!(p, want);
        assert_eq!(logd_priority(&Level::ERROR), 6);
        assert_eq!(logd_priority(&Level::TRACE), 2);
        let long = logd_packet(4, 1, std::time::Duration::ZERO, "rewindd", &"é".repeat(3000));
        assert!(long.len() <= 12 + 8 + LOGD_MAX_MESSAGE + 1);
        assert_eq!(long.last(), Some(&0));
        let nul = logd_packet(4, 1, std::time::Duration::ZERO, "t", "a\0b");
        assert_eq!(&nul[12..], b"t\0a b\0");
    }

    /// Through a real datagram socket, as logd receives it.
    #[test]
    fn logd_layer_sends_one_datagram_per_event() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("logdw");
        let logd = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        let subscriber = tracing_subscriber::registry().with(LogdLayer::new(&path));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(partition = "userdata", "cow at {}%", 81);
        });
        let mut buf = [0u8; 4096];
        let n = logd.recv(&mut buf).expect("recv");
        assert_eq!(buf[0], 0);
        assert_eq!(buf[11], 5);
        assert_eq!(&buf[12..n], b"rewindd\0cow at 81% partition=\"userdata\"\0");
        // No logd: events are dropped, nothing panics.
        let gone = tracing_subscriber::registry().with(LogdLayer::new(&dir.path().join("none")));
        tracing::subscriber::with_default(gone, || tracing::info!("dropped"));
    }

    #[test]
    fn level_flag_is_parsed() {
        assert!(filter(Some("debug")).is_ok());
        assert!(filter(Some("rewind_daemon=trace,info")).is_ok());
        assert!(filter(Some("=[")).is_err());
    }
}
