//! The daemon's error type. Library modules have their own thiserror enums
//! named for the step that failed; they are wrapped here. The service edge
//! maps an error to a gRPC status through [`Error::kind`] only, so adding a
//! variant never touches the edge (keystore2's `map_or_log_err` idea).
//!
//! The modules wrapped here sit below this one; a backend's own error type
//! (f2fs) comes in as [`Error::Backend`] with the kind it chose, so this
//! module never imports a backend.

use crate::cowstore::CowError;
use crate::dm::DmOpError;
use crate::evidence::EvidenceError;
use crate::state::StateError;
use crate::types::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Invalid argument: {0}")]
    InvalidArgument(String),
    #[error("Not allowed in phase {phase}: {what}")]
    WrongPhase { phase: String, what: String },
    #[error("Checkpointing unavailable: {0}")]
    Unavailable(String),
    #[error("Not enough space for the COW store on {partition}: need {needed} bytes, {available} bytes free")]
    NoSpace { partition: String, needed: u64, available: u64 },
    #[error("Refused to protect userdata: {0}")]
    Unsafe(String),
    #[error("Permission denied: {0}")]
    PermissionDenied(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
    #[error("fstab")]
    Fstab(#[from] crate::fstab::FstabError),
    #[error("State record")]
    State(#[from] crate::state::StateError),
    #[error("COW store")]
    Cow(#[from] crate::cowstore::CowError),
    #[error("Device-mapper")]
    Dm(#[from] crate::dm::DmOpError),
    #[error("System call")]
    Sys(#[from] crate::sys::SysError),
    #[error("Evidence")]
    Evidence(#[from] crate::evidence::EvidenceError),
    /// A backend's own error, with the kind the backend gives it.
    #[error("{what}")]
    Backend {
        what: &'static str,
        kind: ErrorKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::WrongPhase { .. } => ErrorKind::WrongPhase,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::Unsafe(_) => ErrorKind::Unsafe,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::Io { .. } | Error::Internal(_) => ErrorKind::Internal,
            // A bad fstab means checkpointing cannot work here.
            Error::Fstab(_) => ErrorKind::Unavailable,
            Error::State(e) => match e {
                StateError::NoGoodCopy { .. } | StateError::Invalid { .. } => ErrorKind::Unsafe,
                StateError::Io { .. } | StateError::Encode(_) => ErrorKind::Internal,
            },
            Error::Cow(e) => match e {
                CowError::NoSpace { .. } => ErrorKind::NoSpace,
                CowError::Fiemap(_)
                | CowError::ExtentsChanged { .. }
                | CowError::BadMap(_)
                | CowError::OutsideMount { .. } => ErrorKind::Unsafe,
                CowError::Io { .. } | CowError::Sys { .. } => ErrorKind::Internal,
            },
            Error::Dm(e) => match e {
                DmOpError::TableMismatch { .. } | DmOpError::BadTable { .. } => ErrorKind::Unsafe,
                DmOpError::Open(_) => ErrorKind::Unavailable,
                DmOpError::Ioctl { .. }
                | DmOpError::Name(_)
                | DmOpError::StatusShape { .. }
                | DmOpError::Status { .. } => ErrorKind::Internal,
            },
            Error::Sys(_) => ErrorKind::Internal,
            Error::Evidence(e) => match e {
                EvidenceError::NoAttempt { .. } | EvidenceError::NoFile { .. } => ErrorKind::InvalidArgument,
                EvidenceError::Io { .. } | EvidenceError::Encode(_) => ErrorKind::Internal,
            },
            Error::Backend { kind, .. } => *kind,
        }
    }

    /// Shorthand for an I/O error with the path or step it happened at.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
