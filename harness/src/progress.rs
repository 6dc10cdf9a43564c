//! Progress over a known number of steps (scenarios of `--all`, the boots
//! of a scenario, the sessions of the benchmark): an indicatif bar on a
//! terminal, one plain line per step when stdout is not a terminal or
//! under CI=true (logs stay readable, no control codes). The time left is
//! the mean of the steps measured so far times the steps left; nothing is
//! guessed before the first step ends.
//!
//! While a bar is shown, the harness's own log lines go through [`log`]
//! so they print above the bar instead of tearing it.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bar on screen, if any: [`log`] prints above it.
static SHOWN: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// A log line on stderr, above the progress bar when one is shown.
pub fn log(text: &str) {
    let shown = SHOWN.lock().ok().and_then(|s| s.clone());
    match shown {
        Some(b) => b.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// A line for people on stdout (the demo's story), above the bar.
pub fn say(text: &str) {
    let shown = SHOWN.lock().ok().and_then(|s| s.clone());
    match shown {
        Some(b) => b.suspend(|| println!("{text}")),
        None => println!("{text}"),
    }
}

enum Out {
    Bar(indicatif::ProgressBar),
    Lines(Box<dyn Write + Send>),
}

pub struct Progress {
    label: String,
    /// Steps expected; None when not known (a scenario's first run here).
    total: Option<u64>,
    done: u64,
    started: Instant,
    out: Out,
}

/// "step 4 of 7, about 40 s left": `done` steps took `elapsed` in all.
pub fn estimate(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let mut s = format!("{label} {done} of {total}");
    if done > 0 && done < total {
        s += &format!(", about {} left", human(left(done, total, elapsed)));
    }
    s
}

/// "boot 4 of 7, about 40 s left" as step `n` starts: the `n - 1` steps
/// before it took `elapsed`; `n` and the steps after it are left.
pub fn starting(label: &str, n: u64, total: Option<u64>, elapsed: Duration) -> String {
    let done = n.saturating_sub(1);
    match total {
        Some(total) if done > 0 && done < total => {
            format!("{label} {n} of {total}, about {} left", human(left(done, total, elapsed)))
        }
        Some(total) => format!("{label} {n} of {total}"),
        None => format!("{label} {n}"),
    }
}

fn left(done: u64, total: u64, elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() / done as f64 * (total - done) as f64
}

fn human(secs: f64) -> String {
    if secs < 90.0 {
        format!("{:.0} s", secs)
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

/// A bar only where a person watches: both streams on a terminal, not CI.
pub fn use_bar() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal() && std::env::var("CI").as_deref() != Ok("true")
}

impl Progress {
    /// A bar on a terminal, else plain lines on stdout.
    pub fn new(total: u64, label: &str) -> Self {
        Self::maybe_total(Some(total), label)
    }

    /// [`new`](Self::new) when the number of steps may not be known.
    pub fn maybe_total(total: Option<u64>, label: &str) -> Self {
        if !use_bar() {
            return Self::lines(total, label, Box::new(std::io::stdout()));
        }
        let b = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total.is_some() { "{bar:30} {msg} [{elapsed}]" } else { "{spinner} {msg} [{elapsed}]" };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            b.set_style(style);
        }
        b.enable_steady_tick(Duration::from_millis(500));
        b.set_message(starting(label, 1, total, Duration::ZERO));
        if let Ok(mut s) = SHOWN.lock() {
            *s = Some(b.clone());
        }
        Progress { label: label.to_string(), total, done: 0, started: Instant::now(), out: Out::Bar(b) }
    }

    /// Plain lines into `out` (stdout when not on a terminal; tests).
    pub fn lines(total: Option<u64>, label: &str, out: Box<dyn Write + Send>) -> Self {
        Progress { label: label.to_string(), total, done: 0, started: Instant::now(), out: Out::Lines(out) }
    }

    fn show(&mut self, line: String) {
        match &mut self.out {
            Out::Bar(b) => {
                b.set_position(self.done);
                b.set_message(line);
            }
            Out::Lines(w) => {
                // A closed stdout is no reason to stop the run.
                let _ = writeln!(w, "{line}").and_then(|_| w.flush());
            }
        }
    }

    /// One step done; `msg` says which.
    pub fn inc(&mut self, msg: &str) {
        self.done += 1;
        let total = self.total.unwrap_or(self.done).max(self.done);
        let line = format!("{} ({msg})", estimate(&self.label, self.done, total, self.started.elapsed()));
        self.show(line);
    }

    /// The next step starts; `msg` says what it is. A step past the
    /// expected total raises the total (the estimate was short).
    pub fn begin(&mut self, msg: &str) {
        let n = self.done + 1;
        if let Some(t) = self.total.as_mut() {
            *t = (*t).max(n);
            if let Out::Bar(b) = &self.out {
                b.set_length(*t);
            }
        }
        let mut line = starting(&self.label, n, self.total, self.started.elapsed());
        if !msg.is_empty() {
            line += &format!(" ({msg})");
        }
        self.show(line);
        self.done = n;
        // The bar shows the steps finished, not the one running.
        if let Out::Bar(b) = &self.out {
            b.set_position(n - 1);
        }
    }

    /// Prints text without tearing the bar.
    pub fn print(&mut self, text: &str) {
        match &mut self.out {
            Out::Bar(b) => b.suspend(|| print!("{text}")),
            Out::Lines(w) => {
                let _ = write!(w, "{text}").and_then(|_| w.flush());
            }
        }
    }

    pub fn finish(self) {}
}

/// The bar goes away however the work ends (an error returns early).
impl Drop for Progress {
    fn drop(&mut self) {
        if let Out::Bar(b) = &self.out {
            b.finish_and_clear();
            if let Ok(mut s) = SHOWN.lock() {
                *s = None;
            }
        }
    }
}

/// A `Write` that keeps what was written (tests read the plain lines).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(pub std::sync::Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_uses_the_mean_of_the_steps_so_far() {
        assert_eq!(estimate("boot", 0, 7, Duration::ZERO), "boot 0 of 7");
        assert_eq!(estimate("boot", 3, 7, Duration::from_secs(30)), "boot 3 of 7, about 40 s left");
        assert_eq!(estimate("scenario", 1, 11, Duration::from_secs(60)), "scenario 1 of 11, about 10 min left");
        assert_eq!(estimate("boot", 7, 7, Duration::from_secs(70)), "boot 7 of 7");
    }

    #[test]
    fn starting_counts_the_running_step_as_left() {
        assert_eq!(starting("boot", 1, Some(7), Duration::ZERO), "boot 1 of 7");
        assert_eq!(starting("boot", 4, Some(7), Duration::from_secs(30)), "boot 4 of 7, about 40 s left");
        assert_eq!(starting("boot", 3, None, Duration::from_secs(30)), "boot 3");
    }

    #[test]
    fn plain_lines_one_per_step_and_the_total_grows_when_short() {
        let cap = Captured::default();
        let mut p = Progress::lines(Some(2), "boot", Box::new(cap.clone()));
        p.begin("raw");
        p.begin("");
        p.begin("panic@ready");
        p.print("a summary\n");
        p.finish();
        let text = cap.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "boot 1 of 2 (raw)");
        assert!(lines[1].starts_with("boot 2 of 2, about "), "{text}");
        assert!(lines[2].starts_with("boot 3 of 3") && lines[2].ends_with("(panic@ready)"), "{text}");
        assert_eq!(lines[3], "a summary");
        assert!(!text.contains('\u{1b}'), "no control codes in plain lines");
    }
}
