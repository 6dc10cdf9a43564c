//! Progress over a known number of steps (scenarios of `--all`, boots):
//! an indicatif bar on a terminal, one plain line per step when stdout is
//! not a terminal or under CI=true (logs stay readable, no control codes).
//! The time left is the mean of the steps measured so far times the steps
//! left; nothing is guessed before the first step ends.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

/// "step 4 of 7, about 40 s left": `done` steps took `elapsed` in all.
pub fn estimate(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let mut s = format!("{label} {done} of {total}");
    if done > 0 && done < total {
        let left = elapsed.as_secs_f64() / done as f64 * (total - done) as f64;
        s += &format!(", about {} left", human(left));
    }
    s
}

fn human(secs: f64) -> String {
    if secs < 90.0 {
        format!("{:.0} s", secs)
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

fn use_bar() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal() && std::env::var("CI").as_deref() != Ok("true")
}

impl Progress {
    pub fn new(total: u64, label: &str) -> Self {
        let bar = use_bar().then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {msg}") {
                b.set_style(style);
            }
            b.set_message(estimate(label, 0, total, Duration::ZERO));
            b
        });
        Progress { label: label.to_string(), total, done: 0, started: Instant::now(), bar }
    }

    /// One step done; `msg` says which.
    pub fn inc(&mut self, msg: &str) {
        self.done += 1;
        let line = format!("{} ({msg})", estimate(&self.label, self.done, self.total, self.started.elapsed()));
        match &self.bar {
            Some(b) => {
                b.set_position(self.done);
                b.set_message(line);
            }
            None => println!("{line}"),
        }
    }

    /// Prints text without tearing the bar.
    pub fn print(&self, text: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| print!("{text}")),
            None => print!("{text}"),
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
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
}
