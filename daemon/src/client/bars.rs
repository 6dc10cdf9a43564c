//! `rewindctl watch` on a terminal: each running merge as an indicatif
//! bar (bytes merged of the total, MiB/s and time left from
//! [`MergeRates`](super::MergeRates)), the status and event lines printed
//! above the bars. Not a terminal (scripts, init, the harness's guests):
//! plain lines only, as before.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bars only for a person at a terminal: stdout a tty and not CI.
pub fn wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var("CI").as_deref() != Ok("true")
}

pub struct MergeBars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl MergeBars {
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    fn with_target(target: ProgressDrawTarget) -> Self {
        MergeBars { multi: MultiProgress::with_draw_target(target), bars: HashMap::new() }
    }

    /// One partition's merge from a status sample: a bar while it runs
    /// (`done < total`), gone when it ends. `rate`: "merging 2.0 MiB/s,
    /// about 40 s left" once two samples gave one.
    pub fn update(&mut self, name: &str, done_sectors: u64, total_sectors: u64, rate: Option<&str>) {
        if total_sectors == 0 || done_sectors >= total_sectors {
            if let Some(b) = self.bars.remove(name) {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
            return;
        }
        let multi = &self.multi;
        let bar = self.bars.entry(name.to_string()).or_insert_with(|| {
            let b = multi.add(ProgressBar::new(total_sectors * 512));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} {bar:30} {binary_bytes}/{binary_total_bytes} {msg}")
            {
                b.set_style(style);
            }
            b.set_prefix(super::printable(name).into_owned());
            b
        });
        bar.set_length(total_sectors * 512);
        bar.set_position(done_sectors * 512);
        bar.set_message(rate.unwrap_or("merging").to_string());
    }

    /// A status or event line, above the bars.
    pub fn println(&self, line: &str) {
        if self.bars.is_empty() {
            println!("{line}");
        } else {
            self.multi.suspend(|| println!("{line}"));
        }
    }
}

impl Drop for MergeBars {
    fn drop(&mut self) {
        for b in self.bars.values() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_per_running_merge_gone_when_it_ends() {
        let mut m = MergeBars::with_target(ProgressDrawTarget::hidden());
        m.update("userdata", 0, 0, None);
        assert!(m.bars.is_empty(), "no merge, no bar");
        m.update("userdata", 20 * 2048, 100 * 2048, Some("merging 2.0 MiB/s, about 40 s left"));
        let b = &m.bars["userdata"];
        assert_eq!((b.position(), b.length()), (20 << 20, Some(100 << 20)));
        assert_eq!(b.message(), "merging 2.0 MiB/s, about 40 s left");
        m.update("metadata", 1, 8, None);
        assert_eq!(m.bars["metadata"].message(), "merging");
        m.update("userdata", 100 * 2048, 100 * 2048, None);
        assert!(!m.bars.contains_key("userdata") && m.bars.contains_key("metadata"));
    }
}
