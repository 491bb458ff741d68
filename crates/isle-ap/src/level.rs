//! Per-request consistency: how many replicas must answer, and the tally that decides it.
//!
//! A request names a [`Level`]; against the key's preference list it becomes a requirement
//! (a count, a quorum of the coordinator's zone, or a quorum of every zone), which is an
//! [`isle_quorum::Threshold`]. The [`Tally`] feeds acknowledgements as they arrive to an
//! [`isle_quorum::Tracker`], which says when the requirement is met or can no longer be met. Under a *strict* request (Riak's `pr`/`pw`) only primary replicas count;
//! otherwise a fallback that stores a hint stands in for the primary it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use isle_quorum::{Outcome, Threshold, Tracker, Voter};
use isle_types::NodeId;
use serde::{Deserialize, Serialize};

/// How many replicas a read or write waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    /// Exactly this many (at least 1, at most N).
    Count(u32),
    /// One replica.
    One,
    /// A majority of N.
    Quorum,
    /// All N.
    All,
    /// A majority of the replicas in the coordinator's zone.
    LocalQuorum,
    /// A majority of the replicas in every zone that holds one.
    EachQuorum,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Count(n) => write!(f, "{n}"),
            Level::One => f.write_str("one"),
            Level::Quorum => f.write_str("quorum"),
            Level::All => f.write_str("all"),
            Level::LocalQuorum => f.write_str("local_quorum"),
            Level::EachQuorum => f.write_str("each_quorum"),
        }
    }
}

/// A consistency level that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown consistency level {0:?}: use one, quorum, all, local_quorum, each_quorum or a number"
)]
pub struct BadLevel(pub String);

impl FromStr for Level {
    type Err = BadLevel;
    fn from_str(s: &str) -> Result<Self, BadLevel> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "one" => Level::One,
            "quorum" => Level::Quorum,
            "all" => Level::All,
            "local_quorum" | "local-quorum" => Level::LocalQuorum,
            "each_quorum" | "each-quorum" => Level::EachQuorum,
            other => match other.parse::<u32>() {
                Ok(n) if n > 0 => Level::Count(n),
                _ => return Err(BadLevel(s.to_string())),
            },
        })
    }
}

/// One replica a request was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node asked.
    pub node: NodeId,
    /// The zone it counts for (a fallback counts for the zone of the primary it stands in for).
    pub zone: String,
    /// Whether it is in the key's preference list (false: a fallback holding a hint).
    pub primary: bool,
}

/// Why a level cannot apply to a key at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LevelError {
    /// More replicas asked than exist.
    #[error("{level} needs {needed} replicas but the bucket keeps only n={n}")]
    MoreThanN {
        /// The level asked for.
        level: String,
        /// Replicas it needs.
        needed: u32,
        /// The bucket's replica count.
        n: u32,
    },
    /// LOCAL_QUORUM from a zone holding no replica of the key.
    #[error("local_quorum: zone {zone:?} holds no replica of this key; use quorum")]
    NoLocalReplica {
        /// The coordinator's zone.
        zone: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    Count(u32),
    Zones(BTreeMap<String, u32>),
}

impl Need {
    /// What `level` asks of the preference list `preferred` (node, zone), for a coordinator
    /// in `local_zone`.
    fn of(
        level: &Level,
        preferred: &[(NodeId, String)],
        local_zone: &str,
    ) -> Result<Self, LevelError> {
        let n = u32::try_from(preferred.len()).unwrap_or(u32::MAX);
        let zone_counts = preferred.iter().fold(BTreeMap::new(), |mut acc, (_, z)| {
            *acc.entry(z.clone()).or_insert(0u32) += 1;
            acc
        });
        Ok(match level {
            Level::One => Need::Count(1),
            Level::Quorum => Need::Count(majority(n)),
            Level::All => Need::Count(n),
            Level::Count(k) if *k > n => {
                return Err(LevelError::MoreThanN {
                    level: level.to_string(),
                    needed: *k,
                    n,
                });
            }
            Level::Count(k) => Need::Count(*k),
            Level::LocalQuorum => match zone_counts.get(local_zone) {
                Some(&count) => {
                    Need::Zones(BTreeMap::from([(local_zone.to_string(), majority(count))]))
                }
                None => {
                    return Err(LevelError::NoLocalReplica {
                        zone: local_zone.to_string(),
                    });
                }
            },
            Level::EachQuorum => Need::Zones(
                zone_counts
                    .into_iter()
                    .map(|(zone, count)| (zone, majority(count)))
                    .collect(),
            ),
        })
    }

    fn total(&self) -> u32 {
        match self {
            Need::Count(k) => *k,
            Need::Zones(need) => need.values().sum(),
        }
    }

    fn threshold(&self) -> Threshold {
        match self {
            Need::Count(k) => Threshold::AtLeast(u64::from(*k)),
            Need::Zones(need) => Threshold::PerZone(
                need.iter()
                    .map(|(zone, k)| (zone.clone(), u64::from(*k)))
                    .collect(),
            ),
        }
    }
}

fn majority(n: u32) -> u32 {
    u32::try_from(isle_quorum::majority(n as usize)).unwrap_or(u32::MAX)
}

/// Replicas `level` needs of the preference list `preferred` (node, zone), summed over zones
/// for zone levels; an error if the level cannot apply to it.
pub fn needed(
    level: &Level,
    preferred: &[(NodeId, String)],
    local_zone: &str,
) -> Result<u32, LevelError> {
    Need::of(level, preferred, local_zone).map(|need| need.total())
}

/// One request's acknowledgements against its level: the level turned into an
/// [`isle_quorum::Threshold`] over the targets that count, counted by an
/// [`isle_quorum::Tracker`] (one counting implementation for CP and AP).
#[derive(Debug, Clone)]
pub struct Tally {
    tracker: Tracker,
    needed: u32,
    /// Every target, counting or not, in the order asked.
    asked: Vec<NodeId>,
    /// Targets that answered, ok or not: each answers once.
    answered: BTreeSet<NodeId>,
    /// Set once the level was met: it stays met.
    met: bool,
}

impl Tally {
    /// A tally for `level` over the preference list `preferred` (node, zone), for a coordinator
    /// in `local_zone`, of a request sent to `targets` (a repeated node counts once, the first
    /// wins). Under `strict` only primaries count.
    pub fn new(
        level: &Level,
        strict: bool,
        preferred: &[(NodeId, String)],
        local_zone: &str,
        targets: &[Target],
    ) -> Result<Self, LevelError> {
        let need = Need::of(level, preferred, local_zone)?;
        let mut seen = BTreeSet::new();
        let targets: Vec<&Target> = targets.iter().filter(|t| seen.insert(t.node)).collect();
        let voters = targets
            .iter()
            .filter(|t| t.primary || !strict)
            .map(|t| Voter::new(t.node, 1, t.zone.clone()))
            .collect();
        let mut tally = Tally {
            tracker: Tracker::new(need.threshold(), voters),
            needed: need.total(),
            asked: targets.iter().map(|t| t.node).collect(),
            answered: BTreeSet::new(),
            met: false,
        };
        tally.check();
        Ok(tally)
    }

    /// `node` acknowledged.
    pub fn ack(&mut self, node: NodeId) {
        self.answer(node);
        self.tracker.record_success(node);
        self.check();
    }

    /// `node` failed, or was never sent the request (an unreachable primary).
    pub fn fail(&mut self, node: NodeId) {
        self.answer(node);
        self.tracker.record_failure(node);
        self.check();
    }

    fn answer(&mut self, node: NodeId) {
        debug_assert!(
            self.asked.contains(&node),
            "{node} answered but was not asked"
        );
        let first = self.answered.insert(node);
        debug_assert!(first, "{node} answered twice");
    }

    /// Met, failed, or still pending.
    pub fn state(&self) -> Outcome {
        self.tracker.outcome()
    }

    /// Replicas that acknowledged and count for the level.
    pub fn acked(&self) -> u32 {
        u32::try_from(self.tracker.successes().len()).unwrap_or(u32::MAX)
    }

    /// Replicas the request was sent to.
    pub fn asked(&self) -> u32 {
        u32::try_from(self.asked.len()).unwrap_or(u32::MAX)
    }

    /// Replicas the level needs, summed over zones for zone levels.
    pub fn needed(&self) -> u32 {
        self.needed
    }

    /// The counting invariants, after every change.
    fn check(&mut self) {
        let state = self.state();
        debug_assert!(
            !self.met || state == Outcome::Reached,
            "a met level became unmet"
        );
        self.met = state == Outcome::Reached;
        debug_assert!(
            self.acked() <= self.asked(),
            "more acks than replicas asked"
        );
        debug_assert!(
            self.answered.len() <= self.asked.len(),
            "more answers than replicas asked"
        );
        debug_assert!(
            self.tracker.voters().len() <= self.asked.len(),
            "a replica counts that was not asked"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pref(zones: &[&str]) -> Vec<(NodeId, String)> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| (NodeId(i as u64 + 1), (*z).to_string()))
            .collect()
    }

    fn tally(level: Level, strict: bool, zones: &[&str]) -> Tally {
        let preferred = pref(zones);
        let targets: Vec<Target> = preferred
            .iter()
            .map(|(node, zone)| Target {
                node: *node,
                zone: zone.clone(),
                primary: true,
            })
            .collect();
        Tally::new(&level, strict, &preferred, "a", &targets).expect("level applies")
    }

    #[test]
    fn levels_parse_and_print() {
        for text in ["one", "quorum", "all", "local_quorum", "each_quorum", "2"] {
            let level: Level = text.parse().expect("parses");
            assert_eq!(level.to_string(), text);
        }
        assert!("most".parse::<Level>().is_err());
        assert!("0".parse::<Level>().is_err());
    }

    #[test]
    fn quorum_of_three_is_met_by_two_and_fails_after_two_failures() {
        let mut t = tally(Level::Quorum, false, &["a", "a", "a"]);
        t.ack(NodeId(1));
        assert_eq!(t.state(), Outcome::Pending);
        t.ack(NodeId(2));
        assert_eq!(t.state(), Outcome::Reached);
        let mut t = tally(Level::Quorum, false, &["a", "a", "a"]);
        t.fail(NodeId(1));
        assert_eq!(t.state(), Outcome::Pending);
        t.fail(NodeId(2));
        assert_eq!(t.state(), Outcome::Impossible);
    }

    #[test]
    fn strict_requests_do_not_count_fallbacks() {
        for (strict, expect) in [(false, Outcome::Reached), (true, Outcome::Impossible)] {
            let preferred = pref(&["a", "a", "a"]);
            let targets = [
                Target {
                    node: NodeId(1),
                    zone: "a".into(),
                    primary: true,
                },
                Target {
                    node: NodeId(9),
                    zone: "a".into(),
                    primary: false,
                },
            ];
            let mut t =
                Tally::new(&Level::Quorum, strict, &preferred, "a", &targets).expect("applies");
            assert_eq!(
                t.asked(),
                2,
                "a fallback is asked even when it does not count"
            );
            t.ack(NodeId(1));
            t.ack(NodeId(9));
            assert_eq!(t.state(), expect, "strict={strict}");
        }
    }

    #[test]
    fn needed_counts_replicas_summed_over_zones() {
        // (level, zones of the preference list, coordinator's zone, needed)
        let table = [
            (Level::One, &["a", "a", "a"][..], "a", 1),
            (Level::Quorum, &["a", "a", "a"], "a", 2),
            (Level::Quorum, &["a", "a", "a", "a"], "a", 3),
            (Level::All, &["a", "b", "c"], "z", 3),
            (Level::Count(2), &["a", "b", "c"], "a", 2),
            (Level::LocalQuorum, &["a", "a", "a", "b"], "a", 2),
            (Level::EachQuorum, &["a", "a", "a", "b", "b"], "a", 4),
        ];
        for (level, zones, local, expected) in table {
            assert_eq!(needed(&level, &pref(zones), local), Ok(expected), "{level}");
        }
    }

    #[test]
    fn zone_levels_count_per_zone() {
        let mut t = tally(Level::EachQuorum, false, &["a", "a", "b"]);
        t.ack(NodeId(1));
        t.ack(NodeId(2));
        assert_eq!(t.state(), Outcome::Pending, "zone b not heard yet");
        t.ack(NodeId(3));
        assert_eq!(t.state(), Outcome::Reached);
        let mut t = tally(Level::LocalQuorum, false, &["a", "b", "b"]);
        t.ack(NodeId(1));
        assert_eq!(
            t.state(),
            Outcome::Reached,
            "the one replica in zone a is its quorum"
        );
        let err = needed(&Level::LocalQuorum, &pref(&["b", "b"]), "a");
        assert!(matches!(err, Err(LevelError::NoLocalReplica { .. })));
        let err = Tally::new(&Level::Count(4), false, &pref(&["a"; 3]), "a", &[]);
        assert!(matches!(
            err,
            Err(LevelError::MoreThanN {
                needed: 4,
                n: 3,
                ..
            })
        ));
    }
}
