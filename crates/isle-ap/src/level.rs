//! Per-request consistency: how many replicas must answer, and the tally that decides it.
//!
//! A request names a [`Level`]; against the key's preference list it becomes a requirement
//! (a count, a quorum of the coordinator's zone, or a quorum of every zone). The [`Tally`]
//! counts acknowledgements as they arrive and says when the requirement is met or can no
//! longer be met. Under a *strict* request (Riak's `pr`/`pw`) only primary replicas count;
//! otherwise a fallback that stores a hint stands in for the primary it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

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

/// Where a tally stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyState {
    /// Not decided yet.
    Pending,
    /// Enough replicas acknowledged.
    Met,
    /// Too many failed for the requirement ever to be met.
    Failed,
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

/// Counts acknowledgements for one request against its level.
#[derive(Debug, Clone)]
pub struct Tally {
    need: Need,
    strict: bool,
    targets: Vec<Target>,
    acked: BTreeSet<NodeId>,
    failed: BTreeSet<NodeId>,
}

fn majority(n: u32) -> u32 {
    n / 2 + 1
}

impl Tally {
    /// A tally for `level` over the preference list `preferred` (node, zone) of a bucket with
    /// `n` replicas, for a coordinator in `local_zone`.
    pub fn new(
        level: &Level,
        strict: bool,
        preferred: &[(NodeId, String)],
        local_zone: &str,
    ) -> Result<Self, LevelError> {
        let n = u32::try_from(preferred.len()).unwrap_or(u32::MAX);
        let zone_counts = preferred.iter().fold(BTreeMap::new(), |mut acc, (_, z)| {
            *acc.entry(z.clone()).or_insert(0u32) += 1;
            acc
        });
        let need = match level {
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
        };
        Ok(Tally {
            need,
            strict,
            targets: Vec::new(),
            acked: BTreeSet::new(),
            failed: BTreeSet::new(),
        })
    }

    /// Records that the request was sent to `target`.
    pub fn add_target(&mut self, target: Target) {
        if !self.targets.iter().any(|t| t.node == target.node) {
            self.targets.push(target);
        }
    }

    /// `node` acknowledged.
    pub fn ack(&mut self, node: NodeId) {
        self.failed.remove(&node);
        self.acked.insert(node);
    }

    /// `node` failed or timed out.
    pub fn fail(&mut self, node: NodeId) {
        if !self.acked.contains(&node) {
            self.failed.insert(node);
        }
    }

    fn counts(&self, target: &Target) -> bool {
        target.primary || !self.strict
    }

    fn tally(&self, include_pending: bool) -> (u32, BTreeMap<&str, u32>) {
        let mut total = 0;
        let mut zones: BTreeMap<&str, u32> = BTreeMap::new();
        for target in &self.targets {
            let yes = self.acked.contains(&target.node)
                || (include_pending && !self.failed.contains(&target.node));
            if yes && self.counts(target) {
                total += 1;
                *zones.entry(target.zone.as_str()).or_insert(0) += 1;
            }
        }
        (total, zones)
    }

    fn satisfied(&self, (total, zones): (u32, BTreeMap<&str, u32>)) -> bool {
        match &self.need {
            Need::Count(k) => total >= *k,
            Need::Zones(need) => need
                .iter()
                .all(|(zone, k)| zones.get(zone.as_str()).copied().unwrap_or(0) >= *k),
        }
    }

    /// Met, failed, or still pending.
    pub fn state(&self) -> TallyState {
        if self.satisfied(self.tally(false)) {
            TallyState::Met
        } else if !self.satisfied(self.tally(true)) {
            TallyState::Failed
        } else {
            TallyState::Pending
        }
    }

    /// Replicas that acknowledged and count for the level.
    pub fn acked(&self) -> u32 {
        self.tally(false).0
    }

    /// Replicas the request was sent to.
    pub fn asked(&self) -> u32 {
        u32::try_from(self.targets.len()).unwrap_or(u32::MAX)
    }

    /// Replicas the level needs, summed over zones for zone levels.
    pub fn needed(&self) -> u32 {
        match &self.need {
            Need::Count(k) => *k,
            Need::Zones(need) => need.values().sum(),
        }
    }

    /// Nodes that acknowledged (counting or not).
    pub fn acked_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.acked.iter().copied()
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
        let mut tally = Tally::new(&level, strict, &preferred, "a").expect("level applies");
        for (node, zone) in preferred {
            tally.add_target(Target {
                node,
                zone,
                primary: true,
            });
        }
        tally
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
        assert_eq!(t.state(), TallyState::Pending);
        t.ack(NodeId(2));
        assert_eq!(t.state(), TallyState::Met);
        let mut t = tally(Level::Quorum, false, &["a", "a", "a"]);
        t.fail(NodeId(1));
        assert_eq!(t.state(), TallyState::Pending);
        t.fail(NodeId(2));
        assert_eq!(t.state(), TallyState::Failed);
    }

    #[test]
    fn strict_requests_do_not_count_fallbacks() {
        for (strict, expect) in [(false, TallyState::Met), (true, TallyState::Failed)] {
            let preferred = pref(&["a", "a", "a"]);
            let mut t = Tally::new(&Level::Quorum, strict, &preferred, "a").expect("applies");
            t.add_target(Target {
                node: NodeId(1),
                zone: "a".into(),
                primary: true,
            });
            t.add_target(Target {
                node: NodeId(9),
                zone: "a".into(),
                primary: false,
            });
            t.ack(NodeId(1));
            t.ack(NodeId(9));
            assert_eq!(t.state(), expect, "strict={strict}");
        }
    }

    #[test]
    fn zone_levels_count_per_zone() {
        let mut t = tally(Level::EachQuorum, false, &["a", "a", "b"]);
        t.ack(NodeId(1));
        t.ack(NodeId(2));
        assert_eq!(t.state(), TallyState::Pending, "zone b not heard yet");
        t.ack(NodeId(3));
        assert_eq!(t.state(), TallyState::Met);
        let mut t = tally(Level::LocalQuorum, false, &["a", "b", "b"]);
        t.ack(NodeId(1));
        assert_eq!(
            t.state(),
            TallyState::Met,
            "the one replica in zone a is its quorum"
        );
        let err = Tally::new(&Level::LocalQuorum, false, &pref(&["b", "b"]), "a");
        assert!(matches!(err, Err(LevelError::NoLocalReplica { .. })));
        let err = Tally::new(&Level::Count(4), false, &pref(&["a"; 3]), "a");
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
