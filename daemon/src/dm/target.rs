//! Target lines for the rewind stack: linear, snapshot-origin, snapshot and
//! snapshot-merge, as devicemapper-rs TargetParams (Display + FromStr, the
//! text the kernel takes and gives back) and one TargetTable for all four.
//!
//! Devices are always written as `major:minor`, the form the kernel echoes
//! in its tables, so a table we want compares equal to the table the kernel
//! has without resolving paths.

use std::fmt;
use std::str::FromStr;

use devicemapper::{
    Device, DmError, DmResult, ErrorEnum, LinearTargetParams, Sectors, TargetLine, TargetParams, TargetTable,
    TargetTypeBuf,
};

pub const LINEAR: &str = "linear";
pub const SNAPSHOT_ORIGIN: &str = "snapshot-origin";
pub const SNAPSHOT: &str = "snapshot";
pub const SNAPSHOT_MERGE: &str = "snapshot-merge";

fn invalid(msg: String) -> DmError {
    DmError::Dm(ErrorEnum::Invalid, msg)
}

fn target_type(name: &str) -> TargetTypeBuf {
    // The four names are constants well under the 16-byte limit.
    #[allow(clippy::expect_used)]
    TargetTypeBuf::new(name.to_string()).expect("constant target names are valid")
}

fn parse_dev(s: &str, what: &str) -> DmResult<Device> {
    s.parse::<Device>().map_err(|_| invalid(format!("{what}: expected major:minor, found '{s}'")))
}

/// Exception store type of a snapshot: `P` persistent, `PO` persistent with
/// overflow reporting (what rewind loads), `N` transient (never used; parsed
/// so a foreign table is reported rather than misread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    P,
    PO,
    N,
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persistence::P => "P",
            Persistence::PO => "PO",
            Persistence::N => "N",
        })
    }
}

impl FromStr for Persistence {
    type Err = DmError;
    fn from_str(s: &str) -> DmResult<Self> {
        match s {
            "P" => Ok(Persistence::P),
            "PO" => Ok(Persistence::PO),
            "N" => Ok(Persistence::N),
            _ => Err(invalid(format!("snapshot store type: expected P, PO or N, found '{s}'"))),
        }
    }
}

/// `snapshot-origin <origin>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginParams {
    pub origin: Device,
}

/// `snapshot <origin> <cow> <P|PO|N> <chunk>` and `snapshot-merge` (same
/// arguments). Optional feature args (discard_zeroes_cow...) are kept so a
/// foreign table never compares equal to ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapParams {
    pub origin: Device,
    pub cow: Device,
    pub persistence: Persistence,
    pub chunk: Sectors,
    pub features: Vec<String>,
}

impl SnapParams {
    pub fn new(origin: Device, cow: Device, chunk: Sectors) -> SnapParams {
        SnapParams { origin, cow, persistence: Persistence::PO, chunk, features: Vec::new() }
    }

    fn param_str(&self) -> String {
        let mut s = format!("{} {} {} {}", self.origin, self.cow, self.persistence, *self.chunk);
        if !self.features.is_empty() {
            s.push_str(&format!(" {} {}", self.features.len(), self.features.join(" ")));
        }
        s
    }

    fn parse(kind: &str, args: &[&str]) -> DmResult<SnapParams> {
        if args.len() < 4 {
            return Err(invalid(format!("{kind}: expected at least 4 arguments, found {}", args.len())));
        }
        let origin = parse_dev(args[0], "origin")?;
        let cow = parse_dev(args[1], "cow")?;
        let persistence = args[2].parse()?;
        let chunk: u64 = args[3].parse().map_err(|_| invalid(format!("{kind}: chunk size '{}'", args[3])))?;
        if chunk == 0 || !chunk.is_power_of_two() {
            return Err(invalid(format!("{kind}: chunk size {chunk} is not a power of two")));
        }
        let features = match args.get(4) {
            None => Vec::new(),
            Some(n) => {
                let n: usize = n.parse().map_err(|_| invalid(format!("{kind}: feature count '{n}'")))?;
                if args.len() != 5 + n {
                    return Err(invalid(format!("{kind}: {n} features announced, {} given", args.len() - 5)));
                }
                args[5..].iter().map(|s| s.to_string()).collect()
            }
        };
        Ok(SnapParams { origin, cow, persistence, chunk: Sectors(chunk), features })
    }
}

/// One line's target of any of the four kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Linear(LinearTargetParams),
    Origin(OriginParams),
    Snapshot(SnapParams),
    Merge(SnapParams),
}

impl Target {
    pub fn linear(device: Device, offset: Sectors) -> Target {
        Target::Linear(LinearTargetParams::new(device, offset))
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Linear(_) => LINEAR,
            Target::Origin(_) => SNAPSHOT_ORIGIN,
            Target::Snapshot(_) => SNAPSHOT,
            Target::Merge(_) => SNAPSHOT_MERGE,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.param_str())
    }
}

impl FromStr for Target {
    type Err = DmError;
    /// `<type> <params>`, as devicemapper-rs's targets parse.
    fn from_str(s: &str) -> DmResult<Target> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let (kind, args) = words.split_first().ok_or_else(|| invalid("empty target line".into()))?;
        match *kind {
            LINEAR => {
                if args.len() != 2 {
                    return Err(invalid(format!("linear: expected 2 arguments, found {}", args.len())));
                }
                let dev = parse_dev(args[0], "linear device")?;
                let off: u64 = args[1].parse().map_err(|_| invalid(format!("linear: offset '{}'", args[1])))?;
                Ok(Target::linear(dev, Sectors(off)))
            }
            SNAPSHOT_ORIGIN => {
                if args.len() != 1 {
                    return Err(invalid(format!("snapshot-origin: expected 1 argument, found {}", args.len())));
                }
                Ok(Target::Origin(OriginParams { origin: parse_dev(args[0], "origin")? }))
            }
            SNAPSHOT => Ok(Target::Snapshot(SnapParams::parse(kind, args)?)),
            SNAPSHOT_MERGE => Ok(Target::Merge(SnapParams::parse(kind, args)?)),
            other => Err(invalid(format!("unexpected target type '{other}'"))),
        }
    }
}

impl TargetParams for Target {
    fn param_str(&self) -> String {
        match self {
            Target::Linear(p) => p.param_str(),
            Target::Origin(p) => p.origin.to_string(),
            Target::Snapshot(p) | Target::Merge(p) => p.param_str(),
        }
    }
    fn target_type(&self) -> TargetTypeBuf {
        target_type(self.kind())
    }
}

/// A whole table: contiguous lines starting at sector 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub lines: Vec<TargetLine<Target>>,
}

impl Table {
    pub fn single(length: Sectors, target: Target) -> Table {
        Table { lines: vec![TargetLine::new(Sectors(0), length, target)] }
    }

    pub fn len(&self) -> Sectors {
        Sectors(self.lines.iter().map(|l| *l.length).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// What the top device is: the type of a one-line table; `linear` for
    /// all-linear lines; `snapshot-origin` for an armed table over a free
    /// map (`dm::armed`): origin lines and linear lines that each map a
    /// sector to the same sector of the origin's device. Anything else is
    /// foreign (None).
    pub fn kind(&self) -> Option<&'static str> {
        match self.lines.as_slice() {
            [] => None,
            [one] => Some(one.params.kind()),
            lines if lines.iter().all(|l| matches!(l.params, Target::Linear(_))) => Some(LINEAR),
            lines => {
                let origin = lines.iter().find_map(|l| match &l.params {
                    Target::Origin(p) => Some(p.origin),
                    _ => None,
                })?;
                let armed = lines.iter().all(|l| match &l.params {
                    Target::Origin(p) => p.origin == origin,
                    Target::Linear(p) => p.device == origin && p.start_offset == l.start,
                    _ => false,
                });
                armed.then_some(SNAPSHOT_ORIGIN)
            }
        }
    }

    /// Checks lines are contiguous from 0 and non-empty: a table with a gap
    /// would be refused by the kernel, or worse, misplace data.
    pub fn check(&self) -> Result<(), String> {
        let mut next = 0u64;
        for l in &self.lines {
            if *l.start != next {
                return Err(format!("line at sector {} leaves a gap (expected {next})", *l.start));
            }
            if *l.length == 0 {
                return Err(format!("empty line at sector {next}"));
            }
            // A sum that wrapped would let a later line start "at" a sector
            // an earlier line already maps.
            next = next
                .checked_add(*l.length)
                .ok_or_else(|| format!("line at sector {next} of {} sectors ends past 2^64", *l.length))?;
        }
        if self.lines.is_empty() {
            return Err("empty table".into());
        }
        Ok(())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{} {} {}", *l.start, *l.length, l.params)?;
        }
        Ok(())
    }
}

impl TargetTable for Table {
    fn from_raw_table(table: &[(u64, u64, String, String)]) -> DmResult<Table> {
        let lines = table
            .iter()
            .map(|(start, len, kind, params)| {
                Ok(TargetLine::new(Sectors(*start), Sectors(*len), format!("{kind} {params}").parse::<Target>()?))
            })
            .collect::<DmResult<Vec<_>>>()?;
        Ok(Table { lines })
    }

    fn to_raw_table(&self) -> Vec<(u64, u64, String, String)> {
        self.lines.iter().map(|l| (*l.start, *l.length, l.params.kind().to_string(), l.params.param_str())).collect()
    }
}

impl FromStr for Table {
    type Err = DmError;
    /// `dmsetup table` text: `<start> <length> <type> <params>` per line.
    fn from_str(s: &str) -> DmResult<Table> {
        let mut raw = Vec::new();
        for line in s.lines().filter(|l| !l.trim().is_empty()) {
            let mut w = line.split_whitespace();
            let start = w.next().and_then(|x| x.parse::<u64>().ok());
            let len = w.next().and_then(|x| x.parse::<u64>().ok());
            let kind = w.next();
            let (Some(start), Some(len), Some(kind)) = (start, len, kind) else {
                return Err(invalid(format!("table line '{line}'")));
            };
            raw.push((start, len, kind.to_string(), w.collect::<Vec<_>>().join(" ")));
        }
        Table::from_raw_table(&raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(major: u32, minor: u32) -> Device {
        Device { major, minor }
    }

    #[test]
    fn each_target_round_trips() {
        for text in [
            "linear 8:16 0",
            "linear 254:3 123456",
            "snapshot-origin 8:16",
            "snapshot 8:16 254:1 PO 8",
            "snapshot 8:16 254:1 P 16",
            "snapshot 8:16 254:1 N 8",
            "snapshot-merge 8:16 254:1 PO 8",
            "snapshot 8:16 254:1 PO 8 2 discard_zeroes_cow discard_passdown_origin",
        ] {
            let t: Target = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn built_targets_print_what_the_kernel_takes() {
        let s = Target::Snapshot(SnapParams::new(dev(8, 16), dev(254, 1), Sectors(8)));
        assert_eq!(s.to_string(), "snapshot 8:16 254:1 PO 8");
        assert_eq!(s.target_type().to_string(), "snapshot");
        let m = Target::Merge(SnapParams::new(dev(8, 16), dev(254, 1), Sectors(32)));
        assert_eq!(m.param_str(), "8:16 254:1 PO 32");
        assert_eq!(Target::Origin(OriginParams { origin: dev(8, 16) }).param_str(), "8:16");
        assert_eq!(Target::linear(dev(8, 16), Sectors(2048)).param_str(), "8:16 2048");
    }

    #[test]
    fn bad_targets_are_refused_with_reasons() {
        for text in [
            "",
            "striped 2 8 8:16 0 8:32 0",
            "linear 8:16",
            "linear 8:16 x",
            "linear /dev/sda 0",
            "snapshot-origin",
            "snapshot-origin 8:16 8:17",
            "snapshot 8:16 254:1 PO",
            "snapshot 8:16 254:1 Q 8",
            "snapshot 8:16 254:1 PO 12",
            "snapshot 8:16 254:1 PO 0",
            "snapshot 8:16 254:1 PO 8 2 discard_zeroes_cow",
            "snapshot 8:16 254:1 PO 8 x",
            "snapshot-merge 8:16 PO 8",
        ] {
            assert!(text.parse::<Target>().is_err(), "accepted '{text}'");
        }
    }

    #[test]
    fn raw_table_round_trip_and_kind() {
        let raw = vec![
            (0u64, 2048u64, "linear".to_string(), "8:16 4096".to_string()),
            (2048, 1024, "linear".to_string(), "8:16 90112".to_string()),
        ];
        let t = Table::from_raw_table(&raw).expect("parse");
        assert_eq!(t.to_raw_table(), raw);
        assert_eq!(t.kind(), Some(LINEAR));
        assert_eq!(*t.len(), 3072);
        t.check().expect("contiguous");
        assert_eq!(t.to_string(), "0 2048 linear 8:16 4096\n2048 1024 linear 8:16 90112\n");
        assert_eq!(t.to_string().parse::<Table>().expect("text"), t);
    }

    #[test]
    fn table_checks_find_gaps_and_empty_lines() {
        let gap: Table = "0 8 linear 8:16 0\n16 8 linear 8:16 8\n".parse().expect("parse");
        assert!(gap.check().is_err());
        let empty_line: Table = "0 0 linear 8:16 0\n".parse().expect("parse");
        assert!(empty_line.check().is_err());
        assert!(Table { lines: vec![] }.check().is_err());
        let not_zero: Table = "8 8 linear 8:16 0\n".parse().expect("parse");
        assert!(not_zero.check().is_err());
    }

    /// Found by the dm_table fuzzer: lengths whose sum wraps past 2^64
    /// made `check` overflow (a panic in debug builds; in release the
    /// wrapped sum let a third line start at a sector already mapped).
    #[test]
    fn table_longer_than_2_pow_64_sectors_is_refused() {
        let l = |start: u64, len: u64| {
            TargetLine::new(Sectors(start), Sectors(len), Target::linear(dev(254, 0), Sectors(0)))
        };
        let big = 0x8585_8585_8585_8585u64;
        let wrapped = big.wrapping_add(big);
        let t = Table { lines: vec![l(0, big), l(big, big), l(wrapped, 8)] };
        let e = t.check().expect_err("wraps");
        assert!(e.contains("past 2^64"), "{e}");
        // The longest table that fits is fine.
        Table { lines: vec![l(0, u64::MAX - 8), l(u64::MAX - 8, 8)] }.check().expect("fits");
    }

    #[test]
    fn tables_of_different_kinds_differ() {
        let lin = Table::single(Sectors(1 << 20), Target::linear(dev(8, 16), Sectors(0)));
        let org = Table::single(Sectors(1 << 20), Target::Origin(OriginParams { origin: dev(8, 16) }));
        assert_ne!(lin, org);
        assert_eq!(org.kind(), Some(SNAPSHOT_ORIGIN));
        // Same kind, other device: differs.
        let lin2 = Table::single(Sectors(1 << 20), Target::linear(dev(8, 32), Sectors(0)));
        assert_ne!(lin, lin2);
    }
}
