//! What every replica holds after the heal ([`FinalState`], one [`FinalCopy`] per replica and
//! key), and the checks that need the copies alone: the primaries agree (on the value, and on
//! the digest where the engine reads one), an acknowledged key is held by some primary, and no
//! copy holds one written value as two siblings.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{ApValue, Value};
use crate::verdict::Verdict;

/// One replica's final copy of a key, read from the replica itself after the heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCopy {
    /// Whether the replica is one of the key's primaries. Only primaries must converge; a
    /// fallback's copy is recorded for the other checks.
    pub primary: bool,
    /// What it holds; `None`: nothing at all for the key (not even a tombstone).
    pub value: Option<ApValue>,
    /// The replica's digest of its copy (value and causal metadata), where the engine reads
    /// one: primaries must agree on it too, or anti-entropy never rests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Plain values the copy holds as more than one sibling (more than one dot). Values are
    /// written once each, so such a copy applied one client write as two.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Value>,
}

impl FinalCopy {
    /// A primary's copy holding `value`, without digest or duplicates.
    pub fn held(value: ApValue) -> Self {
        Self {
            primary: true,
            value: Some(value),
            digest: None,
            duplicates: Vec::new(),
        }
    }
}

impl fmt::Display for FinalCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{value}")?,
            None => f.write_str("no copy")?,
        }
        if let Some(digest) = &self.digest {
            let short: String = digest.chars().take(8).collect();
            write!(f, " (digest {short})")?;
        }
        Ok(())
    }
}

/// The final read of every replica: key → replica (node) → its copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Per key, per replica.
    pub keys: BTreeMap<String, BTreeMap<String, FinalCopy>>,
}

impl FinalState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that primary `replica` holds `value` for `key`.
    pub fn insert(&mut self, key: impl Into<String>, replica: impl Into<String>, value: ApValue) {
        self.insert_copy(key, replica, FinalCopy::held(value));
    }

    /// Records `replica`'s copy of `key`.
    pub fn insert_copy(
        &mut self,
        key: impl Into<String>,
        replica: impl Into<String>,
        copy: FinalCopy,
    ) {
        self.keys
            .entry(key.into())
            .or_default()
            .insert(replica.into(), copy);
    }
}

/// What the primaries of a key hold, once the copies themselves were checked.
pub(super) struct Held<'a> {
    /// Each distinct value (no copy reads as absent) and the primaries that hold it.
    pub values: Vec<(ApValue, Vec<&'a str>)>,
    /// Whether the primaries' copies differ.
    pub diverged: bool,
}

/// Checks one key's copies; `acknowledged`: some mutation of the key was acknowledged.
/// `None` if no primary was read.
pub(super) fn check<'a>(
    key: &str,
    copies: &'a BTreeMap<String, FinalCopy>,
    acknowledged: bool,
    verdict: &mut Verdict,
) -> Option<Held<'a>> {
    for (replica, copy) in copies.iter().filter(|(_, c)| !c.duplicates.is_empty()) {
        verdict.violation(
            Some(key),
            format!(
                "one write stored as two siblings: {replica} holds {} more than once",
                copy.duplicates
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            vec![format!(
                "{replica}: {copy}; a delete that covers one such sibling leaves the other"
            )],
        );
    }
    let primaries: Vec<(&str, &FinalCopy)> = copies
        .iter()
        .filter(|(_, c)| c.primary)
        .map(|(replica, copy)| (replica.as_str(), copy))
        .collect();
    if primaries.is_empty() {
        return None;
    }
    let mut distinct: Vec<(&Option<ApValue>, &Option<String>)> = Vec::new();
    for (_, copy) in &primaries {
        let both = (&copy.value, &copy.digest);
        if !distinct.contains(&both) {
            distinct.push(both);
        }
    }
    let diverged = distinct.len() > 1;
    if diverged {
        verdict.violation(
            Some(key),
            format!(
                "replicas differ after the heal: {} distinct copies on {} replicas",
                distinct.len(),
                primaries.len()
            ),
            primaries
                .iter()
                .map(|(replica, copy)| format!("{replica}: {copy}"))
                .collect(),
        );
    }
    if acknowledged && primaries.iter().all(|(_, c)| c.value.is_none()) {
        verdict.violation(
            Some(key),
            "acknowledged mutations, but no primary replica holds a copy of the key",
            Vec::new(),
        );
    }
    let mut values: Vec<(ApValue, Vec<&str>)> = Vec::new();
    for (replica, copy) in &primaries {
        let value = copy.value.clone().unwrap_or(ApValue::Absent);
        match values.iter_mut().find(|(v, _)| *v == value) {
            Some((_, holders)) => holders.push(replica),
            None => values.push((value, vec![replica])),
        }
    }
    Some(Held { values, diverged })
}
