//! What a caller can do about an error, and how an error chain reads.

/// What the caller can do about an error; the service maps this to a code
/// and names it on the wire with [`ErrorKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad request (attempts = 0, unknown partition, ...).
    InvalidArgument,
    /// The call does not fit the current phase (commit with no checkpoint).
    WrongPhase,
    /// Checkpointing cannot work on this machine (no device-mapper, no
    /// checkpointed partition in the fstab, no /metadata).
    Unavailable,
    /// Not enough free space for the COW store.
    NoSpace,
    /// Refused to protect data: a check failed (extents changed, state
    /// record corrupt, kernel table differs from the expected one).
    Unsafe,
    /// The caller is not allowed to mutate state.
    PermissionDenied,
    /// Anything else: I/O, ioctl, kernel errors.
    Internal,
}

impl ErrorKind {
    /// Every kind, for the table tests and [`ErrorKind::from_name`].
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::InvalidArgument,
        ErrorKind::WrongPhase,
        ErrorKind::Unavailable,
        ErrorKind::NoSpace,
        ErrorKind::Unsafe,
        ErrorKind::PermissionDenied,
        ErrorKind::Internal,
    ];

    /// Stable name of a kind on the wire (the `rewind-error-kind` metadata).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::WrongPhase => "wrong-phase",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::Unsafe => "unsafe",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::Internal => "internal",
        }
    }

    /// Inverse of [`ErrorKind::as_str`] (rewindctl).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// "a: b: c" from an error and its sources: one line for logs, the history
/// and a status message.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_distinct_and_parse_back() {
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::from_name("nonsense"), None);
    }

    #[test]
    fn chain_joins_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
