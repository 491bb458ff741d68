//! The AP workload: what each client asks next, drawn from the run's seed.
//!
//! Keys are grouped by kind so each has one merge rule to check: `v*` plain values in the
//! `siblings` bucket (blind writes and read-then-delete), `l*` plain values in the `lww` bucket,
//! `c*` counters, `s*` add-wins sets and `m*` maps of counter fields (all three in `siblings`).
//! Every written value and set member is unique in the run, and every increment carries a
//! request id, so the checks can name the operation behind anything they find.

use std::collections::BTreeMap;

use isle_ap::Level;
use isle_env::{Random, SeededRandom};
use serde::{Deserialize, Serialize};

use isle_chaos::{Op, Outcome};

/// The bucket of plain values kept as siblings (and of counters, sets and maps).
pub const SIBLINGS: &str = "siblings";
/// The bucket of last-write-wins plain values.
pub const LWW: &str = "lww";

/// How the clients behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Client processes attached to each node.
    pub clients_per_node: u64,
    /// A client waits up to this long (uniformly) between operations, ms.
    pub think_ms_max: u64,
    /// Keys of each kind.
    pub keys_per_kind: u64,
    /// Percentage of mutations sent with `w = one` (the rest use `quorum`).
    pub write_one_percent: u64,
    /// Relative weights of the operation kinds.
    pub mix: Mix,
}

/// Relative weights of the operation kinds (0 leaves a kind out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mix {
    /// Blind writes of `v*` values (`siblings`).
    pub write: u64,
    /// Read-then-delete of `v*` values.
    pub delete: u64,
    /// Writes of `l*` values (`lww`).
    pub lww_write: u64,
    /// Counter increments.
    pub incr: u64,
    /// Set adds.
    pub set_add: u64,
    /// Set removes (of members added before).
    pub set_remove: u64,
    /// Map field increments.
    pub map_incr: u64,
    /// Reads of any key.
    pub read: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            write: 25,
            delete: 5,
            lww_write: 15,
            incr: 15,
            set_add: 12,
            set_remove: 4,
            map_incr: 8,
            read: 16,
        }
    }
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients_per_node: 2,
            think_ms_max: 60,
            keys_per_kind: 3,
            write_one_percent: 20,
            mix: Mix::default(),
        }
    }
}

/// One request a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// What to do (an AP operation).
    pub op: Op,
    /// For increments: the id that makes retries count once.
    pub request_id: Option<String>,
    /// For mutations: the write level.
    pub level: Option<Level>,
}

/// The generator: the seeded draws plus what it must remember (set members that were added,
/// so removes name real members).
#[derive(Debug)]
pub struct Workload {
    config: WorkloadConfig,
    rng: SeededRandom,
    next_unique: u64,
    added: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Write,
    Delete,
    LwwWrite,
    Incr,
    SetAdd,
    SetRemove,
    MapIncr,
    Read,
}

impl Workload {
    /// A generator drawing from `rng`.
    pub fn new(config: WorkloadConfig, rng: SeededRandom) -> Self {
        Workload {
            config,
            rng,
            next_unique: 0,
            added: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// How long a client thinks before its next operation, ms.
    pub fn think_ms(&mut self) -> u64 {
        self.rng.below(self.config.think_ms_max + 1)
    }

    fn unique(&mut self, prefix: &str) -> String {
        self.next_unique += 1;
        format!("{prefix}{}", self.next_unique)
    }

    fn key(&mut self, prefix: &str) -> String {
        format!(
            "{prefix}{}",
            self.rng.below(self.config.keys_per_kind.max(1))
        )
    }

    fn level(&mut self) -> Option<Level> {
        Some(if self.rng.below(100) < self.config.write_one_percent {
            Level::One
        } else {
            Level::Quorum
        })
    }

    fn kind(&mut self) -> Kind {
        let mix = &self.config.mix;
        let weights = [
            (Kind::Write, mix.write),
            (Kind::Delete, mix.delete),
            (Kind::LwwWrite, mix.lww_write),
            (Kind::Incr, mix.incr),
            (Kind::SetAdd, mix.set_add),
            (Kind::SetRemove, mix.set_remove),
            (Kind::MapIncr, mix.map_incr),
            (Kind::Read, mix.read),
        ];
        let total: u64 = weights.iter().map(|(_, weight)| weight).sum();
        let mut draw = self.rng.below(total);
        for (kind, weight) in weights {
            if draw < weight {
                return kind;
            }
            draw -= weight;
        }
        Kind::Read
    }

    /// The next request of some client.
    pub fn next_request(&mut self) -> Request {
        let kind = self.kind();
        let plain = |bucket: &str, key: String, op: Op| Request {
            bucket: bucket.to_string(),
            key,
            op,
            request_id: None,
            level: None,
        };
        let mut request = match kind {
            Kind::Write => {
                let key = self.key("v");
                let value = self.unique("w");
                plain(SIBLINGS, key, write(SIBLINGS, value))
            }
            Kind::Delete => plain(
                SIBLINGS,
                self.key("v"),
                Op::ApDelete {
                    covers: Vec::new(),
                    local: false,
                    covers_unknown: false,
                },
            ),
            Kind::LwwWrite => {
                let key = self.key("l");
                let value = self.unique("w");
                plain(LWW, key, write(LWW, value))
            }
            Kind::Incr => {
                let key = self.key("c");
                let by = 1 + self.rng.below(5) as i64;
                let mut request = plain(SIBLINGS, key, Op::Incr(by));
                request.request_id = Some(self.unique("r"));
                request
            }
            Kind::SetAdd => {
                let key = self.key("s");
                let member = self.unique("m");
                plain(SIBLINGS, key, Op::SetAdd(member))
            }
            Kind::SetRemove => {
                let key = self.key("s");
                let members = self.added.get(&key).cloned().unwrap_or_default();
                if members.is_empty() {
                    let member = self.unique("m");
                    plain(SIBLINGS, key, Op::SetAdd(member))
                } else {
                    let member = members[self.rng.below(members.len() as u64) as usize].clone();
                    plain(SIBLINGS, key, Op::SetRemove(member))
                }
            }
            Kind::MapIncr => {
                let key = self.key("m");
                let field = format!("f{}", self.rng.below(3));
                let by = 1 + self.rng.below(5) as i64;
                let mut request = plain(SIBLINGS, key, Op::MapIncr { field, n: by });
                request.request_id = Some(self.unique("r"));
                request
            }
            Kind::Read => {
                let (bucket, prefix) = [
                    (SIBLINGS, "v"),
                    (LWW, "l"),
                    (SIBLINGS, "c"),
                    (SIBLINGS, "s"),
                    (SIBLINGS, "m"),
                ][self.rng.below(5) as usize];
                let key = self.key(prefix);
                plain(bucket, key, Op::ApRead)
            }
        };
        if request.op.is_mutation() {
            request.level = self.level();
        }
        request
    }

    /// Learns from a completed request (acknowledged set adds become candidates for removes).
    pub fn observe(&mut self, request: &Request, outcome: &Outcome) {
        if let (Op::SetAdd(member), Outcome::Ok(_)) = (&request.op, outcome) {
            self.added
                .entry(request.key.clone())
                .or_default()
                .push(member.clone());
        }
    }
}

/// A blind write of `value` in `bucket`.
fn write(bucket: &str, value: String) -> Op {
    Op::ApWrite {
        bucket: bucket.to_string(),
        value,
        covers: Vec::new(),
        local: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_requests() {
        let draw = |seed| {
            let mut workload = Workload::new(WorkloadConfig::default(), SeededRandom::new(seed));
            (0..200)
                .map(|_| format!("{:?}", workload.next_request()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn every_kind_appears_and_increments_carry_request_ids() {
        let mut workload = Workload::new(WorkloadConfig::default(), SeededRandom::new(1));
        let requests: Vec<Request> = (0..2_000).map(|_| workload.next_request()).collect();
        for op in ["ApWrite", "ApDelete", "Incr", "SetAdd", "MapIncr", "ApRead"] {
            assert!(
                requests
                    .iter()
                    .any(|r| format!("{:?}", r.op).starts_with(op)),
                "no {op}"
            );
        }
        for request in &requests {
            let counted = matches!(request.op, Op::Incr(_) | Op::MapIncr { .. });
            assert_eq!(request.request_id.is_some(), counted, "{request:?}");
            assert_eq!(request.level.is_some(), request.op.is_mutation());
        }
    }
}
