//! The `rewind-harness` command line. anyhow lives here, at the edge only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::guest::{GuestConfig, QemuGuest};
use crate::kit::Kit;
use crate::plan::{BootPlan, FsType};
use crate::report;
use crate::scenario::{self, Options};

const EXAMPLES: &str = "\
Examples:
  rewind-harness kit                               # build (or reuse) the guest kit, list it
  rewind-harness scenario --list
  rewind-harness scenario --all --junit all.xml     # every scenario that needs no rewindd
  rewind-harness scenario dm-witness
  rewind-harness scenario failure-kinds --report out.json --junit out.xml
  rewind-harness scenario three-failed-boots --fs f2fs --keep
  rewind-harness scenario device-fail-then-commit --target adb --serial 1A2B3C4D --android-bins out/arm64
  rewind-harness scenario device-fail-then-commit --target cuttlefish --cvd-dir ~/cf
  rewind-harness scenario manifest-detects-changes --baseline my-data.sh
  rewind-harness scenario three-failed-boots --workload migrate.sh --guest-tool /usr/bin/sqlite3
  rewind-harness scenario metadata-encryption       # /data over dm-crypt on rewind-userdata (vold's stack)
  rewind-harness scenario device-three-failed-boots                 # QEMU restricted to what a device can do
  rewind-harness scenario device-three-failed-boots --target adb    # the same on a device
  rewind-harness scenario abort --device-profile                    # could a device run it? (no: says what it cannot)
  rewind-harness demo                              # narrated: three failed boots, then rollback
  rewind-harness campaign --trials 50 --seed 7 --report c.json --junit c.xml   # random power cuts
  rewind-harness campaign --trials 50 --seed 7 --shard 2/4 --report c2.json   # one CI matrix job of four
  rewind-harness campaign merge c1.json c2.json c3.json c4.json --report c.json --junit c.xml
  rewind-harness campaign --seed 7 --trial 12                                  # replay one trial
  rewind-harness log-writes --phase commit --seed 1 --points 6 --between 2 --report lw.json   # lost write caches
  rewind-harness log-writes --from DIR --point between@812:4411   # replay one point of a kept log
  rewind-harness guest shell                       # serial console on this terminal (Ctrl-A x quits)
  rewind-harness bench --report bench.json --plot docs/bench.svg   # the benchmark (about 30 min under TCG)
  rewind-harness bench --quick --html bench.html   # the table, ratios and plot on one page
  rewind-harness bench --quick                     # the same, smoke-sized (what CI runs)
  rewind-harness bench --boots 5                   # median boot-to-ready time
  rewind-harness bench --f2fs-checkpoint --boots 3 # f2fs checkpoint=disable vs plain: mount, write, commit

Environment:
  REWIND_KIT_DIR        kit cache (default target/rewind-kit)
  REWIND_ACCEL          kvm or tcg (default: probe KVM once, cache the answer)
  REWIND_MAX_GUESTS     guests at once on this machine (default 2)
  REWIND_KERNEL_PACKAGE pin the Debian kernel package (default: what linux-image-amd64 depends on)
  REWIND_NO_CARGO_BUILD use the project binaries as they are (no cargo build)
  REWIND_BENCH_SECTIONS bench only these parts: matrix,lifecycle,scale (default all)

Exit status: 0 when every check passed, 1 when a check failed, 2 on errors.";

#[derive(Debug, Parser)]
#[command(
    name = "rewind-harness",
    version,
    about = "Boots real kernels in QEMU guests, injects boot failures, verifies userdata without trusting rewindd",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args, Clone)]
struct RunArgs {
    /// Filesystem of userdata.
    #[arg(long, default_value = "ext4", value_parser = parse_fs)]
    fs: FsType,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML page (verdict, boots on a timeline, checks, console log links) here.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Keep disk images and logs (the report names their directory).
    #[arg(long)]
    keep: bool,
    /// Print each boot's QEMU command line (always in the JSON report).
    #[arg(long)]
    verbose: bool,
    /// Script run in the guest (sh with busybox applets, /data mounted, REWIND_DATA=/data) to fill userdata before the checkpoint.
    #[arg(long, value_name = "SCRIPT")]
    baseline: Option<PathBuf>,
    /// Script run by each boot of the "new system" (REWIND_ATTEMPT is set).
    #[arg(long, value_name = "SCRIPT")]
    workload: Option<PathBuf>,
    /// Host program added to the guest (with its shared libraries), e.g. /usr/bin/sqlite3.
    #[arg(long = "guest-tool", value_name = "PATH")]
    guest_tools: Vec<PathBuf>,
    /// Size of the userdata disk, MiB (default 512).
    #[arg(long, value_name = "MIB")]
    userdata_mib: Option<u64>,
    /// vCPUs of the guest (default 1). Under TCG more than one takes a
    /// host core each: the machine-wide two-guest limit assumes one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    cpus: Option<u32>,
    /// Emulate Android's metadata encryption: /data is mounted from a
    /// dm-crypt (aes-xts-plain64) layer the guest stacks on its device, so
    /// userdata holds only ciphertext (ext4 only).
    #[arg(long)]
    metadata_encryption: bool,
    /// Restrict the QEMU guest to what a physical Android device can do
    /// (rewind boots only, a panic at ready, no power cut, the commit
    /// deferred): anything else fails as "cannot". The device-* scenarios
    /// always run so on QEMU.
    #[arg(long)]
    device_profile: bool,
}

fn parse_fs(s: &str) -> Result<FsType, String> {
    s.parse()
}

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
enum TargetKind {
    /// A QEMU guest built from the kit (what CI runs).
    #[default]
    Qemu,
    /// An Android device over adb (not run in CI).
    Adb,
    /// A Cuttlefish device: launch_cvd/stop_cvd, then adb (not run in CI).
    Cuttlefish,
}

#[derive(Debug, clap::Args, Clone)]
struct DeviceArgs {
    /// Where to run: a QEMU guest, a device over adb, or Cuttlefish.
    #[arg(long, value_enum, default_value_t = TargetKind::Qemu)]
    target: TargetKind,
    /// adb serial of the device (`adb devices -l`); default: the only one.
    #[arg(long, value_name = "SERIAL")]
    serial: Option<String>,
    /// Cuttlefish host package / runtime directory (holds bin/launch_cvd; default $HOME).
    #[arg(long, value_name = "DIR")]
    cvd_dir: Option<PathBuf>,
    /// Cuttlefish instance number (launch_cvd --base_instance_num).
    #[arg(long, value_name = "N", default_value_t = 1)]
    cvd_instance: u32,
    /// Directory with rewindd, rewindctl, rewind-manifest built for the
    /// device: pushed to /system/bin after `adb root` + `adb remount`
    /// (userdebug, verity off). Without it the build must contain rewind.
    #[arg(long, value_name = "DIR")]
    android_bins: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario (or list them).
    Scenario {
        /// Scenario name (see --list).
        name: Option<String>,
        /// List the scenarios.
        #[arg(long)]
        list: bool,
        /// Run every scenario that needs no rewindd, one after the other
        /// (with --with-daemon: every scenario); one report for all.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// With --all: also the scenarios that need rewindd.
        #[arg(long, requires = "all")]
        with_daemon: bool,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Narrated demo: a checkpoint, three failed boots of the new system, rollback.
    Demo {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Random power cuts over an update's phases, from a seed: each trial
    /// cuts one phase (sometimes the boots after it too), lets rewind
    /// finish and checks userdata is the baseline or the committed state
    /// exactly. `campaign merge` joins the reports of shards.
    #[command(args_conflicts_with_subcommands = true)]
    Campaign {
        #[command(subcommand)]
        command: Option<CampaignCommand>,
        #[command(flatten)]
        args: CampaignArgs,
    },
    /// Lost volatile write caches (dm-log-writes): one guest records a
    /// phase (commit, arm or merge) with its userdata and metadata disks
    /// logged as one ordered stream, then each chosen point (every
    /// flush/FUA point of the phase when at most --points, else a seeded
    /// sample; plus --between points where the cache kept a seeded subset
    /// of the writes since the last flush) is rebuilt onto the disks,
    /// booted normally, and must end at the baseline or committed exactly.
    #[command(name = "log-writes")]
    LogWrites(LogWritesArgs),
    /// Interactive guests.
    Guest {
        #[command(subcommand)]
        command: GuestCommand,
    },
    /// Build or refresh the guest kit and print what is in it.
    Kit,
    /// The benchmark: fio in one guest per configuration (idle stack, block
    /// mode at 4/16/64 KiB chunks with and without the free map, f2fs
    /// checkpoint=disable), COW space, commit, rollback, stack build over
    /// fragmented stores; ratios to the idle stack of the same run.
    Bench {
        /// The smoke-sized run (fewer configurations and repetitions, small sizes).
        #[arg(long)]
        quick: bool,
        /// Write the JSON report here.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Write the SVG plot here.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Write a self-contained HTML page (the table, ratios, targets, the plot inline) here.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Instead: boot-to-ready of a raw guest, median of N boots.
        #[arg(long, value_name = "N", conflicts_with_all = ["quick", "report", "plot", "html"])]
        boots: Option<u32>,
        #[arg(long, default_value = "ext4", value_parser = parse_fs)]
        fs: FsType,
        /// Instead: f2fs mount/write/commit costs with checkpoint=disable
        /// vs a plain mount, side by side (f2fs userdata; --boots = rounds).
        #[arg(long, conflicts_with_all = ["quick", "report", "plot", "html"])]
        f2fs_checkpoint: bool,
    },
}

#[derive(Debug, clap::Args, Clone)]
struct CampaignArgs {
    /// Trials in the campaign (the shards split them).
    #[arg(long, default_value_t = 10)]
    trials: u64,
    /// The campaign's seed: trial I of seed S is the same everywhere.
    #[arg(long)]
    seed: Option<u64>,
    /// Run only trial I (the replay command a failure prints); repeat or
    /// list (3,8,13) for several.
    #[arg(long, value_name = "I", value_delimiter = ',', conflicts_with = "shard")]
    trial: Vec<u64>,
    /// Run the K-th of M disjoint slices of the trials (a CI matrix job).
    #[arg(long, value_name = "K/M", default_value = "1/1")]
    shard: crate::campaign::Shard,
    #[arg(long, default_value = "ext4", value_parser = parse_fs)]
    fs: FsType,
    /// /data over dm-crypt on rewind-userdata (ext4 only).
    #[arg(long)]
    metadata_encryption: bool,
    /// Keep each trial's disk images and logs.
    #[arg(long)]
    keep: bool,
    /// Boot each trial's old system (the baseline and the checkpoint's
    /// start) itself, instead of starting from a copy of the one the run's
    /// first trial booted and saved (slower by about a third).
    #[arg(long)]
    fresh: bool,
    /// Print the trials (phase, moment, further cuts) without running them.
    #[arg(long)]
    list: bool,
    /// Write the JSON report here (what `campaign merge` reads).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a JUnit XML report here (a test case per trial).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML page here (outcomes per phase as a
    /// chart, every trial with its replay command).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, clap::Args, Clone)]
struct LogWritesArgs {
    /// The phase to log: commit, arm or merge.
    #[arg(long, default_value = "commit")]
    phase: crate::logwrites::Phase,
    /// Seeds the choice of points and the subsets kept between flushes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Flush/FUA points to replay at most (all of them when there are no more).
    #[arg(long, default_value_t = 6)]
    points: usize,
    /// Points between flushes to replay (a seeded subset of the cached writes kept).
    #[arg(long, default_value_t = 2)]
    between: usize,
    /// Keep the log, the disks as logging began and the summary here
    /// (default: under the kit's runs directory; removed when all passed
    /// unless --keep).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replay a kept log (a failure's directory) instead of recording one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out"])]
    from: Option<PathBuf>,
    /// Only these points (flush@ENTRY or between@ENTRY:SEED, as printed); repeatable.
    #[arg(long, value_name = "POINT", value_delimiter = ',', requires = "from")]
    point: Vec<crate::logwrites::Point>,
    /// Keep the log directory and the guest's run directory.
    #[arg(long)]
    keep: bool,
    /// Write the JSON summary here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// The log-writes run: the table on stdout, the JSON where asked; fails
/// when a point failed.
fn run_log_writes(args: LogWritesArgs) -> Result<bool> {
    use crate::logwrites;
    let phase = match &args.from {
        Some(dir) => logwrites::recorded_phase(dir)
            .with_context(|| format!("{} holds no recorded log-writes run (recorded.json)", dir.display()))?,
        None => args.phase,
    };
    let cfg = logwrites::Config {
        phase,
        seed: args.seed,
        points: args.points,
        between: args.between,
        out: args.out.clone().unwrap_or_else(|| logwrites::default_out(phase, args.seed)),
        from: args.from.clone(),
        only: args.point.clone(),
        keep: args.keep,
    };
    let summary = logwrites::run(&cfg).context("Running log-writes")?;
    print!("{}", summary.render());
    if let Some(path) = &args.report {
        report::write(path, &serde_json::to_string_pretty(&summary).context("Encoding the summary")?)?;
        eprintln!("report: {}", path.display());
    }
    if !summary.passed() {
        eprintln!("the log is kept in {}", summary.dir.display());
    }
    Ok(summary.passed())
}

#[derive(Debug, Subcommand)]
enum CampaignCommand {
    /// Merge the JSON reports of one campaign's shards into one.
    Merge {
        /// The shards' JSON reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum GuestCommand {
    /// Boot a guest with its serial console on this terminal.
    Shell {
        #[arg(long, default_value = "ext4", value_parser = parse_fs)]
        fs: FsType,
        /// Follow the boot contract with rewindd (default: raw /data).
        #[arg(long)]
        rewind: bool,
        /// Keep the disk images afterwards.
        #[arg(long)]
        keep: bool,
        #[arg(long = "guest-tool", value_name = "PATH")]
        guest_tools: Vec<PathBuf>,
    },
}

impl RunArgs {
    /// `progress`: a bar or a line per boot (`scenario NAME`; the demo
    /// only as a bar, its story already has a line per boot).
    fn options(&self, narrate: bool, progress: bool) -> Options {
        Options {
            fs: self.fs,
            keep: self.keep,
            baseline: self.baseline.clone(),
            workload: self.workload.clone(),
            guest_tools: self.guest_tools.clone(),
            userdata_mib: self.userdata_mib,
            cpus: self.cpus,
            metadata_encryption: self.metadata_encryption,
            narrate,
            verbose: self.verbose,
            device_profile: self.device_profile,
            progress,
            trial: None,
            old_systems: None,
            log_writes: None,
            sample_status: self.report.is_some() || self.html.is_some(),
        }
    }
}

fn run_scenario(name: &str, args: &RunArgs, narrate: bool) -> Result<bool> {
    for p in args.baseline.iter().chain(args.workload.iter()).chain(args.guest_tools.iter()) {
        if !p.exists() {
            bail!("{} does not exist", p.display());
        }
    }
    let report = scenario::run(name, &args.options(narrate, !narrate || crate::progress::use_bar()))
        .with_context(|| format!("Running scenario {name}"))?;
    if narrate {
        print!("{}", crate::story::render(&report));
    } else {
        print!("{}", report.summary());
    }
    if let Some(path) = &args.report {
        report::write(path, &report::to_json(std::slice::from_ref(&report))?)?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &args.junit {
        report::write(path, &report::to_junit(std::slice::from_ref(&report)))?;
        eprintln!("junit: {}", path.display());
    }
    if let Some(path) = &args.html {
        crate::html::write(&report, path)?;
        eprintln!("html: {}", path.display());
    }
    Ok(report.passed)
}

/// A scenario on an adb device or Cuttlefish. Setup problems (no adb, no
/// device, no launch_cvd) come back as one line and exit 2.
fn run_device_scenario(name: &str, args: &RunArgs, dev: &DeviceArgs) -> Result<bool> {
    use crate::device::{adb, cuttlefish};
    let Some(found) = scenario::find(name) else {
        bail!("Unknown scenario {name:?} (see `rewind-harness scenario --list`)");
    };
    let artifacts = crate::paths::target_dir().join("rewind-device").join(format!("{name}-{}", std::process::id()));
    let cfg = adb::AdbConfig {
        android_bins: dev.android_bins.clone(),
        baseline: args.baseline.clone(),
        workload: args.workload.clone(),
        artifacts,
    };
    let mut target = match dev.target {
        TargetKind::Adb => {
            let handle = adb::find_device(dev.serial.as_deref())?;
            {
                let power = adb::SysrqReset::new(handle.clone());
                adb::AdbTarget::new(handle, Box::new(power), cfg).context("Setting up the device")?
            }
        }
        TargetKind::Cuttlefish => {
            let cvd = cuttlefish::find_cvd(dev.cvd_dir.as_deref(), dev.cvd_instance)?;
            let handle = cuttlefish::start(&cvd)?;
            adb::AdbTarget::new(handle, Box::new(cuttlefish::CvdPower::new(cvd)), cfg)
                .context("Setting up the Cuttlefish device")?
        }
        TargetKind::Qemu => unreachable!("QEMU scenarios go through run_scenario"),
    };
    let report = scenario::run_on(&mut target, found, &args.options(false, true));
    print!("{}", report.summary());
    if let Some(path) = &args.report {
        report::write(path, &report::to_json(std::slice::from_ref(&report))?)?;
    }
    if let Some(path) = &args.junit {
        report::write(path, &report::to_junit(std::slice::from_ref(&report)))?;
    }
    if let Some(path) = &args.html {
        crate::html::write(&report, path)?;
    }
    Ok(report.passed)
}

fn run_all(args: &RunArgs, with_daemon: bool) -> Result<bool> {
    if args.html.is_some() {
        bail!("--html writes one scenario's page; run the scenario by name");
    }
    let mut reports = Vec::new();
    let chosen: Vec<_> = scenario::all().filter(|s| with_daemon || !s.needs.daemon).collect();
    let mut progress = crate::progress::Progress::new(chosen.len() as u64, "scenario");
    for s in chosen {
        let report = scenario::run(s.name, &args.options(false, false))
            .with_context(|| format!("Running scenario {}", s.name))?;
        progress.print(&report.summary());
        progress.inc(&format!("{} {}", s.name, if report.passed { "passed" } else { "FAILED" }));
        reports.push(report);
    }
    progress.finish();
    let passed = reports.iter().filter(|r| r.passed).count();
    println!("{passed} passed, {} failed", reports.len() - passed);
    if let Some(path) = &args.report {
        report::write(path, &report::to_json(&reports)?)?;
    }
    if let Some(path) = &args.junit {
        report::write(path, &report::to_junit(&reports))?;
    }
    Ok(passed == reports.len())
}

/// The campaign (or its merge): the table and failures on stdout, the
/// reports where asked; fails when a trial failed.
fn run_campaign(command: Option<CampaignCommand>, args: CampaignArgs) -> Result<bool> {
    use crate::campaign;
    let (report, json, junit, html) = match command {
        Some(CampaignCommand::Merge { reports, report, junit, html }) => {
            let mut read = Vec::new();
            for path in reports {
                let r = campaign::read(&path)?;
                read.push((path, r));
            }
            (campaign::merge(read)?, report, junit, html)
        }
        None => {
            let Some(seed) = args.seed else {
                bail!("campaign needs --seed S (any number; print it, it replays the campaign)");
            };
            if args.metadata_encryption && args.fs != FsType::Ext4 {
                bail!("--metadata-encryption is ext4 only");
            }
            let cfg = campaign::Config {
                seed,
                trials: args.trials,
                fs: args.fs,
                metadata_encryption: args.metadata_encryption,
                shard: args.shard,
                only: args.trial.clone(),
                keep: args.keep,
                fresh: args.fresh,
            };
            if args.list {
                print!("{}", campaign::list(&cfg));
                return Ok(true);
            }
            let (json, junit, html) = (args.report.clone(), args.junit.clone(), args.html.clone());
            let report = campaign::run_each(&cfg, |so_far| {
                if let Some(path) = &json {
                    report::write(path, &so_far.to_json()?)?;
                }
                if let Some(path) = &junit {
                    report::write(path, &so_far.to_junit())?;
                }
                if let Some(path) = &html {
                    report::write(path, &campaign::html::render(so_far))?;
                }
                Ok(())
            })
            .context("Running the campaign")?;
            (report, args.report, args.junit, args.html)
        }
    };
    print!("{}", report.render());
    if let Some(path) = &json {
        report::write(path, &report.to_json()?)?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &junit {
        report::write(path, &report.to_junit())?;
        eprintln!("junit: {}", path.display());
    }
    if let Some(path) = &html {
        report::write(path, &campaign::html::render(&report))?;
        eprintln!("html: {}", path.display());
    }
    Ok(report.passed())
}

/// The benchmark: the table on stdout, the JSON report and the plot
/// where asked. Figures only: it never fails on a timing.
fn run_bench(quick: bool, report: Option<PathBuf>, plot: Option<PathBuf>, html: Option<PathBuf>) -> Result<bool> {
    let plan = crate::bench::Plan::new(quick);
    let r = crate::bench::run(&plan).context("Running the benchmark")?;
    print!("{}", crate::bench::report::render(&r));
    if let Some(path) = &report {
        crate::bench::write_json(&r, path)?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &plot {
        crate::bench::plot::write_svg(&r, path)?;
        eprintln!("plot: {}", path.display());
    }
    if let Some(path) = &html {
        crate::bench::html::write(&r, path)?;
        eprintln!("html: {}", path.display());
    }
    Ok(true)
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Scenario { all: true, device, .. } if device.target != TargetKind::Qemu => {
            bail!("--all runs on QEMU only; name one scenario for --target {:?}", device.target)
        }
        Command::Scenario { all: true, with_daemon, run, .. } => run_all(&run, with_daemon),
        Command::Scenario { list: true, .. } | Command::Scenario { name: None, .. } => {
            for s in scenario::all() {
                let needs = s.needs.describe();
                println!(
                    "{:<26} {}{}",
                    s.name,
                    s.summary,
                    if needs.is_empty() { String::new() } else { format!(" [needs {needs}]") }
                );
            }
            Ok(true)
        }
        Command::Scenario { name: Some(name), run, device, .. } if device.target != TargetKind::Qemu => {
            run_device_scenario(&name, &run, &device)
        }
        Command::Scenario { name: Some(name), run, .. } => run_scenario(&name, &run, false),
        Command::Demo { run } => {
            println!("rewind demo: a phone's userdata survives three failed boots of an update.");
            run_scenario("three-failed-boots", &run, true)
        }
        Command::Bench { boots, f2fs_checkpoint: true, .. } => {
            let boots = boots.unwrap_or(3);
            let mut guest =
                QemuGuest::new(GuestConfig::new("bench-f2fs").with_fs(FsType::F2fs)).context("Preparing the guest")?;
            crate::target::Target::boot(&mut guest, &BootPlan::raw()).context("Booting")?;
            let figures = crate::bench::f2fs_checkpoint(&mut guest, boots).context("Measuring in the guest")?;
            println!("on {}:\n{figures}\n{}", crate::target::Target::describe(&guest), figures.raw);
            crate::target::Target::power_cut(&mut guest).context("Stopping the guest")?;
            Ok(true)
        }
        Command::Bench { quick, report, plot, html, boots: None, .. } => run_bench(quick, report, plot, html),
        Command::Bench { boots: Some(boots), fs, .. } => {
            let mut guest = QemuGuest::new(GuestConfig::new("bench").with_fs(fs)).context("Preparing the guest")?;
            let mut times = Vec::new();
            for _ in 0..boots.max(1) {
                let rec = crate::target::Target::boot(&mut guest, &BootPlan::raw()).context("Booting")?;
                let ms = rec.ready_ms.context("The guest did not reach ready")?;
                times.push(ms);
                crate::target::Target::power_cut(&mut guest).context("Stopping the guest")?;
            }
            times.sort_unstable();
            let median = times[times.len() / 2];
            println!(
                "boot-to-ready on {} over {} boots: median {:.2} s (min {:.2} s, max {:.2} s)",
                crate::target::Target::describe(&guest),
                times.len(),
                median as f64 / 1000.0,
                times[0] as f64 / 1000.0,
                times[times.len() - 1] as f64 / 1000.0
            );
            Ok(true)
        }
        Command::Campaign { command, args } => run_campaign(command, args),
        Command::LogWrites(args) => run_log_writes(args),
        Command::Kit => {
            let kit = Kit::ensure().context("Building the guest kit")?;
            print!("{}", kit.describe());
            Ok(true)
        }
        Command::Guest { command: GuestCommand::Shell { fs, rewind, keep, guest_tools } } => {
            let mut cfg = GuestConfig::new("shell").with_fs(fs).keep(keep);
            for t in guest_tools {
                cfg = cfg.with_guest_tool(t);
            }
            let mut guest = QemuGuest::new(cfg).context("Preparing the guest")?;
            let plan = if rewind { BootPlan::rewind() } else { BootPlan::raw() };
            let status = guest.interactive(&plan).context("Running QEMU")?;
            if keep {
                eprintln!("disk images kept in {}", crate::target::Target::artifacts_dir(&guest).display());
            }
            Ok(status.success())
        }
    }
}

/// Prints the numbered error chain (cloud-hypervisor style).
fn print_error(e: &anyhow::Error) {
    eprintln!("Error: {e}");
    for (i, cause) in e.chain().skip(1).enumerate() {
        eprintln!("  {i}: {cause}");
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            print_error(&e);
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn scenario_flags_parse() {
        let cli = Cli::try_parse_from([
            "rewind-harness",
            "scenario",
            "dm-witness",
            "--fs",
            "f2fs",
            "--keep",
            "--guest-tool",
            "/usr/bin/sqlite3",
            "--report",
            "r.json",
        ])
        .unwrap();
        match cli.command {
            Command::Scenario { name, run, .. } => {
                assert_eq!(name.as_deref(), Some("dm-witness"));
                assert_eq!(run.fs, FsType::F2fs);
                assert!(run.keep);
                assert_eq!(run.guest_tools, vec![PathBuf::from("/usr/bin/sqlite3")]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["rewind-harness", "scenario", "x", "--fs", "btrfs"]).is_err());
        match Cli::try_parse_from(["rewind-harness", "scenario", "x", "--device-profile"]).unwrap().command {
            Command::Scenario { run, .. } => assert!(run.options(false, false).device_profile),
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["rewind-harness", "scenario", "x", "--metadata-encryption"]).unwrap().command {
            Command::Scenario { run, .. } => assert!(run.options(false, false).metadata_encryption),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn target_flags_parse() {
        let cli = Cli::try_parse_from([
            "rewind-harness",
            "scenario",
            "dm-witness",
            "--target",
            "adb",
            "--serial",
            "emulator-5554",
        ])
        .unwrap();
        match cli.command {
            Command::Scenario { device, .. } => {
                assert_eq!(device.target, TargetKind::Adb);
                assert_eq!(device.serial.as_deref(), Some("emulator-5554"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["rewind-harness", "scenario", "x", "--target", "cuttlefish", "--cvd-dir", "/cf"])
                .unwrap();
        match cli.command {
            Command::Scenario { device, .. } => {
                assert_eq!(device.target, TargetKind::Cuttlefish);
                assert_eq!(device.cvd_dir, Some(PathBuf::from("/cf")));
                assert_eq!(device.cvd_instance, 1);
            }
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["rewind-harness", "scenario", "x"]).unwrap().command {
            Command::Scenario { device, .. } => assert_eq!(device.target, TargetKind::Qemu),
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["rewind-harness", "scenario", "x", "--target", "vbox"]).is_err());
    }

    #[test]
    fn campaign_flags_parse() {
        let cli = Cli::try_parse_from([
            "rewind-harness",
            "campaign",
            "--trials",
            "40",
            "--seed",
            "7",
            "--shard",
            "2/4",
            "--fs",
            "f2fs",
            "--junit",
            "c.xml",
        ])
        .unwrap();
        match cli.command {
            Command::Campaign { command: None, args } => {
                assert_eq!((args.trials, args.seed, args.fs), (40, Some(7), FsType::F2fs));
                assert_eq!(args.shard, crate::campaign::Shard { k: 2, m: 4 });
                assert_eq!(args.junit, Some(PathBuf::from("c.xml")));
            }
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["rewind-harness", "campaign", "merge", "a.json", "b.json", "--report", "c.json"])
            .unwrap()
            .command
        {
            Command::Campaign { command: Some(CampaignCommand::Merge { reports, report, .. }), .. } => {
                assert_eq!(reports, vec![PathBuf::from("a.json"), PathBuf::from("b.json")]);
                assert_eq!(report, Some(PathBuf::from("c.json")));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["rewind-harness", "campaign", "--shard", "5/4"]).is_err());
        assert!(Cli::try_parse_from(["rewind-harness", "campaign", "--trial", "3", "--shard", "1/2"]).is_err());
        match Cli::try_parse_from(["rewind-harness", "campaign", "--seed", "1", "--trial", "3,8", "--trial", "13"])
            .unwrap()
            .command
        {
            Command::Campaign { args, .. } => assert_eq!(args.trial, vec![3, 8, 13]),
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["rewind-harness", "campaign", "merge"]).is_err());
    }

    #[test]
    fn every_registered_scenario_has_a_unique_name() {
        let mut names: Vec<&str> = scenario::all().map(|s| s.name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
