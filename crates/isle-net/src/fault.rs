//! Fault injection rules: a shared table the admin API edits and connection tasks consult.
//!
//! The table is pure data plus a seeded decision; the transport applies the verdicts. Rules name
//! peers by [`NodeId`], so traffic to an address whose id is not known yet matches no rule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isle_env::Random;
use isle_types::NodeId;
use serde::{Deserialize, Serialize};

/// Longest delay a rule may ask for.
pub const DELAY_MS_MAX: u64 = 60_000;
/// Most rules the table holds at once.
pub const RULES_MAX: usize = 1024;

/// Which traffic a rule applies to, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Messages this node sends to the peer.
    Outbound,
    /// Messages this node receives from the peer.
    Inbound,
    /// Both directions.
    Both,
}

impl Direction {
    fn covers(self, dir: Direction) -> bool {
        self == Direction::Both || dir == Direction::Both || self == dir
    }
}

/// What a matching rule does to a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum FaultAction {
    /// Lose the message.
    Drop,
    /// Hold the message for `ms` milliseconds, without holding up later messages.
    Delay {
        /// How long to hold it.
        ms: u64,
    },
    /// Deliver the message twice.
    Duplicate,
    /// Flip a payload bit so the receiver's checksum rejects it.
    Corrupt,
}

fn one() -> f64 {
    1.0
}

/// One fault rule: traffic with `peer` in `direction` suffers `action` with `probability`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// The peer whose traffic is affected.
    pub peer: NodeId,
    /// Which direction of that traffic.
    pub direction: Direction,
    /// What happens to a matching message.
    #[serde(flatten)]
    pub action: FaultAction,
    /// Chance in `[0, 1]` that the rule fires for one message (default 1).
    #[serde(default = "one")]
    pub probability: f64,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send or deliver it normally.
    Deliver,
    /// Lose it.
    Drop,
    /// Hold it this long first.
    Delay(Duration),
    /// Send or deliver it twice.
    Duplicate,
    /// Damage it so the checksum fails.
    Corrupt,
}

/// Why the fault table refused a change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// Fault injection is disabled on this node.
    #[error("fault injection is off: start the node with --allow-fault-injection")]
    NotAllowed,
    /// The probability is outside `[0, 1]`.
    #[error("probability {0} is outside [0, 1]: use e.g. 0.25 for one message in four")]
    BadProbability(f64),
    /// The delay exceeds [`DELAY_MS_MAX`].
    #[error("delay of {ms} ms exceeds the {max_ms} ms maximum: use a partition (drop) instead")]
    DelayTooLong {
        /// Requested delay.
        ms: u64,
        /// The maximum.
        max_ms: u64,
    },
    /// No rule has this id.
    #[error("no fault rule with id {0}: list the rules to see the current ids")]
    UnknownRule(u64),
    /// The table is full.
    #[error("the fault table already holds {0} rules: remove or clear some first")]
    TooManyRules(usize),
}

#[derive(Debug, Default)]
struct Table {
    rules: BTreeMap<u64, FaultRule>,
    next_id: u64,
}

/// The node's fault table; clones share it.
#[derive(Debug, Clone)]
pub struct Faults {
    allowed: bool,
    table: Arc<Mutex<Table>>,
}

impl Faults {
    /// A table that accepts rules only when `allowed` (`--allow-fault-injection`).
    pub fn new(allowed: bool) -> Self {
        Faults {
            allowed,
            table: Arc::new(Mutex::new(Table {
                rules: BTreeMap::new(),
                next_id: 1,
            })),
        }
    }

    /// Whether this node accepts fault rules.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    fn table(&self) -> Result<std::sync::MutexGuard<'_, Table>, FaultError> {
        if !self.allowed {
            return Err(FaultError::NotAllowed);
        }
        Ok(self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere cannot leave the table half-updated: every mutation is one call.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Validates and installs a rule; returns its id.
    pub fn add(&self, rule: FaultRule) -> Result<u64, FaultError> {
        let mut table = self.table()?;
        if !(0.0..=1.0).contains(&rule.probability) {
            return Err(FaultError::BadProbability(rule.probability));
        }
        if let FaultAction::Delay { ms } = rule.action
            && ms > DELAY_MS_MAX
        {
            return Err(FaultError::DelayTooLong {
                ms,
                max_ms: DELAY_MS_MAX,
            });
        }
        if table.rules.len() >= RULES_MAX {
            return Err(FaultError::TooManyRules(RULES_MAX));
        }
        let id = table.next_id;
        table.next_id += 1;
        table.rules.insert(id, rule);
        Ok(id)
    }

    /// Removes the rule with this id.
    pub fn remove(&self, id: u64) -> Result<(), FaultError> {
        match self.table()?.rules.remove(&id) {
            Some(_) => Ok(()),
            None => Err(FaultError::UnknownRule(id)),
        }
    }

    /// Removes every rule.
    pub fn clear(&self) -> Result<(), FaultError> {
        self.table()?.rules.clear();
        Ok(())
    }

    /// Removes every rule naming `peer`; returns how many there were.
    pub fn clear_peer(&self, peer: NodeId) -> Result<usize, FaultError> {
        let mut table = self.table()?;
        let before = table.rules.len();
        table.rules.retain(|_, rule| rule.peer != peer);
        Ok(before - table.rules.len())
    }

    /// The installed rules with their ids, in id order.
    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        let table = self.lock();
        table.rules.iter().map(|(id, r)| (*id, r.clone())).collect()
    }

    /// What to do with one message to or from `peer`.
    ///
    /// Each matching rule fires independently with its probability; among those that fire, drop
    /// wins, then corrupt, then the longest delay, then duplicate.
    pub fn decide(&self, peer: NodeId, dir: Direction, rng: &mut impl Random) -> Verdict {
        if !self.allowed {
            return Verdict::Deliver;
        }
        let table = self.lock();
        let mut verdict = Verdict::Deliver;
        let matching = table
            .rules
            .values()
            .filter(|rule| rule.peer == peer && rule.direction.covers(dir));
        for rule in matching {
            if !fires(rule.probability, rng) {
                continue;
            }
            let candidate = match rule.action {
                FaultAction::Drop => Verdict::Drop,
                FaultAction::Corrupt => Verdict::Corrupt,
                FaultAction::Delay { ms } => Verdict::Delay(Duration::from_millis(ms)),
                FaultAction::Duplicate => Verdict::Duplicate,
            };
            verdict = stronger(verdict, candidate);
        }
        verdict
    }
}

/// One Bernoulli draw; always draws so the rng sequence does not depend on the probabilities.
fn fires(probability: f64, rng: &mut impl Random) -> bool {
    const SCALE: u64 = 1 << 53;
    let draw = rng.below(SCALE) as f64 / SCALE as f64;
    draw < probability
}

fn rank(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Deliver => 0,
        Verdict::Duplicate => 1,
        Verdict::Delay(_) => 2,
        Verdict::Corrupt => 3,
        Verdict::Drop => 4,
    }
}

fn stronger(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Delay(x), Verdict::Delay(y)) => Verdict::Delay(x.max(y)),
        _ if rank(b) > rank(a) => b,
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isle_env::SeededRandom;

    fn rule(peer: u64, direction: Direction, action: FaultAction) -> FaultRule {
        FaultRule {
            peer: NodeId(peer),
            direction,
            action,
            probability: 1.0,
        }
    }

    #[test]
    fn mutations_refused_when_not_allowed() {
        let faults = Faults::new(false);
        assert!(!faults.allowed());
        let r = rule(2, Direction::Both, FaultAction::Drop);
        assert_eq!(faults.add(r), Err(FaultError::NotAllowed));
        assert_eq!(faults.remove(1), Err(FaultError::NotAllowed));
        assert_eq!(faults.clear(), Err(FaultError::NotAllowed));
        assert_eq!(faults.clear_peer(NodeId(2)), Err(FaultError::NotAllowed));
        assert!(
            FaultError::NotAllowed
                .to_string()
                .contains("--allow-fault-injection")
        );
    }

    #[test]
    fn validation() {
        let faults = Faults::new(true);
        let mut r = rule(2, Direction::Both, FaultAction::Drop);
        for p in [-0.1, 1.5, f64::NAN] {
            r.probability = p;
            assert!(matches!(
                faults.add(r.clone()),
                Err(FaultError::BadProbability(_))
            ));
        }
        let long = rule(2, Direction::Both, FaultAction::Delay { ms: 60_001 });
        assert!(matches!(
            faults.add(long),
            Err(FaultError::DelayTooLong { .. })
        ));
        let ok = rule(2, Direction::Both, FaultAction::Delay { ms: 60_000 });
        assert_eq!(faults.add(ok), Ok(1));
        assert_eq!(faults.remove(9), Err(FaultError::UnknownRule(9)));
    }

    #[test]
    fn add_list_remove_clear() {
        let faults = Faults::new(true);
        let a = faults.add(rule(2, Direction::Outbound, FaultAction::Drop));
        let b = faults.add(rule(3, Direction::Inbound, FaultAction::Duplicate));
        let c = faults.add(rule(2, Direction::Inbound, FaultAction::Corrupt));
        assert_eq!((a, b, c), (Ok(1), Ok(2), Ok(3)));
        let ids: Vec<u64> = faults.list().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(faults.remove(2), Ok(()));
        assert_eq!(faults.clear_peer(NodeId(2)), Ok(2));
        assert!(faults.list().is_empty());
        faults.add(rule(4, Direction::Both, FaultAction::Drop)).ok();
        assert_eq!(faults.clear(), Ok(()));
        assert!(faults.list().is_empty());
    }

    #[test]
    fn precedence_and_matching() {
        use Direction::*;
        let delay = |ms| FaultAction::Delay { ms };
        let ms = Duration::from_millis;
        let cases: Vec<(Vec<FaultRule>, u64, Direction, Verdict)> = vec![
            (vec![], 2, Outbound, Verdict::Deliver),
            (
                vec![rule(2, Outbound, FaultAction::Drop)],
                3,
                Outbound,
                Verdict::Deliver,
            ),
            (
                vec![rule(2, Outbound, FaultAction::Drop)],
                2,
                Inbound,
                Verdict::Deliver,
            ),
            (
                vec![rule(2, Both, FaultAction::Drop)],
                2,
                Inbound,
                Verdict::Drop,
            ),
            (
                vec![
                    rule(2, Both, FaultAction::Duplicate),
                    rule(2, Both, delay(5)),
                ],
                2,
                Outbound,
                Verdict::Delay(ms(5)),
            ),
            (
                vec![rule(2, Both, delay(5)), rule(2, Outbound, delay(9))],
                2,
                Outbound,
                Verdict::Delay(ms(9)),
            ),
            (
                vec![rule(2, Both, delay(5)), rule(2, Both, FaultAction::Corrupt)],
                2,
                Inbound,
                Verdict::Corrupt,
            ),
            (
                vec![
                    rule(2, Both, FaultAction::Drop),
                    rule(2, Both, FaultAction::Corrupt),
                ],
                2,
                Inbound,
                Verdict::Drop,
            ),
        ];
        for (i, (rules, peer, dir, want)) in cases.into_iter().enumerate() {
            let faults = Faults::new(true);
            for r in rules {
                faults.add(r).ok();
            }
            let mut rng = SeededRandom::new(i as u64);
            assert_eq!(faults.decide(NodeId(peer), dir, &mut rng), want, "case {i}");
        }
    }

    #[test]
    fn probability_is_respected() {
        let faults = Faults::new(true);
        let mut r = rule(2, Direction::Both, FaultAction::Drop);
        r.probability = 0.0;
        let never = faults.add(r.clone()).unwrap_or(0);
        let mut rng = SeededRandom::new(42);
        for _ in 0..1000 {
            assert_eq!(
                faults.decide(NodeId(2), Direction::Outbound, &mut rng),
                Verdict::Deliver
            );
        }
        faults.remove(never).ok();
        r.probability = 0.25;
        faults.add(r).ok();
        let drops = (0..10_000)
            .filter(|_| faults.decide(NodeId(2), Direction::Inbound, &mut rng) == Verdict::Drop)
            .count();
        assert!((2_200..2_800).contains(&drops), "{drops} drops of 10000");
    }

    #[test]
    fn json_shape() {
        let json = r#"{"peer":2,"direction":"outbound","action":"delay","ms":150}"#;
        let parsed: FaultRule = serde_json::from_str(json).expect("valid rule json");
        assert_eq!(
            parsed,
            rule(2, Direction::Outbound, FaultAction::Delay { ms: 150 })
        );
        let back = serde_json::to_value(&parsed).expect("serialises");
        assert_eq!(back["action"], "delay");
        assert_eq!(back["probability"], 1.0);
        let drop: FaultRule = serde_json::from_str(
            r#"{"peer":3,"direction":"both","action":"drop","probability":0.5}"#,
        )
        .expect("valid rule json");
        assert_eq!(drop.action, FaultAction::Drop);
        assert_eq!(drop.probability, 0.5);
    }
}
