//! Test support: a seeded generator of valid register histories (a real register, concurrent
//! clients, random delays, refusals and timeouts), mutations that make a valid history invalid
//! by construction, and a brute-force linearizability oracle for tiny histories.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use isle_chaos::history::{History, Op, Operation, Outcome, Ret, Value};

/// SplitMix64: small, seeded, good enough for tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x1234_5678_9abc_def0)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Shape of a generated workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub keys: usize,
    pub clients: u64,
    pub ops: usize,
    /// Probability an operation is refused (never applied).
    pub fail: f64,
    /// Probability an operation times out (applied later, or never: half and half).
    pub indeterminate: f64,
    /// Mix: reads, writes, compare-and-sets, the rest deletes.
    pub reads: f64,
    pub writes: f64,
    pub cases: f64,
    /// Largest network/processing delay.
    pub latency: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            keys: 3,
            clients: 5,
            ops: 300,
            fail: 0.05,
            indeterminate: 0.08,
            reads: 0.45,
            writes: 0.3,
            cases: 0.2,
            latency: 100,
        }
    }
}

enum Event {
    Invoke(u64),
    Linearize(usize),
    Complete(usize),
}

struct Pending {
    op: Operation,
    fate: Fate,
    result: Option<Ret>,
}

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Ok,
    Fail,
    Timeout,
}

/// A valid history: every operation that applies does so at one instant inside its interval
/// (or, timed out, at any instant after its invocation) on a real register per key.
pub fn valid_history(seed: u64, workload: &Workload) -> History {
    let mut rng = Rng::new(seed);
    let lat = workload.latency.max(1);
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut events: Vec<Event> = Vec::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<Reverse<(u64, u64, usize)>>,
                    events: &mut Vec<Event>,
                    at: u64,
                    event: Event| {
        events.push(event);
        heap.push(Reverse((at, seq, events.len() - 1)));
        seq += 1;
    };
    for client in 0..workload.clients {
        let at = rng.below(lat);
        push(&mut heap, &mut events, at, Event::Invoke(client));
    }
    let mut registers: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut known: BTreeMap<(u64, String), Option<Value>> = BTreeMap::new();
    let mut counters: BTreeMap<u64, u64> = BTreeMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut done: Vec<(usize, Operation)> = Vec::new();
    let mut invoked = 0usize;
    while let Some(Reverse((now, _, event))) = heap.pop() {
        match events[event] {
            Event::Invoke(client) => {
                if invoked >= workload.ops {
                    continue;
                }
                invoked += 1;
                let key = format!("k{}", rng.below(workload.keys as u64));
                let n = counters.entry(client).or_default();
                *n += 1;
                let value = format!("c{client}-{n}");
                let pick = rng.unit();
                let op = if pick < workload.reads {
                    Op::Read
                } else if pick < workload.reads + workload.writes {
                    Op::Write(value)
                } else if pick < workload.reads + workload.writes + workload.cases {
                    let expect = known.get(&(client, key.clone())).cloned().flatten();
                    Op::Cas { expect, new: value }
                } else {
                    Op::Delete
                };
                let fate = if rng.chance(workload.fail) {
                    Fate::Fail
                } else if rng.chance(workload.indeterminate) {
                    Fate::Timeout
                } else {
                    Fate::Ok
                };
                let (lin, complete) = match fate {
                    Fate::Ok => {
                        let lin = now + rng.below(lat);
                        (Some(lin), lin + rng.below(lat))
                    }
                    Fate::Fail => (None, now + 1 + rng.below(lat)),
                    Fate::Timeout => {
                        let lin = rng.chance(0.5).then(|| now + rng.below(8 * lat));
                        (lin, now + 3 * lat)
                    }
                };
                let index = pending.len();
                pending.push(Pending {
                    op: Operation::new(client, key, op, now, complete, Outcome::Indeterminate)
                        .on(format!("n{}", client % 3)),
                    fate,
                    result: None,
                });
                if let Some(lin) = lin {
                    push(&mut heap, &mut events, lin, Event::Linearize(index));
                }
                push(&mut heap, &mut events, complete, Event::Complete(index));
                let next = complete + rng.below(lat / 2 + 1);
                push(&mut heap, &mut events, next, Event::Invoke(client));
            }
            Event::Linearize(index) => {
                let p = &mut pending[index];
                let register = registers.entry(p.op.key.clone()).or_default();
                p.result = Some(match &p.op.op {
                    Op::Read => Ret::Value(register.clone()),
                    Op::Write(v) => {
                        *register = Some(v.clone());
                        Ret::Ack
                    }
                    Op::Delete => {
                        *register = None;
                        Ret::Ack
                    }
                    Op::Cas { expect, new } => {
                        if register == expect {
                            *register = Some(new.clone());
                            Ret::Cas(true)
                        } else {
                            Ret::Cas(false)
                        }
                    }
                    _ => unreachable!(),
                });
            }
            Event::Complete(index) => {
                let p = &mut pending[index];
                let mut op = p.op.clone();
                let key = (op.process, op.key.clone());
                match p.fate {
                    Fate::Ok => {
                        let ret = p.result.clone().expect("linearized before completing");
                        match (&op.op, &ret) {
                            (Op::Read, Ret::Value(v)) => {
                                known.insert(key, v.clone());
                            }
                            (Op::Write(v), _) => {
                                known.insert(key, Some(v.clone()));
                            }
                            (Op::Delete, _) => {
                                known.insert(key, None);
                            }
                            (Op::Cas { new, .. }, Ret::Cas(true)) => {
                                known.insert(key, Some(new.clone()));
                            }
                            _ => {}
                        }
                        op.outcome = Outcome::Ok(ret);
                    }
                    Fate::Fail => {
                        op.outcome = Outcome::Fail;
                        op.error = Some("NoQuorum".into());
                    }
                    Fate::Timeout => {
                        op.error = Some("Timeout".into());
                    }
                }
                done.push((index, op));
            }
        }
    }
    // Record in invocation order, as a recorder would.
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, op)| op).collect()
}

/// The value an operation writes, if it writes one.
fn writes(op: &Op) -> Option<Option<&Value>> {
    match op {
        Op::Write(v) => Some(Some(v)),
        Op::Delete => Some(None),
        Op::Cas { new, .. } => Some(Some(new)),
        _ => None,
    }
}

fn applied_write(op: &Operation) -> bool {
    match &op.outcome {
        Outcome::Ok(Ret::Cas(applied)) => *applied,
        Outcome::Ok(_) => writes(&op.op).is_some(),
        _ => false,
    }
}

/// Mutation: a read returns a value that an acknowledged write had replaced before the read
/// began (and that nothing else writes). Invalid by construction. Reads are tried from a
/// position chosen by `pick`; the first that fits is mutated.
pub fn stale_read(history: &History, pick: u64) -> Option<History> {
    let ops = &history.ops;
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut writers: BTreeMap<(&str, &Value), usize> = BTreeMap::new();
    for (id, op) in ops.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(id);
        if let Some(Some(value)) = writes(&op.op) {
            *writers.entry((&op.key, value)).or_default() += 1;
        }
    }
    let reads: Vec<usize> = (0..ops.len())
        .filter(|&id| matches!(ops[id].outcome, Outcome::Ok(Ret::Value(_))))
        .collect();
    if reads.is_empty() {
        return None;
    }
    let start = (pick % reads.len() as u64) as usize;
    for &r in reads[start..].iter().chain(&reads[..start]) {
        let read = &ops[r];
        let Outcome::Ok(Ret::Value(seen)) = &read.outcome else {
            continue;
        };
        let same_key = &by_key[read.key.as_str()];
        for &w in same_key {
            let write = &ops[w];
            let Some(Some(value)) = writes(&write.op) else {
                continue;
            };
            if !applied_write(write)
                || Some(value) == seen.as_ref()
                || writers[&(read.key.as_str(), value)] != 1
                || write.complete >= read.invoke
            {
                continue;
            }
            let replaced = same_key.iter().any(|&o| {
                let o = &ops[o];
                applied_write(o)
                    && writes(&o.op) != Some(Some(value))
                    && o.invoke > write.complete
                    && o.complete < read.invoke
            });
            if replaced {
                let mut mutated = history.clone();
                mutated.ops[r].outcome = Outcome::Ok(Ret::Value(Some(value.clone())));
                return Some(mutated);
            }
        }
    }
    None
}

/// Mutation: an acknowledged write (or applied compare-and-set) whose value some read returned
/// is recorded as refused (or not applied). Invalid by construction: values are unique.
pub fn unapply_observed_write(history: &History, pick: u64) -> Option<History> {
    let ops = &history.ops;
    let candidates: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, w)| applied_write(w))
        .filter(|(_, w)| {
            let Some(Some(value)) = writes(&w.op) else {
                return false;
            };
            ops.iter().any(|r| {
                r.key == w.key && r.outcome == Outcome::Ok(Ret::Value(Some(value.clone())))
            })
        })
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let w = candidates[(pick % candidates.len() as u64) as usize];
    let mut mutated = history.clone();
    mutated.ops[w].outcome = match mutated.ops[w].op {
        Op::Cas { .. } => Outcome::Ok(Ret::Cas(false)),
        _ => Outcome::Fail,
    };
    Some(mutated)
}

/// Brute force: is this (tiny) history linearizable? Tries every order.
pub fn brute_force(history: &History) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    by_key.values().all(|ops| {
        // Keep what can matter: determinate ones must be placed, indeterminate writes may be.
        let ops: Vec<&Operation> = ops
            .iter()
            .copied()
            .filter(|op| match op.outcome {
                Outcome::Fail => false,
                Outcome::Indeterminate => op.op.is_mutation(),
                Outcome::Ok(_) => true,
            })
            .collect();
        let mut used = vec![false; ops.len()];
        search(&ops, &mut used, None)
    })
}

fn search(ops: &[&Operation], used: &mut [bool], state: Option<Value>) -> bool {
    let determinate = |op: &Operation| op.outcome != Outcome::Indeterminate;
    if ops
        .iter()
        .zip(used.iter())
        .all(|(op, &u)| u || !determinate(op))
    {
        return true;
    }
    for i in 0..ops.len() {
        if used[i] {
            continue;
        }
        let op = ops[i];
        // Every unplaced determinate op must not have returned before this one was invoked.
        let blocked = ops
            .iter()
            .zip(used.iter())
            .enumerate()
            .any(|(j, (o, &u))| j != i && !u && determinate(o) && o.complete < op.invoke);
        if blocked {
            continue;
        }
        let next = match (&op.op, &op.outcome) {
            (Op::Read, Outcome::Ok(Ret::Value(v))) => (*v == state).then(|| state.clone()),
            (Op::Write(v), _) => Some(Some(v.clone())),
            (Op::Delete, _) => Some(None),
            (Op::Cas { expect, new }, Outcome::Ok(Ret::Cas(true)) | Outcome::Indeterminate) => {
                (*expect == state).then(|| Some(new.clone()))
            }
            (Op::Cas { expect, .. }, Outcome::Ok(Ret::Cas(false))) => {
                (*expect != state).then(|| state.clone())
            }
            _ => None,
        };
        if let Some(next) = next {
            used[i] = true;
            let found = search(ops, used, next);
            used[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}
