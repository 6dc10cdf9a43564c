//! QMP event listener. QEMU is started with `-qmp unix:PATH,server=on,wait=on`
//! so it does not run the guest until this listener has connected: no event
//! can be missed. A thread records every event (and logs the raw lines).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("Cannot connect to QMP socket {path} within {waited:?}")]
    Connect {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP handshake on {path}")]
    Handshake {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QmpEvent {
    pub event: String,
    pub data: serde_json::Value,
    /// Milliseconds since the listener connected.
    pub at_ms: u64,
}

/// A connected QMP listener.
pub struct QmpListener {
    events: Arc<Mutex<Vec<QmpEvent>>>,
    thread: Option<JoinHandle<()>>,
}

impl QmpListener {
    /// Connects (retrying while QEMU creates the socket), negotiates
    /// capabilities and starts recording events into `log`.
    pub fn connect(path: &Path, log: &Path, timeout: Duration) -> Result<QmpListener, QmpError> {
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(source) if started.elapsed() > timeout => {
                    return Err(QmpError::Connect { path: path.to_path_buf(), waited: started.elapsed(), source })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let hs = |source| QmpError::Handshake { path: path.to_path_buf(), source };
        let mut writer = stream.try_clone().map_err(hs)?;
        let mut reader = BufReader::new(stream);
        let mut greeting = String::new();
        reader.read_line(&mut greeting).map_err(hs)?;
        writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").map_err(hs)?;
        let mut log_file = std::fs::File::create(log).ok();
        if let Some(f) = log_file.as_mut() {
            let _ = f.write_all(greeting.as_bytes());
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let connected = Instant::now();
        let thread = std::thread::Builder::new()
            .name("qmp".into())
            .spawn(move || {
                // Keep the writer alive: closing it would end the session.
                let _writer = writer;
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    if let Some(f) = log_file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    if let Some(name) = v.get("event").and_then(|e| e.as_str()) {
                        let ev = QmpEvent {
                            event: name.to_string(),
                            data: v.get("data").cloned().unwrap_or(serde_json::Value::Null),
                            at_ms: connected.elapsed().as_millis() as u64,
                        };
                        if let Ok(mut list) = sink.lock() {
                            list.push(ev);
                        }
                    }
                }
            })
            .map_err(hs)?;
        Ok(QmpListener { events, thread: Some(thread) })
    }

    pub fn events(&self) -> Vec<QmpEvent> {
        self.events.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits for the reader to see EOF (QEMU gone), bounded.
    pub fn finish(&mut self, timeout: Duration) -> Vec<QmpEvent> {
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + timeout;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        self.events()
    }
}
