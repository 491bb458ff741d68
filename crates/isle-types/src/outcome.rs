//! The one error taxonomy: every failed request either was not applied, may have been applied,
//! or was malformed. Each API maps it the way its clients expect; clients decide on it whether
//! a retry is safe.

use serde::{Deserialize, Serialize};

/// What a failed request means for its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Definitely not applied (no quorum, no leader, a stale fencing token, ...): retrying is
    /// safe and may succeed.
    Refused,
    /// May or may not have been applied (a timeout after proposing, a leader lost while
    /// answering): only a retry with the same request id applies it exactly once.
    Unknown,
    /// The request is malformed or does not fit the data (too large, wrong type): not applied,
    /// and the same request will be refused again.
    Invalid,
}

impl ErrorKind {
    /// Its name on the wire: `refused`, `unknown` or `invalid`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Unknown => "unknown",
            ErrorKind::Invalid => "invalid",
        }
    }

    /// Whether the request is known not to have been applied.
    pub fn not_applied(self) -> bool {
        self != ErrorKind::Unknown
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_may_have_been_applied_and_names_match_serde() {
        for kind in [ErrorKind::Refused, ErrorKind::Unknown, ErrorKind::Invalid] {
            assert_eq!(kind.not_applied(), kind != ErrorKind::Unknown);
            let wire = serde_json::to_string(&kind).expect("encode");
            assert_eq!(wire, format!("\"{}\"", kind.name()));
        }
    }
}
