//! The HTTP/JSON contract: one serde type per request and answer of every `/v1/...` route,
//! shared by the server (which serializes them), the CLI, the lab and the tests (which
//! deserialize them). Nothing outside this module spells a field name of the HTTP API.
//!
//! Fields are declared in alphabetical order on purpose: the handlers used to build
//! `serde_json::Value`s, whose maps are sorted, so the bytes on the wire stay what clients
//! and scripts saw before. Optional fields that used to be left out are skipped when empty;
//! those that used to be `null` are still written as `null`.
//!
//! - [`cp`]: `/v1/cp/...` (put, get, delete, txn, watch events, leases, locks, compaction).
//! - [`ap`]: `/v1/ap/...` and `/v1/ap-local/...`.
//! - [`admin`]: fault injection, clock skew and the dashboard's snapshot.
//! - [`ErrorBody`]: every error answer.
//! - `/v1/status` is [`isle_node::StatusReport`], re-exported here; the CP membership routes
//!   speak [`cp::Membership`] and [`cp::MembershipChange`].

pub mod admin;
pub mod ap;
pub mod cp;

pub use isle_node::StatusReport;

use std::collections::BTreeMap;

use isle_types::ErrorKind;
use serde::{Deserialize, Serialize};

/// Every error answer: the sentence to show, and — for refusals of the keyspaces — the error's
/// name (`kind`, plus `reason` for nested ones), whether the request may have been applied
/// (`outcome`) and the error's own fields (`needed`, `presented`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What failed and what to do, as a sentence.
    pub error: String,
    /// The error's name (`NoQuorum`, `Unavailable`, `Rejected`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Refused, unknown or invalid: whether the request may have been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ErrorKind>,
    /// The inner error's name, for nested errors (`FencingTokenStale` in a `Rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The error's own fields, which differ from one error to the next.
    #[serde(flatten)]
    pub detail: BTreeMap<String, serde_json::Value>,
}

impl ErrorBody {
    /// An error that is only a sentence.
    pub fn message(error: impl std::fmt::Display) -> ErrorBody {
        ErrorBody {
            error: error.to_string(),
            kind: None,
            outcome: None,
            reason: None,
            detail: BTreeMap::new(),
        }
    }

    /// `kind/reason`, `kind`, or `None` when the answer names no error.
    pub fn name(&self) -> Option<String> {
        match (&self.kind, &self.reason) {
            (Some(kind), Some(reason)) => Some(format!("{kind}/{reason}")),
            (Some(kind), None) => Some(kind.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_body_round_trips_with_its_fields_at_the_top_level() {
        let text = r#"{"current":4,"error":"stale token","kind":"Rejected","outcome":"invalid","presented":2,"reason":"FencingTokenStale"}"#;
        let body: ErrorBody = serde_json::from_str(text).expect("decodes");
        assert_eq!(body.kind.as_deref(), Some("Rejected"));
        assert_eq!(body.reason.as_deref(), Some("FencingTokenStale"));
        assert_eq!(body.outcome, Some(ErrorKind::Invalid));
        assert_eq!(body.detail.get("presented"), Some(&json!(2)));
        assert_eq!(body.name().as_deref(), Some("Rejected/FencingTokenStale"));
        let again: serde_json::Value = serde_json::to_value(&body).expect("encodes");
        let original: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(again, original);
        let plain = serde_json::to_string(&ErrorBody::message("no")).expect("encodes");
        assert_eq!(plain, r#"{"error":"no"}"#);
        assert_eq!(ErrorBody::message("no").name(), None);
    }
}
