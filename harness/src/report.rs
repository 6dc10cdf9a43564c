//! Scenario reports: JSON (everything: boots, checks, artifact paths) and
//! JUnit XML (one testsuite per scenario, one testcase per check) for CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::target::BootRecord;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("Writing report {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Encoding the JSON report")]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub target: String,
    pub fs: String,
    /// Every check passed and the scenario ran to its end.
    pub passed: bool,
    pub started_unix: u64,
    pub duration_ms: u64,
    pub boots: Vec<BootRecord>,
    pub checks: Vec<Check>,
    /// Why the scenario stopped early (a step that could not be done).
    pub error: Option<String>,
    /// Disk images and logs, when kept (--keep).
    pub artifacts: Option<PathBuf>,
    /// The kept disk images (userdata, metadata).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PathBuf>,
    /// What the scenario found for its caller, by name (a campaign trial's
    /// outcome and where its cuts landed).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
}

impl ScenarioReport {
    pub fn new(scenario: &str, target: &str, fs: &str) -> Self {
        ScenarioReport {
            scenario: scenario.to_string(),
            target: target.to_string(),
            fs: fs.to_string(),
            passed: false,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            duration_ms: 0,
            boots: Vec::new(),
            checks: Vec::new(),
            error: None,
            artifacts: None,
            images: Vec::new(),
            facts: BTreeMap::new(),
        }
    }

    /// Sets `passed` from the checks and the error.
    pub fn finish(&mut self) {
        self.passed = self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.passed);
    }

    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }

    /// Plain text summary for terminals and panic messages.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "scenario {} on {}: {} ({} boots, {} checks, {:.1} s)\n",
            self.scenario,
            self.target,
            if self.passed { "PASSED" } else { "FAILED" },
            self.boots.len(),
            self.checks.len(),
            self.duration_ms as f64 / 1000.0
        );
        for b in &self.boots {
            s += &format!(
                "  boot {}: {} -> {} (last stage {}, {:.1} s)\n",
                b.index,
                b.failure.as_deref().unwrap_or("no failure injected"),
                b.ended.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "running".into()),
                b.last_stage(),
                b.duration_ms as f64 / 1000.0
            );
        }
        for c in &self.checks {
            // Full details are in the JSON report; one line each here.
            let detail = c.detail.trim().lines().next().unwrap_or_default();
            s += &format!("  [{}] {}: {detail}\n", if c.passed { "ok" } else { "FAIL" }, c.name);
        }
        if let Some(e) = &self.error {
            s += &format!("  error: {e}\n");
        }
        if let Some(a) = &self.artifacts {
            s += &format!("  artifacts kept in {}\n", a.display());
        }
        for i in &self.images {
            s += &format!("  disk image {}\n", i.display());
        }
        s
    }
}

pub fn to_json(reports: &[ScenarioReport]) -> Result<String, ReportError> {
    if let [one] = reports {
        return Ok(serde_json::to_string_pretty(one)?);
    }
    Ok(serde_json::to_string_pretty(reports)?)
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters (console logs have them).
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite per scenario, a testcase per check, plus one
/// for an early stop.
pub fn to_junit(reports: &[ScenarioReport]) -> String {
    let total: usize = reports.iter().map(|r| r.checks.len() + usize::from(r.error.is_some())).sum();
    let failures: usize = reports.iter().map(|r| r.failed_checks().len()).sum();
    let errors: usize = reports.iter().filter(|r| r.error.is_some()).count();
    let time: f64 = reports.iter().map(|r| r.duration_ms as f64 / 1000.0).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuites name=\"rewind-harness\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n"
    );
    for r in reports {
        let name = xml_escape(&r.scenario);
        x += &format!(
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">\n",
            r.checks.len() + usize::from(r.error.is_some()),
            r.failed_checks().len(),
            usize::from(r.error.is_some()),
            r.duration_ms as f64 / 1000.0
        );
        x += "    <properties>\n";
        x += &format!("      <property name=\"target\" value=\"{}\"/>\n", xml_escape(&r.target));
        x += &format!("      <property name=\"fs\" value=\"{}\"/>\n", xml_escape(&r.fs));
        if let Some(a) = &r.artifacts {
            x += &format!("      <property name=\"artifacts\" value=\"{}\"/>\n", xml_escape(&a.display().to_string()));
        }
        x += "    </properties>\n";
        for c in &r.checks {
            let case = format!("    <testcase classname=\"rewind.{name}\" name=\"{}\" time=\"0\"", xml_escape(&c.name));
            if c.passed {
                x += &format!("{case}/>\n");
            } else {
                x += &format!(
                    "{case}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml_escape(&c.detail.lines().next().unwrap_or_default().chars().take(200).collect::<String>()),
                    xml_escape(&c.detail)
                );
            }
        }
        if let Some(e) = &r.error {
            x += &format!(
                "    <testcase classname=\"rewind.{name}\" name=\"scenario ran to its end\" time=\"0\">\n      <error message=\"{}\">{}</error>\n    </testcase>\n",
                xml_escape(e.lines().next().unwrap_or_default()),
                xml_escape(e)
            );
        }
        let boots: String = r
            .boots
            .iter()
            .map(|b| {
                format!(
                    "boot {}: {} -> {} (stages: {}; console: {})\n",
                    b.index,
                    b.failure.as_deref().unwrap_or("no failure injected"),
                    b.ended.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "running".into()),
                    b.stages.join(","),
                    b.console_log.display()
                )
            })
            .collect();
        x += &format!("    <system-out>{}</system-out>\n", xml_escape(&boots));
        x += "  </testsuite>\n";
    }
    x += "</testsuites>\n";
    x
}

pub fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ScenarioReport {
        let mut r = ScenarioReport::new("dm-witness", "qemu (tcg)", "ext4");
        r.checks.push(Check {
            name: "linear table reads back".into(),
            passed: true,
            detail: "0 1048576 linear 254:0 0".into(),
        });
        r.checks.push(Check {
            name: "fsck clean".into(),
            passed: false,
            detail: "e2fsck said <bad> & \"worse\"\u{1b}[0m".into(),
        });
        r.finish();
        r
    }

    #[test]
    fn passed_needs_every_check_and_no_error() {
        let mut r = report();
        assert!(!r.passed);
        r.checks[1].passed = true;
        r.finish();
        assert!(r.passed);
        r.error = Some("boot 2 timed out".into());
        r.finish();
        assert!(!r.passed);
        let mut empty = ScenarioReport::new("x", "t", "ext4");
        empty.finish();
        assert!(!empty.passed, "a scenario that checked nothing did not pass");
    }

    #[test]
    fn json_has_the_scenario_boots_and_checks() {
        let j: serde_json::Value = serde_json::from_str(&to_json(&[report()]).unwrap()).unwrap();
        assert_eq!(j["scenario"], "dm-witness");
        assert_eq!(j["passed"], false);
        assert_eq!(j["checks"][1]["name"], "fsck clean");
        assert!(j["boots"].as_array().unwrap().is_empty());
        let two: serde_json::Value = serde_json::from_str(&to_json(&[report(), report()]).unwrap()).unwrap();
        assert_eq!(two.as_array().unwrap().len(), 2);
    }

    #[test]
    fn junit_counts_failures_and_escapes() {
        let mut r = report();
        r.error = Some("stopped <early>".into());
        r.finish();
        let x = to_junit(&[r]);
        assert!(x.starts_with("<?xml"));
        assert!(x.contains("tests=\"3\" failures=\"1\" errors=\"1\""));
        assert!(x.contains("<testcase classname=\"rewind.dm-witness\" name=\"linear table reads back\" time=\"0\"/>"));
        assert!(x.contains("e2fsck said &lt;bad&gt; &amp; &quot;worse&quot;[0m"));
        assert!(!x.contains('\u{1b}'));
        assert!(x.contains("<error message=\"stopped &lt;early&gt;\">"));
        assert!(x.trim_end().ends_with("</testsuites>"));
    }
}
