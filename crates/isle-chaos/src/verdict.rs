//! What a checker concludes: ok, violated (with a readable story per violation), or undecided
//! (the search ran out of budget, or the input was incomplete).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One broken promise, told so a person can follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The key (or lock) concerned, if one.
    pub key: Option<String>,
    /// One line: what went wrong.
    pub message: String,
    /// Further lines: the operations and the order that lead there.
    pub story: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key {key:?}: {}", self.message)?,
            None => f.write_str(&self.message)?,
        }
        for line in &self.story {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// The overall conclusion of a [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every check passed.
    Ok,
    /// At least one violation was found.
    Violated,
    /// No violation was found, but some check could not be decided.
    Inconclusive,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Violated => "violated",
            Status::Inconclusive => "inconclusive",
        })
    }
}

/// A checker's verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Which checker ("linearizability", "fencing", "convergence", ...).
    pub checker: String,
    /// What was found broken.
    pub violations: Vec<Violation>,
    /// What could not be decided, and why.
    pub undecided: Vec<String>,
    /// Figures and remarks (operations checked, keys skipped and why).
    pub notes: Vec<String>,
}

impl Verdict {
    /// A verdict with nothing found yet.
    pub fn new(checker: impl Into<String>) -> Self {
        Self {
            checker: checker.into(),
            violations: Vec::new(),
            undecided: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Ok, violated or inconclusive.
    pub fn status(&self) -> Status {
        if !self.violations.is_empty() {
            Status::Violated
        } else if !self.undecided.is_empty() {
            Status::Inconclusive
        } else {
            Status::Ok
        }
    }

    /// Whether every check passed (no violation, nothing undecided).
    pub fn is_ok(&self) -> bool {
        self.status() == Status::Ok
    }

    /// Whether a violation was found.
    pub fn is_violated(&self) -> bool {
        self.status() == Status::Violated
    }

    /// Records a violation.
    pub fn violation(&mut self, key: Option<&str>, message: impl Into<String>, story: Vec<String>) {
        self.violations.push(Violation {
            key: key.map(str::to_string),
            message: message.into(),
            story,
        });
    }

    /// Records something that could not be decided.
    pub fn undecided(&mut self, why: impl Into<String>) {
        self.undecided.push(why.into());
    }

    /// Records a remark.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Adds another verdict's findings to this one.
    pub fn absorb(&mut self, other: Verdict) {
        self.violations.extend(other.violations);
        self.undecided.extend(other.undecided);
        self.notes.extend(other.notes);
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker, self.status())?;
        if !self.violations.is_empty() {
            write!(f, " ({} violations)", self.violations.len())?;
        }
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        for why in &self.undecided {
            write!(f, "\n  undecided: {why}")?;
        }
        for note in &self.notes {
            write!(f, "\n  note: {note}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prefers_violations_over_undecided() {
        let mut verdict = Verdict::new("test");
        assert!(verdict.is_ok());
        verdict.undecided("budget");
        assert_eq!(verdict.status(), Status::Inconclusive);
        verdict.violation(Some("k"), "lost", vec!["line".into()]);
        assert!(verdict.is_violated());
        let text = verdict.to_string();
        assert!(text.starts_with("test: violated (1 violations)"), "{text}");
        assert!(text.contains("key \"k\": lost\n    line"), "{text}");
    }
}
