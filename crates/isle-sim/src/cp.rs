//! The CP workload: registers written, read (linearizable), compare-and-set through a
//! transaction, and lock → fenced writes → release cycles, each client calling its node's CP
//! service in-process (what the HTTP and gRPC handlers call). Operations are recorded directly
//! in `isle-chaos`'s history shape, ready for its linearizability and fencing checkers.
//!
//! Outcomes follow the CP keyspace's contract: a refusal before proposing (`NoQuorum`,
//! `NoLeader`, `NotInitialized`, a state-machine rejection such as a stale fencing token) is a
//! definite `Fail`; `Timeout`, `Indeterminate` and internal errors leave the effect unknown.
//! Reads change nothing, so any failed read is a `Fail`.
//!
//! Keys: registers `cp/r0..`, written plainly and by compare-and-set; `cp/f<i>`, written only
//! with lock `lock<i>`'s fencing token. Every written value is unique in the run.

use std::collections::BTreeMap;
use std::time::Duration;

use isle_chaos::history::{Op, Outcome, Ret};
use isle_cp::command::{
    Compare, CompareResult, CompareTarget, Fence, PutRequest, RangeRequest, TxnRequest,
};
use isle_cp::{Command, Response};
use isle_env::{Clock, Random, SeededRandom};
use isle_node::cp::{Consistency, Cp, CpRequestError, MembershipChange};

use crate::config::Bug;
use serde::{Deserialize, Serialize};

/// How the CP clients behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpWorkloadConfig {
    /// CP client processes attached to each node (0: no CP workload).
    pub clients_per_node: u64,
    /// Plain registers (`cp/r*`).
    pub registers: u64,
    /// Locks, each with its fenced register (`lock*`, `cp/f*`).
    pub locks: u64,
    /// A lock's lease, seconds (no keep-alives: a holder that outlives it loses the lock).
    pub lease_ttl_secs: i64,
    /// How long an acquisition waits in the lock's queue, ms.
    pub lock_wait_ms: u64,
    /// Relative weights: plain writes.
    pub write: u64,
    /// Relative weights: linearizable reads.
    pub read: u64,
    /// Relative weights: compare-and-sets.
    pub cas: u64,
    /// Relative weights: lock cycles (acquire, 1–3 fenced writes, release).
    pub lock: u64,
}

impl Default for CpWorkloadConfig {
    fn default() -> Self {
        CpWorkloadConfig {
            clients_per_node: 1,
            registers: 2,
            locks: 1,
            lease_ttl_secs: 2,
            lock_wait_ms: 1_500,
            write: 30,
            read: 35,
            cas: 20,
            lock: 15,
        }
    }
}

/// One request of a CP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpRequest {
    /// Put `value` at `key`.
    Write {
        /// The register.
        key: String,
        /// The value, unique in the run.
        value: String,
    },
    /// Linearizable read of `key`.
    Read {
        /// The register.
        key: String,
    },
    /// Write `new` if `key` holds `expect` (`None`: is absent), as one transaction.
    Cas {
        /// The register.
        key: String,
        /// The value expected.
        expect: Option<String>,
        /// The value written.
        new: String,
    },
    /// Grant a lease and acquire `lock` under it (waiting in queue order).
    Acquire {
        /// The lock.
        lock: String,
    },
    /// Put `value` at `key`, fenced by `(lock, token)`.
    FencedWrite {
        /// The fenced register.
        key: String,
        /// The lock.
        lock: String,
        /// The token it was granted.
        token: i64,
        /// The value, unique in the run.
        value: String,
    },
    /// Release the lock held by `waiter` (its key) and revoke its lease.
    Release {
        /// The lock.
        lock: String,
        /// The token it was held with.
        token: i64,
        /// The held lock's waiter key and lease.
        held: Held,
    },
}

/// A held lock, as the client remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The waiter key that holds it.
    pub key: Vec<u8>,
    /// Its lease.
    pub lease: i64,
}

impl CpRequest {
    /// The history's key for the request (a lock's name for acquire and release).
    pub fn key(&self) -> &str {
        match self {
            CpRequest::Write { key, .. }
            | CpRequest::Read { key }
            | CpRequest::Cas { key, .. }
            | CpRequest::FencedWrite { key, .. } => key,
            CpRequest::Acquire { lock } | CpRequest::Release { lock, .. } => lock,
        }
    }

    /// The history's operation.
    pub fn op(&self) -> Op {
        match self {
            CpRequest::Write { value, .. } => Op::Write(value.clone()),
            CpRequest::Read { .. } => Op::Read,
            CpRequest::Cas { expect, new, .. } => Op::Cas {
                expect: expect.clone(),
                new: new.clone(),
            },
            CpRequest::Acquire { lock } => Op::Acquire { lock: lock.clone() },
            CpRequest::FencedWrite {
                lock, token, value, ..
            } => Op::FencedWrite {
                lock: lock.clone(),
                token: *token,
                value: value.clone(),
            },
            CpRequest::Release { lock, token, .. } => Op::Release {
                lock: lock.clone(),
                token: *token,
            },
        }
    }

    /// Whether the request may change state.
    pub fn is_mutation(&self) -> bool {
        !matches!(self, CpRequest::Read { .. })
    }
}

/// What came of a CP request.
#[derive(Debug, Clone)]
pub struct CpDone {
    /// The outcome.
    pub outcome: Outcome,
    /// The error the client saw.
    pub error: Option<String>,
    /// For an acquisition: the waiter key and lease that hold the lock.
    pub held: Option<Held>,
}

/// Whether a CP error leaves a mutation's effect unknown.
pub fn definite(error: &CpRequestError) -> bool {
    error.kind().not_applied()
}

fn failed(request: &CpRequest, error: &CpRequestError) -> CpDone {
    let outcome = if !request.is_mutation() || definite(error) {
        Outcome::Fail
    } else {
        Outcome::Indeterminate
    };
    CpDone {
        outcome,
        error: Some(error.to_string()),
        held: None,
    }
}

fn ok(ret: Ret) -> CpDone {
    CpDone {
        outcome: Outcome::Ok(ret),
        error: None,
        held: None,
    }
}

fn answer(request: &CpRequest, result: Result<Response, CpRequestError>) -> CpDone {
    match result {
        Ok(Response::Put(_)) => ok(Ret::Ack),
        Ok(Response::Txn(txn)) => ok(Ret::Cas(txn.succeeded)),
        Ok(other) => CpDone {
            outcome: Outcome::Indeterminate,
            error: Some(format!("unexpected answer {other:?}")),
            held: None,
        },
        Err(error) => failed(request, &error),
    }
}

/// Runs `request` against `cp` and reports what the client learned. With `bug`, this client
/// layer misbehaves the way [`Bug`] describes — the node itself is never broken.
pub async fn execute(
    cp: &Cp,
    request: &CpRequest,
    config: &CpWorkloadConfig,
    bug: Option<Bug>,
) -> CpDone {
    match request {
        CpRequest::Write { key, value } => {
            let put = PutRequest::new(key.as_bytes(), value.as_bytes());
            answer(request, cp.write(Command::new(put)).await)
        }
        CpRequest::Read { key } => {
            // The bug: a local, possibly stale read, recorded as linearizable all the same.
            let consistency = if bug == Some(Bug::NoQuorumCheck) {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            match cp
                .read(RangeRequest::key(key.as_bytes()), consistency)
                .await
            {
                Ok(read) => ok(Ret::Value(
                    read.response
                        .kvs
                        .first()
                        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                )),
                Err(error) => failed(request, &error),
            }
        }
        CpRequest::Cas { key, expect, new } => {
            let compare = match expect {
                Some(value) => Compare::new(
                    key.as_bytes(),
                    CompareTarget::Value(value.clone().into_bytes()),
                    CompareResult::Equal,
                ),
                None => Compare::new(
                    key.as_bytes(),
                    CompareTarget::Create(0),
                    CompareResult::Equal,
                ),
            };
            let txn = TxnRequest {
                compare: vec![compare],
                success: vec![isle_cp::command::Op::Put(PutRequest::new(
                    key.as_bytes(),
                    new.as_bytes(),
                ))],
                failure: Vec::new(),
                fence: None,
            };
            answer(request, cp.write(Command::new(txn)).await)
        }
        CpRequest::Acquire { lock } => {
            let lease = match cp.lease_grant(0, config.lease_ttl_secs).await {
                Ok(lease) => lease.id,
                Err(error) => return failed(request, &error),
            };
            let wait = Duration::from_millis(config.lock_wait_ms);
            match cp.lock(lock, lease, wait).await {
                Ok(acquired) => CpDone {
                    held: Some(Held {
                        key: acquired.key,
                        lease,
                    }),
                    ..ok(Ret::Token(acquired.token))
                },
                // The acquisition is withdrawn on a lock-wait timeout: no token was handed out.
                Err(error) => failed(request, &error),
            }
        }
        CpRequest::FencedWrite {
            key,
            lock,
            token,
            value,
        } => {
            // The bug: the token is dropped on the way, so the store cannot refuse a stale one.
            let fence = (bug != Some(Bug::NoFencing)).then(|| Fence {
                lock: lock.clone(),
                token: *token,
            });
            let put = PutRequest {
                fence,
                ..PutRequest::new(key.as_bytes(), value.as_bytes())
            };
            answer(request, cp.write(Command::new(put)).await)
        }
        CpRequest::Release { held, .. } => {
            let released = cp.unlock(held.key.clone()).await;
            // The lease only carried the waiter key: revoking it is tidying, not the release.
            let _ = cp.lease_revoke(held.lease).await;
            match released {
                Ok(_) => ok(Ret::Ack),
                Err(error) => failed(request, &error),
            }
        }
    }
}

/// Applies CP membership changes in order through `cp` (forwarded to the leader), retrying
/// each for up to ~10 s of simulated time: a membership nemesis must happen even when the
/// cluster is busy electing or partitioned for a while.
pub async fn change_membership(cp: &Cp, clock: &dyn Clock, changes: &[MembershipChange]) {
    for change in changes {
        for _ in 0..40 {
            match cp.change_membership(*change).await {
                Ok(_) => break,
                Err(_) => clock.sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// Where a client is in its lock cycle.
#[derive(Debug, Clone)]
struct Holding {
    lock: String,
    token: i64,
    held: Held,
    writes_left: u64,
}

/// The CP request generator: seeded draws, each client's lock cycle, and the last value each
/// register was seen to hold (so compare-and-sets often expect the right one).
#[derive(Debug)]
pub struct CpWorkload {
    config: CpWorkloadConfig,
    rng: SeededRandom,
    next_unique: u64,
    holding: BTreeMap<u64, Holding>,
    /// Clients that released a lock and will write once more with its token (a zombie: the
    /// buggy client fencing exists for), by client: (lock, token).
    zombies: BTreeMap<u64, (String, i64)>,
    seen: BTreeMap<String, Option<String>>,
}

impl CpWorkload {
    /// A generator drawing from `rng`.
    pub fn new(config: CpWorkloadConfig, rng: SeededRandom) -> Self {
        CpWorkload {
            config,
            rng,
            next_unique: 0,
            holding: BTreeMap::new(),
            zombies: BTreeMap::new(),
            seen: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CpWorkloadConfig {
        &self.config
    }

    fn unique(&mut self) -> String {
        self.next_unique += 1;
        format!("c{}", self.next_unique)
    }

    fn register(&mut self) -> String {
        format!("cp/r{}", self.rng.below(self.config.registers.max(1)))
    }

    /// The next request of client `process`.
    pub fn next_request(&mut self, process: u64) -> CpRequest {
        if let Some((lock, token)) = self.zombies.remove(&process) {
            let index = lock.trim_start_matches("lock").to_string();
            return CpRequest::FencedWrite {
                key: format!("cp/f{index}"),
                lock,
                token,
                value: self.unique(),
            };
        }
        if let Some(holding) = self.holding.get(&process).cloned() {
            let index = holding.lock.trim_start_matches("lock");
            if holding.writes_left > 0 {
                let value = self.unique();
                if let Some(h) = self.holding.get_mut(&process) {
                    h.writes_left -= 1;
                }
                return CpRequest::FencedWrite {
                    key: format!("cp/f{index}"),
                    lock: holding.lock,
                    token: holding.token,
                    value,
                };
            }
            self.holding.remove(&process);
            // One release in three leaves a zombie that writes once more with the old token:
            // refused once someone else holds the lock, accepted if nobody took it since.
            if self.rng.below(3) == 0 {
                self.zombies
                    .insert(process, (holding.lock.clone(), holding.token));
            }
            return CpRequest::Release {
                lock: holding.lock,
                token: holding.token,
                held: holding.held,
            };
        }
        let c = &self.config;
        let weights = [c.write, c.read, c.cas, c.lock];
        let total: u64 = weights.iter().sum::<u64>().max(1);
        let mut draw = self.rng.below(total);
        let mut kind = 0;
        for (index, weight) in weights.iter().enumerate() {
            if draw < *weight {
                kind = index;
                break;
            }
            draw -= weight;
        }
        match kind {
            0 => {
                let key = self.register();
                CpRequest::Write {
                    key,
                    value: self.unique(),
                }
            }
            1 => {
                // Fenced registers are read too: their reads check the fenced writes' order.
                let fenced = self.config.locks > 0 && self.rng.below(4) == 0;
                let key = if fenced {
                    format!("cp/f{}", self.rng.below(self.config.locks))
                } else {
                    self.register()
                };
                CpRequest::Read { key }
            }
            2 => {
                let key = self.register();
                // Mostly the value last seen (likely to apply), sometimes absent or stale.
                let expect = if self.rng.below(4) == 0 {
                    None
                } else {
                    self.seen.get(&key).cloned().flatten()
                };
                CpRequest::Cas {
                    key,
                    expect,
                    new: self.unique(),
                }
            }
            _ if self.config.locks > 0 => CpRequest::Acquire {
                lock: format!("lock{}", self.rng.below(self.config.locks)),
            },
            _ => CpRequest::Read {
                key: self.register(),
            },
        }
    }

    /// Learns from a completed request of `process`: a granted lock starts its fenced writes,
    /// a refused fenced write ends the cycle early, values seen feed later compare-and-sets.
    pub fn observe(&mut self, process: u64, request: &CpRequest, done: &CpDone) {
        match (request, &done.outcome) {
            (CpRequest::Acquire { lock }, Outcome::Ok(Ret::Token(token))) => {
                if let Some(held) = done.held.clone() {
                    let writes_left = 1 + self.rng.below(3);
                    self.holding.insert(
                        process,
                        Holding {
                            lock: lock.clone(),
                            token: *token,
                            held,
                            writes_left,
                        },
                    );
                }
            }
            (CpRequest::FencedWrite { .. }, Outcome::Fail | Outcome::Indeterminate) => {
                if let Some(h) = self.holding.get_mut(&process) {
                    h.writes_left = 0;
                }
            }
            (CpRequest::Read { key }, Outcome::Ok(Ret::Value(value))) => {
                self.seen.insert(key.clone(), value.clone());
            }
            (CpRequest::Write { key, value }, Outcome::Ok(_))
            | (
                CpRequest::Cas {
                    key, new: value, ..
                },
                Outcome::Ok(Ret::Cas(true)),
            ) => {
                self.seen.insert(key.clone(), Some(value.clone()));
            }
            _ => {}
        }
    }

    /// Forgets a client retired after a crash (its lock, if any, lapses with its lease).
    pub fn retire(&mut self, process: u64) {
        self.holding.remove(&process);
        self.zombies.remove(&process);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_granted_lock_leads_to_fenced_writes_then_a_release() {
        let mut workload = CpWorkload::new(CpWorkloadConfig::default(), SeededRandom::new(4));
        let acquire = CpRequest::Acquire {
            lock: "lock0".into(),
        };
        let done = CpDone {
            outcome: Outcome::Ok(Ret::Token(17)),
            error: None,
            held: Some(Held {
                key: b"lock0/1".to_vec(),
                lease: 1,
            }),
        };
        workload.observe(9, &acquire, &done);
        let mut fenced = 0;
        loop {
            match workload.next_request(9) {
                CpRequest::FencedWrite { key, token, .. } => {
                    assert_eq!((key.as_str(), token), ("cp/f0", 17));
                    fenced += 1;
                }
                CpRequest::Release { token, .. } => {
                    assert_eq!(token, 17);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((1..=3).contains(&fenced));
        // Maybe one zombie write with the released token, then the cycle is over.
        let mut next = workload.next_request(9);
        if let CpRequest::FencedWrite { token, .. } = next {
            assert_eq!(token, 17);
            next = workload.next_request(9);
        }
        assert!(!matches!(
            next,
            CpRequest::FencedWrite { .. } | CpRequest::Release { .. }
        ));
    }

    #[test]
    fn every_kind_is_drawn() {
        let mut workload = CpWorkload::new(CpWorkloadConfig::default(), SeededRandom::new(1));
        let ops: Vec<String> = (0..500)
            .map(|i| format!("{:?}", workload.next_request(i).op()))
            .collect();
        for kind in ["Write", "Read", "Cas", "Acquire"] {
            assert!(ops.iter().any(|op| op.starts_with(kind)), "no {kind}");
        }
    }
}
