//! The search for a linearization of one key's operations: Wing & Gong's depth-first search over
//! the list of call and return events, with Lowe's memoization of (linearized set, state) as
//! Porcupine does it, plus two things for indeterminate operations (which never return):
//!
//! - **Just in time.** An indeterminate operation has no return event, so nothing forces it.
//!   The walk linearizes it only when stuck at a return event, trying each one invoked before
//!   that return. Any linearization can be found this way: if an indeterminate operation `i`
//!   comes next in a valid order while the walk is stuck at the return of `r`, then `r` is
//!   linearized after `i`, so `i` was invoked before `r` returned.
//! - **Interchangeable copies, dominance.** Indeterminate operations with the same effect (after
//!   values no one observes are merged into one, see `mod.rs`) form a class; only the earliest
//!   unused member of a class is ever tried, so the search state keeps a count per class instead
//!   of a set. A state that used *more* of every class than a state already seen, with the same
//!   determinate operations linearized and the same register value, can do nothing the seen one
//!   could not (an indeterminate operation is optional), so it is pruned.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::Time;

/// No entry (end of the list).
const NIL: u32 = u32::MAX;

/// One operation on the abstract register. Values are ids: see `mod.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// Returned this value.
    Read(u32),
    /// Set this value (writes and deletes).
    Write(u32),
    /// Compare-and-set that applied: expected, new.
    CasOk(u32, u32),
    /// Compare-and-set that did not apply: the register did not hold this.
    CasFail(u32),
    /// Indeterminate compare-and-set: if linearized, it applied.
    CasMaybe(u32, u32),
}

impl Kind {
    /// The register after this operation, or `None` if it cannot happen in `state`.
    fn step(self, state: u32) -> Option<u32> {
        match self {
            Kind::Read(value) => (state == value).then_some(state),
            Kind::Write(value) => Some(value),
            Kind::CasOk(expect, new) | Kind::CasMaybe(expect, new) => {
                (state == expect).then_some(new)
            }
            Kind::CasFail(expect) => (state != expect).then_some(state),
        }
    }
}

/// An operation as the search sees it.
#[derive(Debug, Clone)]
pub(super) struct LOp {
    /// Ids in the history (several: retries sharing a request id).
    pub ids: Vec<usize>,
    /// Invocation.
    pub call: Time,
    /// Return; `None` for indeterminate operations.
    pub ret: Option<Time>,
    /// What it does to the register.
    pub kind: Kind,
}

/// How the search ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A linearization exists.
    Linearizable {
        /// Search states stored.
        states: usize,
    },
    /// None exists. The deepest point reached is `path` (indices into the ops, in linearization
    /// order), where `blocked` could not be linearized.
    NotLinearizable {
        /// Search states stored.
        states: usize,
        /// The longest consistent order found.
        path: Vec<u32>,
        /// The operation whose return was reached without a way to linearize it.
        blocked: u32,
    },
    /// The budget ran out.
    GaveUp {
        /// Search states stored.
        states: usize,
        /// Steps taken.
        steps: u64,
    },
}

/// A pass-through hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix(self.0 ^ u64::from(byte));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// SplitMix64's finalizer: a bijective 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stored search state: the set of linearized determinate operations as (one past the
/// highest, the ones below it not linearized), the register value, and how many members of each
/// indeterminate class were used (an id in [`UsedTable`]: few distinct ones, many states).
struct Seen {
    state: u32,
    top: u32,
    holes: Box<[u32]>,
    used: u32,
}

/// The distinct per-class use counts seen, interned.
#[derive(Default)]
struct UsedTable {
    vectors: Vec<Box<[u32]>>,
    by_hash: HashMap<u64, Vec<u32>, BuildHasherDefault<PreHashed>>,
}

impl UsedTable {
    fn intern(&mut self, used: &[u32], hash: u64) -> u32 {
        let ids = self.by_hash.entry(hash).or_default();
        if let Some(&id) = ids.iter().find(|&&id| *self.vectors[id as usize] == *used) {
            return id;
        }
        let id = self.vectors.len() as u32;
        self.vectors.push(used.into());
        ids.push(id);
        id
    }

    /// Whether every count of `a` is at most the matching count of `b`.
    fn at_most(&self, a: u32, b: u32) -> bool {
        a == b
            || self.vectors[a as usize]
                .iter()
                .zip(self.vectors[b as usize].iter())
                .all(|(a, b)| a <= b)
    }
}

enum Frame {
    /// A determinate operation linearized from the list walk at this call entry.
    Call { entry: u32, before: u32 },
    /// An indeterminate operation of `class` linearized while stuck at return entry `stuck`.
    Indeterminate {
        class: u32,
        op: u32,
        stuck: u32,
        before: u32,
    },
}

enum Cursor {
    /// Walking the list at this entry.
    Walk(u32),
    /// Stuck at this return entry; try indeterminate classes from this one on.
    Stuck { at: u32, class: u32 },
}

struct Best {
    depth: usize,
    path: Vec<u32>,
    blocked: u32,
}

struct Search<'a> {
    ops: &'a [LOp],
    // The event list: determinate operations only.
    entry_op: Vec<u32>,
    entry_is_call: Vec<bool>,
    entry_pos: Vec<u32>,
    return_entry: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    head: u32,
    // Linearized determinate operations.
    det_index: Vec<u32>,
    bits: Vec<u64>,
    bits_hash: u64,
    remaining: usize,
    det_total: usize,
    // Indeterminate classes.
    classes: Vec<Vec<u32>>,
    used: Vec<u32>,
    used_hash: u64,
    used_id: Option<u32>,
    used_table: UsedTable,
    call_pos: Vec<u32>,
    // The register.
    state: u32,
    // Memo.
    seen: HashMap<u64, Vec<Seen>, BuildHasherDefault<PreHashed>>,
    states: usize,
    scratch: Vec<u32>,
    wanted: Vec<u32>,
    stack: Vec<Frame>,
    best: Option<Best>,
}

/// Searches for a linearization of `ops` (sorted by call) starting from register value
/// `initial`.
pub(super) fn run(ops: &[LOp], initial: u32, max_states: usize, max_steps: u64) -> Outcome {
    let mut search = Search::new(ops, initial);
    search.run(max_states, max_steps)
}

impl<'a> Search<'a> {
    fn new(ops: &'a [LOp], initial: u32) -> Self {
        // Every event in time order, calls before returns at equal times (touching operations
        // count as concurrent: the safe reading of a coarse clock).
        let mut events: Vec<(Time, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            let index = index as u32;
            events.push((op.call, 0, index));
            if let Some(ret) = op.ret {
                events.push((ret, 1, index));
            }
        }
        events.sort_unstable();

        let mut call_pos = vec![0; ops.len()];
        let mut return_entry = vec![NIL; ops.len()];
        let mut call_entry = vec![NIL; ops.len()];
        let mut entry_op = Vec::new();
        let mut entry_is_call = Vec::new();
        let mut entry_pos = Vec::new();
        for (pos, &(_, kind, op)) in events.iter().enumerate() {
            let pos = pos as u32;
            if kind == 0 {
                call_pos[op as usize] = pos;
            }
            if ops[op as usize].ret.is_none() {
                continue;
            }
            let entry = entry_op.len() as u32;
            entry_op.push(op);
            entry_is_call.push(kind == 0);
            entry_pos.push(pos);
            if kind == 0 {
                call_entry[op as usize] = entry;
            } else {
                return_entry[op as usize] = entry;
            }
        }
        let entries = entry_op.len() as u32;
        let head = entries;
        let mut next = vec![NIL; entries as usize + 1];
        let mut prev = vec![NIL; entries as usize + 1];
        let mut last = head;
        for entry in 0..entries {
            next[last as usize] = entry;
            prev[entry as usize] = last;
            last = entry;
        }

        let mut det_index = vec![NIL; ops.len()];
        let mut det_total: usize = 0;
        let mut class_of: BTreeMap<Kind, usize> = BTreeMap::new();
        let mut classes: Vec<Vec<u32>> = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if op.ret.is_some() {
                det_index[index] = det_total as u32;
                det_total += 1;
            } else {
                let class = *class_of.entry(op.kind).or_insert_with(|| {
                    classes.push(Vec::new());
                    classes.len() - 1
                });
                classes[class].push(index as u32);
            }
        }
        let used = vec![0; classes.len()];
        Self {
            ops,
            entry_op,
            entry_is_call,
            entry_pos,
            return_entry,
            next,
            prev,
            head,
            det_index,
            bits: vec![0; det_total.div_ceil(64)],
            bits_hash: 0,
            remaining: det_total,
            det_total,
            classes,
            used,
            used_hash: 0,
            used_id: None,
            used_table: UsedTable::default(),
            call_pos,
            state: initial,
            seen: HashMap::default(),
            states: 0,
            scratch: Vec::new(),
            wanted: Vec::new(),
            stack: Vec::new(),
            best: None,
        }
    }

    fn run(&mut self, max_states: usize, max_steps: u64) -> Outcome {
        let mut cursor = Cursor::Walk(self.next[self.head as usize]);
        let mut steps: u64 = 0;
        loop {
            if self.remaining == 0 {
                return Outcome::Linearizable {
                    states: self.states,
                };
            }
            steps += 1;
            if steps > max_steps || self.states > max_states {
                return Outcome::GaveUp {
                    states: self.states,
                    steps,
                };
            }
            cursor = match cursor {
                Cursor::Walk(entry) if entry == NIL => match self.backtrack() {
                    Some(cursor) => cursor,
                    None => return self.failed(),
                },
                Cursor::Walk(entry) if self.entry_is_call[entry as usize] => {
                    if self.try_call(entry) {
                        Cursor::Walk(self.next[self.head as usize])
                    } else {
                        Cursor::Walk(self.next[entry as usize])
                    }
                }
                Cursor::Walk(entry) => Cursor::Stuck {
                    at: entry,
                    class: 0,
                },
                Cursor::Stuck { at, class } => {
                    if self.try_indeterminate(at, class) {
                        Cursor::Walk(self.next[self.head as usize])
                    } else {
                        self.record_stuck(at);
                        match self.backtrack() {
                            Some(cursor) => cursor,
                            None => return self.failed(),
                        }
                    }
                }
            };
        }
    }

    fn failed(&mut self) -> Outcome {
        match self.best.take() {
            Some(best) => Outcome::NotLinearizable {
                states: self.states,
                path: best.path,
                blocked: best.blocked,
            },
            // Unreachable in practice: failing means being stuck at least once.
            None => Outcome::GaveUp {
                states: self.states,
                steps: 0,
            },
        }
    }

    /// Tries to linearize the determinate operation whose call is `entry`.
    fn try_call(&mut self, entry: u32) -> bool {
        let op = self.entry_op[entry as usize];
        let Some(after) = self.ops[op as usize].kind.step(self.state) else {
            return false;
        };
        let det = self.det_index[op as usize];
        self.flip(det);
        if !self.remember(after) {
            self.flip(det);
            return false;
        }
        self.stack.push(Frame::Call {
            entry,
            before: self.state,
        });
        self.state = after;
        self.lift(entry);
        self.remaining -= 1;
        true
    }

    /// Tries indeterminate classes from `class` on, while stuck at return entry `at`.
    ///
    /// Only an operation that enables another is worth placing: in some valid order (if any)
    /// every indeterminate operation is followed by one that could not run without it — an
    /// indeterminate operation followed by one that could is moved after it, and one followed by
    /// an overwrite is dropped. That next operation is a call before `at` in the list or an
    /// indeterminate operation invoked before `at`.
    fn try_indeterminate(&mut self, at: u32, class: u32) -> bool {
        let limit = self.entry_pos[at as usize];
        // What the operations that could come next need and the register does not give.
        self.wanted.clear();
        let mut escape = false;
        let mut entry = self.next[self.head as usize];
        while entry != at && entry != NIL {
            match self.ops[self.entry_op[entry as usize] as usize].kind {
                Kind::Read(value) | Kind::CasOk(value, _) if value != self.state => {
                    self.wanted.push(value);
                }
                Kind::CasFail(expect) if expect == self.state => escape = true,
                _ => {}
            }
            entry = self.next[entry as usize];
        }
        for (members, &used) in self.classes.iter().zip(&self.used) {
            if let Some(&op) = members.get(used as usize)
                && self.call_pos[op as usize] <= limit
                && let Kind::CasMaybe(expect, _) = self.ops[op as usize].kind
                && expect != self.state
            {
                self.wanted.push(expect);
            }
        }
        if self.wanted.is_empty() && !escape {
            return false;
        }
        for class in class..self.classes.len() as u32 {
            let members = &self.classes[class as usize];
            let Some(&op) = members.get(self.used[class as usize] as usize) else {
                continue;
            };
            if self.call_pos[op as usize] > limit {
                continue;
            }
            let Some(after) = self.ops[op as usize].kind.step(self.state) else {
                continue;
            };
            if after == self.state || !(escape || self.wanted.contains(&after)) {
                continue;
            }
            self.use_class(class, true);
            if !self.remember(after) {
                self.use_class(class, false);
                continue;
            }
            self.stack.push(Frame::Indeterminate {
                class,
                op,
                stuck: at,
                before: self.state,
            });
            self.state = after;
            return true;
        }
        false
    }

    fn backtrack(&mut self) -> Option<Cursor> {
        match self.stack.pop()? {
            Frame::Call { entry, before } => {
                let op = self.entry_op[entry as usize];
                self.flip(self.det_index[op as usize]);
                self.state = before;
                self.unlift(entry);
                self.remaining += 1;
                Some(Cursor::Walk(self.next[entry as usize]))
            }
            Frame::Indeterminate {
                class,
                stuck,
                before,
                ..
            } => {
                self.use_class(class, false);
                self.state = before;
                Some(Cursor::Stuck {
                    at: stuck,
                    class: class + 1,
                })
            }
        }
    }

    fn record_stuck(&mut self, at: u32) {
        let depth = self.det_total - self.remaining;
        if self.best.as_ref().is_some_and(|best| best.depth >= depth) {
            return;
        }
        let path = self
            .stack
            .iter()
            .map(|frame| match *frame {
                Frame::Call { entry, .. } => self.entry_op[entry as usize],
                Frame::Indeterminate { op, .. } => op,
            })
            .collect();
        self.best = Some(Best {
            depth,
            path,
            blocked: self.entry_op[at as usize],
        });
    }

    /// Uses one more (or, undoing, one fewer) member of `class`.
    fn use_class(&mut self, class: u32, more: bool) {
        let count = &mut self.used[class as usize];
        let before = u64::from(class) << 32 | u64::from(*count);
        if more {
            *count += 1;
        } else {
            *count -= 1;
        }
        let after = u64::from(class) << 32 | u64::from(*count);
        self.used_hash ^= mix(before) ^ mix(after);
        self.used_id = None;
    }

    fn flip(&mut self, det: u32) {
        self.bits[(det / 64) as usize] ^= 1 << (det % 64);
        self.bits_hash ^= mix(u64::from(det));
    }

    /// Records the state (current bits and class use, register `state`); false if it, or a state
    /// that dominates it, was seen before.
    fn remember(&mut self, state: u32) -> bool {
        // The linearized set as (one past the highest member, non-members below it).
        let top = match self.bits.iter().rposition(|&word| word != 0) {
            Some(word) => word as u32 * 64 + 64 - self.bits[word].leading_zeros(),
            None => 0,
        };
        self.scratch.clear();
        for (index, &word) in self.bits.iter().enumerate() {
            let base = index as u32 * 64;
            if base >= top {
                break;
            }
            let mut missing = !word;
            if top - base < 64 {
                missing &= (1u64 << (top - base)) - 1;
            }
            while missing != 0 {
                let bit = missing.trailing_zeros();
                self.scratch.push(base + bit);
                missing &= missing - 1;
            }
        }
        let used = match self.used_id {
            Some(id) => id,
            None => {
                let id = self.used_table.intern(&self.used, self.used_hash);
                self.used_id = Some(id);
                id
            }
        };
        let hash = self.bits_hash ^ mix(u64::from(state) ^ 0x5eed);
        let bucket = self.seen.entry(hash).or_default();
        let scratch = &self.scratch;
        let table = &self.used_table;
        let same = |seen: &Seen| seen.state == state && seen.top == top && *seen.holes == **scratch;
        if bucket
            .iter()
            .any(|seen| same(seen) && table.at_most(seen.used, used))
        {
            return false;
        }
        // Entries the new one dominates are redundant now.
        bucket.retain(|seen| !(same(seen) && table.at_most(used, seen.used)));
        bucket.push(Seen {
            state,
            top,
            holes: scratch.as_slice().into(),
            used,
        });
        self.states += 1;
        true
    }

    fn lift(&mut self, entry: u32) {
        let ret = self.return_entry[self.entry_op[entry as usize] as usize];
        self.unlink(entry);
        self.unlink(ret);
    }

    fn unlink(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    fn unlift(&mut self, entry: u32) {
        let ret = self.return_entry[self.entry_op[entry as usize] as usize];
        self.relink(ret);
        self.relink(entry);
    }

    fn relink(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = entry;
        if next != NIL {
            self.prev[next as usize] = entry;
        }
    }
}
