//! rewindd's logging: tracing to stderr, and also to /dev/kmsg when it can
//! be opened for writing (the kernel log is what survives on a device at
//! early-fs, before logd, and what a test guest's serial console shows).
//! Levels come from `--log-level`, else `RUST_LOG`, else `info`.

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
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(kmsg_layer)
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
    fn level_flag_is_parsed() {
        assert!(filter(Some("debug")).is_ok());
        assert!(filter(Some("rewind_daemon=trace,info")).is_ok());
        assert!(filter(Some("=[")).is_err());
    }
}
