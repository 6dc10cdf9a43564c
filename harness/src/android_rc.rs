//! Android init `.rc` files: a parser, a checker against the commands and
//! service options Android's init knows, and the boot steps of the rewind
//! boot contract that the QEMU guest replays.
//!
//! Why this lives in the harness: `android/rewindd.rc` cannot be booted in CI
//! (no Android build, no device), so two things keep it honest. [`RcFile::validate`]
//! fails a unit test when the file uses a keyword init does not have, and
//! [`boot_steps`] derives from it the commands a device would run, in init's
//! order, for the QEMU guest init to run ([`BootStep::guest_command`]), so
//! the guest need not keep its own copy of the boot contract.
//!
//! The language, as init's README describes it: line-oriented, tokens split
//! on whitespace, `"` groups a token, C-style backslash escapes, a backslash
//! ending a line folds it into the next, `#` at the start of a line (after
//! blanks) makes it a comment. Sections are `on <trigger> [&& <trigger>]*`
//! (commands follow), `service <name> <path> [<arg>]*` (options follow) and
//! `import <path>` (no body). Property expansion (`${name}`) happens when
//! init runs a command, so tokens are kept as written.
//!
//! This checker is stricter than init in two places, on purpose: a command
//! or option before the first section is an error (init drops it silently),
//! and a duplicate service name is an error (init logs and ignores it).

use std::collections::{BTreeSet, HashMap};

/// Something wrong in a .rc file. Every variant names the (1-based) line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RcError {
    #[error("line {line}: unterminated quote")]
    UnterminatedQuote { line: usize },
    #[error("line {line}: the file ends inside a line continuation")]
    DanglingContinuation { line: usize },
    #[error("line {line}: '{keyword}' comes before any 'on', 'service' or 'import' section")]
    OutsideSection { line: usize, keyword: String },
    #[error("line {line}: bad trigger: {problem}")]
    BadTrigger { line: usize, problem: String },
    #[error("line {line}: a service needs a name and a program")]
    ServiceTooShort { line: usize },
    #[error("line {line}: '{name}' is not a valid service name")]
    BadServiceName { line: usize, name: String },
    #[error("line {line}: service '{name}' is already defined at line {first}")]
    DuplicateService { line: usize, name: String, first: usize },
    #[error("line {line}: 'import' takes exactly one path")]
    BadImport { line: usize },
    #[error("line {line}: an 'import' section has no body, found '{keyword}'")]
    ImportBody { line: usize, keyword: String },
    #[error("line {line}: unknown init command '{name}'")]
    UnknownCommand { line: usize, name: String },
    #[error("line {line}: unknown service option '{name}' (service '{service}')")]
    UnknownOption { line: usize, name: String, service: String },
    #[error("line {line}: '{name}' takes {expected} argument(s), found {found}")]
    ArgCount { line: usize, name: String, expected: String, found: usize },
    #[error("line {line}: '{name}': {problem}")]
    BadArgument { line: usize, name: String, problem: String },
    #[error("line {line}: service '{name}' cannot be both critical and oneshot")]
    CriticalOneshot { line: usize, name: String },
    #[error("line {line}: '{command}' names service '{name}', which this file does not define")]
    UnknownService { line: usize, command: String, name: String },
}

impl RcError {
    /// The line the problem is on.
    pub fn line(&self) -> usize {
        match self {
            RcError::UnterminatedQuote { line }
            | RcError::DanglingContinuation { line }
            | RcError::OutsideSection { line, .. }
            | RcError::BadTrigger { line, .. }
            | RcError::ServiceTooShort { line }
            | RcError::BadServiceName { line, .. }
            | RcError::DuplicateService { line, .. }
            | RcError::BadImport { line }
            | RcError::ImportBody { line, .. }
            | RcError::UnknownCommand { line, .. }
            | RcError::UnknownOption { line, .. }
            | RcError::ArgCount { line, .. }
            | RcError::BadArgument { line, .. }
            | RcError::CriticalOneshot { line, .. }
            | RcError::UnknownService { line, .. } => *line,
        }
    }
}

/// Every problem [`RcFile::validate`] found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in the .rc file: {}", .0.len(), join_errors(.0))]
pub struct ValidationErrors(pub Vec<RcError>);

fn join_errors(errors: &[RcError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A keyword init knows, with the number of arguments it accepts (the
/// keyword itself not counted). `max_args: None` means no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyword {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: Option<usize>,
}

const fn kw(name: &'static str, min_args: usize, max_args: Option<usize>) -> Keyword {
    Keyword { name, min_args, max_args }
}

/// Commands of Android's init (builtins), from AOSP's init README and its
/// builtin table (Android 14/15 era). A few are internal to the platform's
/// own init.rc (`init_user0`, `installkey`, `load_exports`,
/// `enter_default_mount_ns`, `remount_userdata`, `update_linker_config`) but
/// init accepts them anywhere, so the checker does too.
pub const COMMANDS: &[Keyword] = &[
    kw("bootchart", 1, Some(1)),
    kw("chmod", 2, Some(2)),
    kw("chown", 2, Some(3)),
    kw("class_reset", 1, Some(1)),
    kw("class_reset_post_data", 1, Some(1)),
    kw("class_restart", 1, Some(2)),
    kw("class_start", 1, Some(1)),
    kw("class_start_post_data", 1, Some(1)),
    kw("class_stop", 1, Some(1)),
    kw("copy", 2, Some(2)),
    kw("copy_per_line", 2, Some(2)),
    kw("domainname", 1, Some(1)),
    kw("enable", 1, Some(1)),
    kw("enter_default_mount_ns", 0, Some(0)),
    kw("exec", 1, None),
    kw("exec_background", 1, None),
    kw("exec_start", 1, Some(1)),
    kw("export", 2, Some(2)),
    kw("hostname", 1, Some(1)),
    kw("ifup", 1, Some(1)),
    kw("init_user0", 0, Some(0)),
    kw("insmod", 1, None),
    kw("installkey", 1, Some(1)),
    kw("interface_restart", 1, Some(1)),
    kw("interface_start", 1, Some(1)),
    kw("interface_stop", 1, Some(1)),
    kw("load_exports", 1, Some(1)),
    kw("load_persist_props", 0, Some(0)),
    kw("load_system_props", 0, Some(0)),
    kw("loglevel", 1, Some(1)),
    kw("mark_post_data", 0, Some(0)),
    kw("mkdir", 1, Some(6)),
    kw("mount", 3, None),
    kw("mount_all", 0, None),
    kw("perform_apex_config", 0, Some(0)),
    kw("readahead", 1, Some(2)),
    kw("remount_userdata", 0, Some(0)),
    kw("restart", 1, Some(2)),
    kw("restorecon", 1, None),
    kw("restorecon_recursive", 1, None),
    kw("rm", 1, Some(1)),
    kw("rmdir", 1, Some(1)),
    kw("setprop", 2, Some(2)),
    kw("setrlimit", 3, Some(3)),
    kw("start", 1, Some(1)),
    kw("stop", 1, Some(1)),
    kw("swapon_all", 0, Some(1)),
    kw("symlink", 2, Some(2)),
    kw("sysclktz", 1, Some(1)),
    kw("trigger", 1, Some(1)),
    kw("umount", 1, Some(1)),
    kw("umount_all", 0, Some(1)),
    kw("update_linker_config", 0, Some(0)),
    // The README documents a mount point argument; newer inits take none.
    kw("verity_update_state", 0, Some(1)),
    kw("wait", 1, Some(2)),
    kw("wait_for_prop", 2, Some(2)),
    kw("write", 2, Some(2)),
];

/// Service options of Android's init (service parser), from the same
/// sources. `group` is bounded by init's supplementary-group limit, which
/// the checker leaves to init.
pub const SERVICE_OPTIONS: &[Keyword] = &[
    kw("capabilities", 0, None),
    kw("class", 1, None),
    kw("console", 0, Some(1)),
    kw("critical", 0, Some(2)),
    kw("disabled", 0, Some(0)),
    kw("enter_namespace", 2, Some(2)),
    kw("file", 2, Some(2)),
    kw("gentle_kill", 0, Some(0)),
    kw("group", 1, None),
    kw("interface", 2, Some(2)),
    kw("ioprio", 2, Some(2)),
    kw("keycodes", 1, None),
    kw("memcg.limit_in_bytes", 1, Some(1)),
    kw("memcg.limit_percent", 1, Some(1)),
    kw("memcg.limit_property", 1, Some(1)),
    kw("memcg.soft_limit_in_bytes", 1, Some(1)),
    kw("memcg.swappiness", 1, Some(1)),
    kw("namespace", 1, Some(2)),
    kw("oneshot", 0, Some(0)),
    kw("onrestart", 1, None),
    kw("oom_score_adjust", 1, Some(1)),
    kw("override", 0, Some(0)),
    kw("priority", 1, Some(1)),
    kw("reboot_on_failure", 1, Some(1)),
    kw("restart_period", 1, Some(1)),
    kw("rlimit", 3, Some(3)),
    kw("seclabel", 1, Some(1)),
    kw("setenv", 2, Some(2)),
    kw("shutdown", 1, Some(1)),
    kw("sigstop", 0, Some(0)),
    kw("socket", 3, Some(6)),
    kw("stdio_to_kmsg", 0, Some(0)),
    kw("task_profiles", 1, None),
    kw("timeout_period", 1, Some(1)),
    kw("updatable", 0, Some(0)),
    kw("user", 1, Some(1)),
    kw("writepid", 1, None),
];

/// Linux capability names as the `capabilities` option takes them (no
/// `CAP_` prefix).
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

pub fn command(name: &str) -> Option<&'static Keyword> {
    COMMANDS.iter().find(|k| k.name == name)
}

pub fn service_option(name: &str) -> Option<&'static Keyword> {
    SERVICE_OPTIONS.iter().find(|k| k.name == name)
}

/// One condition of an `on` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// `boot`, `early-fs`, ... (queued by `trigger` or by init itself).
    Event(String),
    /// `property:<name>=<value>`; `value` is `*` for "any new value".
    Property { name: String, value: String },
}

/// A command line inside an action (or after `onrestart`): `args[0]` is the
/// command's keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub line: usize,
    pub args: Vec<String>,
}

impl Command {
    pub fn name(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub line: usize,
    pub triggers: Vec<Trigger>,
    pub commands: Vec<Command>,
}

/// A service option line: `args[0]` is the option's keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOption {
    pub line: usize,
    pub args: Vec<String>,
}

impl ServiceOption {
    pub fn name(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub line: usize,
    pub name: String,
    /// Program path and its arguments.
    pub argv: Vec<String>,
    pub options: Vec<ServiceOption>,
}

impl Service {
    /// The first option with this keyword.
    pub fn option(&self, name: &str) -> Option<&ServiceOption> {
        self.options.iter().find(|o| o.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub line: usize,
    pub path: String,
}

/// A parsed .rc file; sections keep file order within their kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcFile {
    pub actions: Vec<Action>,
    pub services: Vec<Service>,
    pub imports: Vec<Import>,
}

impl RcFile {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Checks every command and service option against init's keyword
    /// tables (name and argument count) plus the few argument rules init
    /// enforces when it parses a file. Returns every problem, not only the
    /// first, so one test run shows all of them.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        for action in &self.actions {
            for cmd in &action.commands {
                check_command(cmd.line, &cmd.args, &mut errors);
            }
        }
        for service in &self.services {
            check_service(service, &mut errors);
        }
        errors.sort_by_key(RcError::line);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

fn arg_count_error(line: usize, k: &Keyword, found: usize) -> Option<RcError> {
    let ok = found >= k.min_args && k.max_args.is_none_or(|max| found <= max);
    if ok {
        return None;
    }
    let expected = match k.max_args {
        Some(max) if max == k.min_args => format!("{max}"),
        Some(max) => format!("{}..={max}", k.min_args),
        None => format!("at least {}", k.min_args),
    };
    Some(RcError::ArgCount { line, name: k.name.to_string(), expected, found })
}

fn check_command(line: usize, args: &[String], errors: &mut Vec<RcError>) {
    let Some(name) = args.first() else { return };
    let Some(k) = command(name) else {
        errors.push(RcError::UnknownCommand { line, name: name.clone() });
        return;
    };
    if let Some(e) = arg_count_error(line, k, args.len() - 1) {
        errors.push(e);
        return;
    }
    if matches!(k.name, "exec" | "exec_background") {
        // init builds a temporary service from what follows "--"; without it
        // the command fails at boot ("exec called without command").
        let after = args.iter().position(|a| a == "--").map(|p| args.len() - p - 1);
        if after.unwrap_or(0) == 0 {
            errors.push(RcError::BadArgument {
                line,
                name: name.clone(),
                problem: "needs '--' followed by the program to run".to_string(),
            });
        }
    }
}

fn check_service(service: &Service, errors: &mut Vec<RcError>) {
    for opt in &service.options {
        let name = opt.name();
        let Some(k) = service_option(name) else {
            errors.push(RcError::UnknownOption {
                line: opt.line,
                name: name.to_string(),
                service: service.name.clone(),
            });
            continue;
        };
        if let Some(e) = arg_count_error(opt.line, k, opt.args.len() - 1) {
            errors.push(e);
            continue;
        }
        let bad = |problem: String| RcError::BadArgument { line: opt.line, name: name.to_string(), problem };
        match name {
            "onrestart" => check_command(opt.line, &opt.args[1..], errors),
            "capabilities" => {
                for cap in &opt.args[1..] {
                    if !CAPABILITIES.contains(&cap.as_str()) {
                        errors.push(bad(format!("'{cap}' is not a capability (no CAP_ prefix)")));
                    }
                }
            }
            "socket" => {
                // "+passcred" (SO_PASSCRED) and, in newer inits, "+listen"
                // (init makes it a listening socket) may follow the type.
                let mut parts = opt.args[2].split('+');
                let kind = parts.next().unwrap_or("");
                let suffixes_ok = parts.all(|p| matches!(p, "passcred" | "listen"));
                if !matches!(kind, "stream" | "dgram" | "seqpacket") || !suffixes_ok {
                    errors.push(bad(format!("type '{}' is not stream, dgram or seqpacket", opt.args[2])));
                }
                if !is_octal_mode(&opt.args[3]) {
                    errors.push(bad(format!("permissions '{}' are not an octal mode", opt.args[3])));
                }
            }
            _ => {}
        }
    }
    // init (Android R and later) refuses this combination when it parses.
    if service.option("critical").is_some() && service.option("oneshot").is_some() {
        errors.push(RcError::CriticalOneshot { line: service.line, name: service.name.clone() });
    }
}

fn is_octal_mode(s: &str) -> bool {
    !s.is_empty() && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c))
}

/// Parses .rc text. Syntax only: unknown commands and options are reported
/// by [`RcFile::validate`], since init itself accepts the file and fails the
/// command at boot.
pub fn parse(text: &str) -> Result<RcFile, RcError> {
    enum Current {
        None,
        Action(usize),
        Service(usize),
        Import,
    }
    let mut rc = RcFile::default();
    let mut current = Current::None;
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    for (line, tokens) in logical_lines(text)? {
        let Some(keyword) = tokens.first() else { continue };
        match keyword.as_str() {
            "on" => {
                let triggers = parse_triggers(line, &tokens[1..])?;
                rc.actions.push(Action { line, triggers, commands: Vec::new() });
                current = Current::Action(rc.actions.len() - 1);
            }
            "service" => {
                if tokens.len() < 3 {
                    return Err(RcError::ServiceTooShort { line });
                }
                let name = tokens[1].clone();
                if !is_valid_service_name(&name) {
                    return Err(RcError::BadServiceName { line, name });
                }
                if let Some(&first) = first_line_of.get(&name) {
                    return Err(RcError::DuplicateService { line, name, first });
                }
                first_line_of.insert(name.clone(), line);
                rc.services.push(Service { line, name, argv: tokens[2..].to_vec(), options: Vec::new() });
                current = Current::Service(rc.services.len() - 1);
            }
            "import" => {
                if tokens.len() != 2 {
                    return Err(RcError::BadImport { line });
                }
                rc.imports.push(Import { line, path: tokens[1].clone() });
                current = Current::Import;
            }
            _ => match current {
                Current::None => {
                    return Err(RcError::OutsideSection { line, keyword: keyword.clone() });
                }
                Current::Import => {
                    return Err(RcError::ImportBody { line, keyword: keyword.clone() });
                }
                Current::Action(i) => rc.actions[i].commands.push(Command { line, args: tokens }),
                Current::Service(i) => rc.services[i].options.push(ServiceOption { line, args: tokens }),
            },
        }
    }
    Ok(rc)
}

/// Splits text into logical lines (continuations folded, comments and blank
/// lines dropped) and tokenizes each. The line number is the first physical
/// line of the logical one.
fn logical_lines(text: &str) -> Result<Vec<(usize, Vec<String>)>, RcError> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (idx, raw) in text.lines().enumerate() {
        let number = idx + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if pending.is_none() && raw.trim_start().starts_with('#') {
            continue;
        }
        let (start, mut buf) = pending.take().unwrap_or((number, String::new()));
        // An odd number of trailing backslashes: the last one folds the line
        // (an even number is a run of escaped backslashes).
        let trailing = raw.len() - raw.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            buf.push_str(&raw[..raw.len() - 1]);
            // Folding joins the lines with whitespace between the tokens.
            buf.push(' ');
            pending = Some((start, buf));
            continue;
        }
        buf.push_str(raw);
        let tokens = tokenize(start, &buf)?;
        if !tokens.is_empty() {
            out.push((start, tokens));
        }
    }
    if let Some((start, _)) = pending {
        return Err(RcError::DanglingContinuation { line: start });
    }
    Ok(out)
}

fn tokenize(line: usize, text: &str) -> Result<Vec<String>, RcError> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    // A token exists once any character (even an empty "") was seen.
    let mut in_token = false;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_token = true;
                match chars.next() {
                    Some('n') => token.push('\n'),
                    Some('r') => token.push('\r'),
                    Some('t') => token.push('\t'),
                    Some(other) => token.push(other),
                    None => token.push('\\'),
                }
            }
            '"' => {
                in_token = true;
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    tokens.push(std::mem::take(&mut token));
                    in_token = false;
                }
            }
            c => {
                in_token = true;
                token.push(c);
            }
        }
    }
    if quoted {
        return Err(RcError::UnterminatedQuote { line });
    }
    if in_token {
        tokens.push(token);
    }
    Ok(tokens)
}

fn parse_triggers(line: usize, tokens: &[String]) -> Result<Vec<Trigger>, RcError> {
    let bad = |problem: String| RcError::BadTrigger { line, problem };
    if tokens.is_empty() {
        return Err(bad("'on' needs a trigger".to_string()));
    }
    let mut triggers = Vec::new();
    let mut expect_trigger = true;
    for t in tokens {
        match (t.as_str(), expect_trigger) {
            ("&&", true) => return Err(bad("'&&' where a trigger was expected".to_string())),
            ("&&", false) => expect_trigger = true,
            (_, false) => return Err(bad(format!("missing '&&' before '{t}'"))),
            (_, true) => {
                triggers.push(parse_trigger(t).map_err(bad)?);
                expect_trigger = false;
            }
        }
    }
    if expect_trigger {
        return Err(bad("the trigger list ends with '&&'".to_string()));
    }
    let events = triggers.iter().filter(|t| matches!(t, Trigger::Event(_))).count();
    if events > 1 {
        return Err(bad("an action may have only one event trigger".to_string()));
    }
    Ok(triggers)
}

fn parse_trigger(t: &str) -> Result<Trigger, String> {
    if let Some(rest) = t.strip_prefix("property:") {
        let (name, value) = rest.split_once('=').ok_or_else(|| format!("'{t}' has no '='"))?;
        if name.is_empty() || !name.chars().all(is_property_name_char) {
            return Err(format!("'{name}' is not a property name"));
        }
        return Ok(Trigger::Property { name: name.to_string(), value: value.to_string() });
    }
    if t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Ok(Trigger::Event(t.to_string()))
    } else {
        Err(format!("'{t}' is neither an event nor property:<name>=<value>"))
    }
}

fn is_property_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':')
}

/// init accepts a service name when "init.svc.<name>" is a legal property
/// name and the name fits in a property value (92 bytes).
fn is_valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 92
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name.chars().all(is_property_name_char)
}

/// Boot stages the rewind boot contract uses, in the order init reaches them
/// (init.rc's late-init queues early-fs, fs, post-fs, late-fs, post-fs-data;
/// sys.boot_completed=1 comes from the framework much later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    EarlyFs,
    Fs,
    PostFs,
    LateFs,
    PostFsData,
    BootCompleted,
    /// `on shutdown`: init runs it when a shutdown or reboot begins, before
    /// it stops the services that are not `shutdown critical` and unmounts
    /// the filesystems.
    Shutdown,
}

impl Stage {
    fn from_event(name: &str) -> Option<Stage> {
        match name {
            "early-fs" => Some(Stage::EarlyFs),
            "fs" => Some(Stage::Fs),
            "post-fs" => Some(Stage::PostFs),
            "late-fs" => Some(Stage::LateFs),
            "post-fs-data" => Some(Stage::PostFsData),
            "shutdown" => Some(Stage::Shutdown),
            _ => None,
        }
    }
}

/// What the guest does for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// `start <service>`: spawn, do not wait.
    Start,
    /// `exec ... -- <argv>`: run and wait.
    Exec,
    /// `exec_background ... -- <argv>`: spawn, do not wait.
    ExecBackground,
    /// `exec_start <service>`: run the service and wait for it to exit.
    ExecStart,
    /// `mount_all [...]`: where a device mounts its fstab (argv = the
    /// command's arguments); the guest mounts its userdata here.
    MountAll,
}

/// One command the guest init runs, resolved to a program and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootStep {
    pub stage: Stage,
    pub kind: StepKind,
    /// Line of the command in the .rc.
    pub line: usize,
    /// The service started (Start, ExecStart).
    pub service: Option<String>,
    pub argv: Vec<String>,
    /// Property triggers of the action besides the stage itself
    /// (`rewind.defer_commit=false`): the guest checks them against its own
    /// properties before running the step.
    pub conditions: Vec<(String, String)>,
}

impl BootStep {
    /// The step as a guest shell command: the program's file name (guests
    /// put rewindd and rewindctl on PATH, not in /system/bin) and its
    /// arguments, single-quoted where the shell would split or expand them.
    /// `rewindctl --wait 30 prepare-userdata`, `rewindctl --wait 10 commit --reason boot-completed`.
    pub fn guest_command(&self) -> String {
        let mut words = Vec::with_capacity(self.argv.len());
        for (i, arg) in self.argv.iter().enumerate() {
            let word = if i == 0 { arg.rsplit('/').next().unwrap_or(arg) } else { arg.as_str() };
            words.push(shell_quote(word));
        }
        words.join(" ")
    }
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=@%+-,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The boot-contract steps of `rc` for the QEMU guest: per stage, in init's
/// order (stage order, then file order), every `start`, `exec`,
/// `exec_background`, `exec_start` and `mount_all`, with services resolved
/// to their program and arguments. Actions whose triggers are not one of the
/// [`Stage`]s are left out. A service named by `start`/`exec_start` must be
/// defined in `rc`.
pub fn boot_steps(rc: &RcFile) -> Result<Vec<BootStep>, RcError> {
    let mut steps = Vec::new();
    for action in &rc.actions {
        let mut stage = None;
        let mut conditions = Vec::new();
        for t in &action.triggers {
            match t {
                Trigger::Event(e) => stage = Stage::from_event(e),
                Trigger::Property { name, value } if name == "sys.boot_completed" && value == "1" => {
                    stage = stage.or(Some(Stage::BootCompleted));
                }
                Trigger::Property { name, value } => conditions.push((name.clone(), value.clone())),
            }
        }
        // An event trigger that is not a stage makes the whole action
        // irrelevant, even with sys.boot_completed beside it.
        let has_other_event =
            action.triggers.iter().any(|t| matches!(t, Trigger::Event(e) if Stage::from_event(e).is_none()));
        let Some(stage) = stage.filter(|_| !has_other_event) else { continue };
        for cmd in &action.commands {
            let (kind, service, argv) = match cmd.name() {
                "start" | "exec_start" => {
                    let kind = if cmd.name() == "start" { StepKind::Start } else { StepKind::ExecStart };
                    let name = cmd.args.get(1).cloned().unwrap_or_default();
                    let svc = rc.service(&name).ok_or_else(|| RcError::UnknownService {
                        line: cmd.line,
                        command: cmd.name().to_string(),
                        name: name.clone(),
                    })?;
                    (kind, Some(name), svc.argv.clone())
                }
                "exec" | "exec_background" => {
                    let kind = if cmd.name() == "exec" { StepKind::Exec } else { StepKind::ExecBackground };
                    let argv = match cmd.args.iter().position(|a| a == "--") {
                        Some(p) if p + 1 < cmd.args.len() => cmd.args[p + 1..].to_vec(),
                        _ => {
                            return Err(RcError::BadArgument {
                                line: cmd.line,
                                name: cmd.name().to_string(),
                                problem: "needs '--' followed by the program to run".to_string(),
                            })
                        }
                    };
                    (kind, None, argv)
                }
                "mount_all" => (StepKind::MountAll, None, cmd.args[1..].to_vec()),
                _ => continue,
            };
            steps.push(BootStep { stage, kind, line: cmd.line, service, argv, conditions: conditions.clone() });
        }
    }
    // Stable: file order is kept within a stage, as init runs it.
    steps.sort_by_key(|s| s.stage);
    Ok(steps)
}

/// Capabilities a service asks for (empty when it has no `capabilities`
/// option), for consistency checks against sepolicy.
pub fn service_capabilities(service: &Service) -> BTreeSet<String> {
    service.options.iter().filter(|o| o.name() == "capabilities").flat_map(|o| o.args[1..].iter().cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REWINDD_RC: &str = include_str!("../../android/rewindd.rc");
    const REWINDD_TE: &str = include_str!("../../android/sepolicy/private/rewindd.te");
    const FILE_CONTEXTS: &str = include_str!("../../android/sepolicy/private/file_contexts");

    fn rewindd_rc() -> RcFile {
        match parse(REWINDD_RC) {
            Ok(rc) => rc,
            Err(e) => panic!("android/rewindd.rc does not parse: {e}"),
        }
    }

    #[test]
    fn rewindd_rc_parses_with_its_four_services() {
        let rc = rewindd_rc();
        let names: Vec<&str> = rc.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["rewindd", "rewind_prepare", "rewind_seal", "rewind_commit"]);
        // The seal runs after init unmounts /data at shutdown: both it and
        // rewindd must outlive init's stop of the other services.
        for name in ["rewindd", "rewind_seal"] {
            let critical = rc.service(name).and_then(|s| s.option("shutdown")).map(|o| o.args.clone());
            assert_eq!(critical, Some(vec!["shutdown".to_string(), "critical".to_string()]), "{name}");
        }
        let rewindd = rc.service("rewindd").expect("rewindd service");
        assert_eq!(rewindd.argv, ["/system/bin/rewindd", "--config", "/system/etc/rewindd.toml"]);
        let socket = rewindd.option("socket").expect("socket option");
        assert_eq!(socket.args, ["socket", "rewindd", "stream", "0660", "root", "system"]);
        assert!(rc.imports.is_empty());
    }

    /// Fails when android/rewindd.rc uses a command or option that init
    /// does not know, or a wrong number of arguments.
    #[test]
    fn rewindd_rc_uses_only_what_init_knows() {
        if let Err(e) = rewindd_rc().validate() {
            panic!("android/rewindd.rc: {e}");
        }
    }

    #[test]
    fn boot_steps_of_rewindd_rc_follow_the_boot_contract() {
        let steps = match boot_steps(&rewindd_rc()) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let seen: Vec<(Stage, StepKind, Vec<&str>)> =
            steps.iter().map(|s| (s.stage, s.kind, s.argv.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            seen,
            [
                (Stage::EarlyFs, StepKind::Start, vec!["/system/bin/rewindd", "--config", "/system/etc/rewindd.toml"]),
                (
                    Stage::EarlyFs,
                    StepKind::ExecStart,
                    vec!["/system/bin/rewindctl", "--wait", "30", "prepare-userdata"]
                ),
                (
                    Stage::BootCompleted,
                    StepKind::Start,
                    vec!["/system/bin/rewindctl", "--wait", "10", "commit", "--reason", "boot-completed"]
                ),
                (
                    Stage::Shutdown,
                    StepKind::Start,
                    vec!["/system/bin/rewindctl", "--wait", "5", "seal-free-map", "--after-unmount", "30"]
                ),
            ]
        );
        // The commit is conditional on the device not deferring it.
        assert!(steps[0].conditions.is_empty());
        assert_eq!(steps[2].conditions, [("rewind.defer_commit".to_string(), "false".to_string())]);
        assert_eq!(steps[2].service.as_deref(), Some("rewind_commit"));
        let commands: Vec<String> = steps.iter().map(BootStep::guest_command).collect();
        assert_eq!(
            commands,
            [
                "rewindd --config /system/etc/rewindd.toml",
                "rewindctl --wait 30 prepare-userdata",
                "rewindctl --wait 10 commit --reason boot-completed",
                "rewindctl --wait 5 seal-free-map --after-unmount 30"
            ]
        );
    }

    #[test]
    fn guest_command_quotes_what_the_shell_would_split() {
        let step = BootStep {
            stage: Stage::Fs,
            kind: StepKind::Exec,
            line: 1,
            service: None,
            argv: vec!["/system/bin/tool".into(), "two words".into(), "it's".into(), "".into(), "$HOME".into()],
            conditions: Vec::new(),
        };
        assert_eq!(step.guest_command(), r#"tool 'two words' 'it'\''s' '' '$HOME'"#);
    }

    #[test]
    fn rewindd_has_only_the_capabilities_its_sepolicy_grants() {
        let rc = rewindd_rc();
        let caps = service_capabilities(rc.service("rewindd").expect("rewindd"));
        let want: BTreeSet<String> = ["SYS_ADMIN", "LINUX_IMMUTABLE"].iter().map(|s| s.to_string()).collect();
        assert_eq!(caps, want, "the .rc's capabilities changed: update rewindd.te and the comment");
        // sepolicy must grant exactly the same set (lower case there).
        let line = REWINDD_TE
            .lines()
            .find(|l| l.trim_start().starts_with("allow rewindd self:capability"))
            .expect("rewindd.te grants capabilities on one 'allow rewindd self:capability' line");
        let inner = line.split_once('{').and_then(|(_, r)| r.split_once('}')).map(|(i, _)| i).unwrap_or("");
        let te: BTreeSet<String> = inner.split_whitespace().map(str::to_ascii_uppercase).collect();
        assert_eq!(te, want);
        // The socket init creates has the label sepolicy expects.
        assert!(FILE_CONTEXTS.lines().any(|l| l.starts_with("/dev/socket/rewindd") && l.contains("rewindd_socket")));
    }

    #[test]
    fn unknown_command_is_rejected_with_its_line() {
        let text = "on early-fs\n    start rewindd\n    mount_everything /data\n";
        let rc = parse(text).expect("syntax is fine");
        let err = rc.validate().expect_err("unknown command");
        assert_eq!(err.0, [RcError::UnknownCommand { line: 3, name: "mount_everything".to_string() }]);
        assert!(err.to_string().contains("line 3: unknown init command 'mount_everything'"), "{err}");
    }

    #[test]
    fn unknown_option_and_bad_arguments_are_all_reported() {
        let text = "\
service d /system/bin/d
    capability SYS_ADMIN
    capabilities CAP_SYS_ADMIN
    socket d stream+listen 0990 root system
    socket e stream+passcred+listen 0660 root system
    oneshot
    critical
on boot
    setprop a
    exec /system/bin/true
";
        let rc = parse(text).expect("syntax is fine");
        let err = rc.validate().expect_err("several problems");
        let lines: Vec<usize> = err.0.iter().map(RcError::line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 9, 10], "{err}");
        assert!(matches!(&err.0[1], RcError::UnknownOption { name, .. } if name == "capability"));
        assert!(matches!(&err.0[0], RcError::CriticalOneshot { .. }));
        assert!(matches!(&err.0[3], RcError::BadArgument { problem, .. } if problem.contains("0990")));
        assert!(matches!(&err.0[4], RcError::ArgCount { found: 1, .. }));
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let cases: &[(&str, usize)] = &[
            ("    start rewindd\n", 1),
            ("on early-fs\n    write /x \"unterminated\n", 2),
            ("\non boot && early-fs\n", 2),
            ("on boot &&\n", 1),
            ("on property:a.b\n", 1),
            ("service onlyname\n", 1),
            ("service a /bin/a\nservice a /bin/b\n", 2),
            ("import /x.rc\n    start a\n", 2),
            ("on boot\n    start a \\\n", 2),
        ];
        for (text, line) in cases {
            match parse(text) {
                Ok(rc) => panic!("accepted {text:?}: {rc:?}"),
                Err(e) => assert_eq!(e.line(), *line, "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn continuations_quotes_and_comments() {
        let text = "\
# a comment
service s /system/bin/s \\
        --flag \"two words\" a\\ b
    # an indented comment
    setenv KEY \"\"
on property:x=* && boot
    write /proc/x \"1\\n\"
";
        let rc = parse(text).expect("parses");
        let s = rc.service("s").expect("service s");
        assert_eq!(s.line, 2);
        assert_eq!(s.argv, ["/system/bin/s", "--flag", "two words", "a b"]);
        assert_eq!(s.options[0].line, 5);
        assert_eq!(s.options[0].args, ["setenv", "KEY", ""]);
        assert_eq!(
            rc.actions[0].triggers,
            [Trigger::Property { name: "x".into(), value: "*".into() }, Trigger::Event("boot".into())]
        );
        assert_eq!(rc.actions[0].commands[0].args, ["write", "/proc/x", "1\n"]);
        assert!(rc.validate().is_ok());
    }

    #[test]
    fn boot_steps_follow_stage_order_and_resolve_exec() {
        let text = "\
service late /system/bin/late x
    oneshot
on post-fs-data
    exec_start late
on boot
    start late
on fs
    mount_all /vendor/etc/fstab.dev --early
    exec - system system -- /system/bin/tool a b
on early-fs
    exec_background -- /system/bin/bg
";
        let rc = parse(text).expect("parses");
        assert!(rc.validate().is_ok());
        let steps = boot_steps(&rc).expect("steps");
        let seen: Vec<(Stage, StepKind, Vec<&str>)> =
            steps.iter().map(|s| (s.stage, s.kind, s.argv.iter().map(String::as_str).collect())).collect();
        assert_eq!(
            seen,
            [
                (Stage::EarlyFs, StepKind::ExecBackground, vec!["/system/bin/bg"]),
                (Stage::Fs, StepKind::MountAll, vec!["/vendor/etc/fstab.dev", "--early"]),
                (Stage::Fs, StepKind::Exec, vec!["/system/bin/tool", "a", "b"]),
                (Stage::PostFsData, StepKind::ExecStart, vec!["/system/bin/late", "x"]),
            ]
        );
    }

    #[test]
    fn boot_steps_reject_a_service_the_file_does_not_define() {
        let rc = parse("on early-fs\n    start nowhere\n").expect("parses");
        assert_eq!(
            boot_steps(&rc),
            Err(RcError::UnknownService { line: 2, command: "start".into(), name: "nowhere".into() })
        );
    }

    /// android/gen holds what proto/build.rs generates (Soong runs no build
    /// scripts); it must be regenerated whenever the proto changes.
    #[test]
    fn android_generated_proto_is_current() {
        let current = include_str!("../../proto/rewind/v1/checkpoint.proto");
        let generated_from = include_str!("../../android/gen/checkpoint.proto");
        assert!(
            current == generated_from,
            "proto/rewind/v1/checkpoint.proto changed: run android/gen/update.sh and commit android/gen"
        );
    }

    /// The example fstabs mount /data the way the boot contract expects:
    /// ext4 through the always-present dm device with checkpoint=block, f2fs
    /// from the partition with checkpoint=fs; five fields on every line
    /// (rewindd's fstab parser is strict about that).
    #[test]
    fn fstab_examples_mount_data_the_way_the_contract_expects() {
        let examples = [
            (include_str!("../../android/fstab.rewind.ext4"), "/dev/block/mapper/rewind-userdata", "checkpoint=block"),
            (include_str!("../../android/fstab.rewind.f2fs"), "/dev/block/by-name/userdata", "checkpoint=fs"),
        ];
        for (text, blk, flag) in examples {
            let lines: Vec<Vec<&str>> = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").split_whitespace().collect::<Vec<_>>())
                .filter(|f| !f.is_empty())
                .collect();
            assert!(lines.iter().all(|f| f.len() == 5), "an fstab line without 5 fields: {lines:?}");
            let data: Vec<&Vec<&str>> = lines.iter().filter(|f| f[1] == "/data").collect();
            assert_eq!(data.len(), 1);
            assert_eq!(data[0][0], blk);
            assert!(data[0][4].split(',').any(|f| f == flag), "{flag} missing on /data");
            assert!(lines.iter().any(|f| f[1] == "/metadata" && f[4].contains("first_stage_mount")));
        }
    }

    #[test]
    fn keyword_tables_have_no_duplicates() {
        for table in [COMMANDS, SERVICE_OPTIONS] {
            let names: BTreeSet<&str> = table.iter().map(|k| k.name).collect();
            assert_eq!(names.len(), table.len());
            assert!(table.iter().all(|k| k.max_args.is_none_or(|m| m >= k.min_args)));
        }
    }
}
