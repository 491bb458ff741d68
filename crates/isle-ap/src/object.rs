//! What a replica stores for one key, the operations clients apply to it, and how two replicas'
//! copies merge.
//!
//! Plain values follow their bucket's [`Rule`]: `siblings` keeps concurrent writes side by side
//! under dotted version vectors; `lww` keeps the greatest hybrid timestamp and **discards
//! concurrent writes**. Counters, sets and maps are CRDTs whatever the bucket's rule: the first
//! operation on a key fixes its type, and an operation of another type is refused
//! ([`ApplyError::WrongType`]). If a partition lets two sides give one key two different types,
//! the merge keeps the type that ranks higher (value < lww < counter < set < map) on every
//! replica alike, so replicas still converge; the lower-ranked copy is dropped.

use std::collections::BTreeMap;

use isle_crdt::{
    Context, Crdt, DvvSet, LwwRegister, MvRegister, ObservedReset, OrMap, OrSet, PnCounter, Stamp,
};
use isle_types::NodeId;
use serde::{Deserialize, Serialize};

/// Most idempotent increments one counter remembers (each keeps its request id for good).
pub const MAX_KEYED_INCREMENTS: usize = 10_000;

/// How a bucket merges concurrent writes of plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// Keep concurrent writes as siblings (dotted version vectors).
    Siblings,
    /// Last write wins by hybrid logical clock; concurrent writes are discarded.
    Lww,
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "siblings" => Ok(Rule::Siblings),
            "lww" => Ok(Rule::Lww),
            other => Err(format!("unknown merge rule {other:?}: use siblings or lww")),
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rule::Siblings => "siblings",
            Rule::Lww => "lww",
        })
    }
}

/// The causal context a plain write is made in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteContext {
    /// The client saw nothing: the write becomes a sibling of whatever is there.
    Blind,
    /// The client read this context: the write replaces exactly what it covers.
    Observed(Context),
    /// Replace what the coordinating replica holds (Redis `SET`: no context on the wire).
    Local,
}

/// An operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write a plain value.
    Put {
        /// The value.
        value: Vec<u8>,
        /// What the writer had seen.
        context: WriteContext,
    },
    /// Delete: a tombstone for plain values, an observed reset for CRDTs.
    Delete {
        /// What the deleter had seen.
        context: WriteContext,
    },
    /// Add `by` to a counter.
    Incr {
        /// The signed amount.
        by: i64,
        /// Set: a retry with the same id, through any node, is applied once.
        request_id: Option<String>,
    },
    /// Add members to a set (add wins over a concurrent remove).
    SetAdd {
        /// The members.
        members: Vec<Vec<u8>>,
    },
    /// Remove members from a set, as observed here.
    SetRemove {
        /// The members.
        members: Vec<Vec<u8>>,
    },
    /// Update a map (the shopping cart): set text fields, add to counter fields, remove fields.
    MapUpdate {
        /// Fields set to a text value.
        set: Vec<(Vec<u8>, Vec<u8>)>,
        /// Fields incremented.
        incr: Vec<(Vec<u8>, i64)>,
        /// Fields removed, as observed here.
        remove: Vec<Vec<u8>>,
        /// Makes the increments idempotent, as for [`Op::Incr`].
        request_id: Option<String>,
    },
}

impl Op {
    /// The operation's name, for errors and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Incr { .. } => "incr",
            Op::SetAdd { .. } => "sadd",
            Op::SetRemove { .. } => "srem",
            Op::MapUpdate { .. } => "map-update",
        }
    }
}

/// Why an operation cannot apply to a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// The key holds another type.
    #[error("WRONGTYPE key holds a {held}, not a {wanted} ({op} refused)")]
    WrongType {
        /// What the key holds.
        held: String,
        /// What the operation needs.
        wanted: String,
        /// The operation.
        op: String,
    },
    /// A map field holds text that is not an integer.
    #[error("hash value is not an integer")]
    NotAnInteger,
    /// The increment would take the value past the 64-bit range (Redis refuses it too).
    #[error("increment or decrement would overflow")]
    Overflow,
    /// Too many idempotent increments on one counter.
    #[error(
        "counter already remembers {MAX_KEYED_INCREMENTS} request ids; increment without a request id"
    )]
    TooManyRequestIds,
}

/// A counter: a PN-counter plus increments keyed by request id, applied once each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pn: PnCounter,
    keyed: BTreeMap<String, i64>,
}

impl Counter {
    /// The counter's value.
    pub fn value(&self) -> i64 {
        self.keyed
            .values()
            .fold(self.pn.value(), |sum, &delta| sum.saturating_add(delta))
    }

    /// Add `by` on `actor`; with a request id, only if that id was not applied before.
    /// Returns whether anything changed.
    pub fn add(
        &mut self,
        actor: NodeId,
        by: i64,
        request_id: Option<&str>,
    ) -> Result<bool, ApplyError> {
        let applied_before = request_id.is_some_and(|id| self.keyed.contains_key(id));
        // Refused, not clamped: an acknowledged increment must be in the value.
        if !applied_before && self.value().checked_add(by).is_none() {
            return Err(ApplyError::Overflow);
        }
        match request_id {
            None => {
                self.pn.add(actor, by);
                Ok(true)
            }
            Some(_) if applied_before => Ok(false),
            Some(_) if self.keyed.len() >= MAX_KEYED_INCREMENTS => {
                Err(ApplyError::TooManyRequestIds)
            }
            Some(id) => {
                self.keyed.insert(id.to_string(), by);
                Ok(true)
            }
        }
    }

    /// Whether anything was ever added.
    pub fn touched(&self) -> bool {
        self.pn != PnCounter::default() || !self.keyed.is_empty()
    }
}

impl Crdt for Counter {
    fn merge(&mut self, other: &Self) {
        self.pn.merge(&other.pn);
        for (id, &delta) in &other.keyed {
            let ours = self.keyed.entry(id.clone()).or_insert(delta);
            *ours = (*ours).max(delta);
        }
    }
}

impl ObservedReset for Counter {
    fn reset(&mut self, node: NodeId) {
        self.pn.add(node, self.value().saturating_neg());
    }
}

/// A map field: text (last writer wins among concurrent sets) or a counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    text: MvRegister<(Stamp, Vec<u8>)>,
    count: Counter,
}

/// What a map field reads as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldValue {
    /// Text set by `HSET`.
    Text(Vec<u8>),
    /// A number built by `HINCRBY`.
    Int(i64),
}

impl FieldValue {
    /// The value as Redis returns it.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            FieldValue::Text(text) => text.clone(),
            FieldValue::Int(n) => n.to_string().into_bytes(),
        }
    }
}

impl Field {
    /// The field's value: the latest text if any is set, else the counter.
    pub fn value(&self) -> Option<FieldValue> {
        let latest = self
            .text
            .values()
            .into_iter()
            .max_by_key(|(stamp, _)| *stamp);
        match latest {
            Some((_, text)) => Some(FieldValue::Text(text.clone())),
            None if self.count.touched() => Some(FieldValue::Int(self.count.value())),
            None => None,
        }
    }

    fn set(&mut self, actor: NodeId, stamp: Stamp, text: Vec<u8>) {
        self.count.reset(actor);
        self.text.write(actor, (stamp, text));
    }

    fn incr(&mut self, actor: NodeId, by: i64, request_id: Option<&str>) -> Result<(), ApplyError> {
        let base = match self.value() {
            Some(FieldValue::Text(text)) => Some(
                std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or(ApplyError::NotAnInteger)?,
            ),
            _ => None,
        };
        // Checked before anything changes, so a refused increment leaves the field as it was.
        if base
            .unwrap_or_else(|| self.count.value())
            .checked_add(by)
            .is_none()
        {
            return Err(ApplyError::Overflow);
        }
        if let Some(base) = base {
            self.text.clear();
            self.count.reset(actor);
            self.count.add(actor, base, None)?;
        }
        self.count.add(actor, by, request_id)?;
        Ok(())
    }
}

impl Crdt for Field {
    fn merge(&mut self, other: &Self) {
        self.text.merge(&other.text);
        self.count.merge(&other.count);
    }
}

impl ObservedReset for Field {
    fn reset(&mut self, node: NodeId) {
        self.text.clear();
        self.count.reset(node);
    }
}

/// A replica's copy of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Object {
    /// A plain value under the `siblings` rule.
    Siblings(DvvSet<Vec<u8>>),
    /// A plain value under the `lww` rule (`None`: deleted).
    Lww(LwwRegister<Option<Vec<u8>>>),
    /// A PN-counter.
    Counter(Counter),
    /// An add-wins set.
    Set(OrSet<Vec<u8>>),
    /// An OR-map of fields.
    Map(OrMap<Vec<u8>, Field>),
}

/// What a client reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Never written, or deleted.
    Absent,
    /// Plain value(s): one, or several siblings.
    Values(Vec<Vec<u8>>),
    /// A counter.
    Counter(i64),
    /// A set's members, sorted.
    Set(Vec<Vec<u8>>),
    /// A map's fields, sorted by field.
    Map(Vec<(Vec<u8>, FieldValue)>),
}

impl Object {
    fn rank(&self) -> u8 {
        match self {
            Object::Siblings(_) => 0,
            Object::Lww(_) => 1,
            Object::Counter(_) => 2,
            Object::Set(_) => 3,
            Object::Map(_) => 4,
        }
    }

    /// The type's name, as errors show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Siblings(_) | Object::Lww(_) => "value",
            Object::Counter(_) => "counter",
            Object::Set(_) => "set",
            Object::Map(_) => "map",
        }
    }

    /// A new object for `op` under `rule`.
    pub fn empty_for(op: &Op, rule: Rule) -> Object {
        match op {
            Op::Put { .. } | Op::Delete { .. } => match rule {
                Rule::Siblings => Object::Siblings(DvvSet::new()),
                Rule::Lww => Object::Lww(LwwRegister::new()),
            },
            Op::Incr { .. } => Object::Counter(Counter::default()),
            Op::SetAdd { .. } | Op::SetRemove { .. } => Object::Set(OrSet::new()),
            Op::MapUpdate { .. } => Object::Map(OrMap::new()),
        }
    }

    /// Merges another replica's copy into this one (the join; see the module doc for types).
    pub fn merge(&mut self, other: &Object) {
        match (&mut *self, other) {
            (Object::Siblings(a), Object::Siblings(b)) => a.merge(b),
            (Object::Lww(a), Object::Lww(b)) => a.merge(b),
            (Object::Counter(a), Object::Counter(b)) => a.merge(b),
            (Object::Set(a), Object::Set(b)) => a.merge(b),
            (Object::Map(a), Object::Map(b)) => a.merge(b),
            (ours, theirs) => {
                if theirs.rank() > ours.rank() {
                    *ours = theirs.clone();
                }
            }
        }
    }

    /// Applies `op` as coordinated by `actor` at hybrid time `stamp`; returns whether the
    /// object changed (an idempotent retry changes nothing, nor does adding members a set
    /// already holds).
    pub fn apply(&mut self, op: &Op, actor: NodeId, stamp: Stamp) -> Result<bool, ApplyError> {
        // A deleted plain value takes any CRDT type (Redis: `SET k v; DEL k; SADD k m` works).
        // Every CRDT type ranks above plain values, so the switch wins on every replica and
        // the old value cannot come back.
        if self.is_tombstone() && !matches!(op, Op::Put { .. } | Op::Delete { .. }) {
            *self = Object::empty_for(op, Rule::Siblings);
        }
        let wrong = |held: &Object| ApplyError::WrongType {
            held: held.kind().to_string(),
            wanted: match op {
                Op::Put { .. } => "value",
                Op::Delete { .. } => "any",
                Op::Incr { .. } => "counter",
                Op::SetAdd { .. } | Op::SetRemove { .. } => "set",
                Op::MapUpdate { .. } => "map",
            }
            .to_string(),
            op: op.name().to_string(),
        };
        match (&mut *self, op) {
            (Object::Siblings(dvv), Op::Put { value, context }) => {
                let context = resolve(context, dvv.context());
                dvv.update(actor, &context, value.clone());
            }
            (Object::Siblings(dvv), Op::Delete { context }) => {
                let context = resolve(context, dvv.context());
                dvv.delete(actor, &context);
            }
            (Object::Lww(register), Op::Put { value, .. }) => {
                return Ok(register.set(stamp, Some(value.clone())));
            }
            (Object::Lww(register), Op::Delete { .. }) => {
                return Ok(register.set(stamp, None));
            }
            (Object::Counter(counter), Op::Incr { by, request_id }) => {
                return counter.add(actor, *by, request_id.as_deref());
            }
            (Object::Counter(counter), Op::Delete { .. }) => counter.reset(actor),
            (Object::Set(set), Op::SetAdd { members }) => {
                // Unchanged when every member is already in: callers count new members so
                // (RESP `SADD` answers from this instead of reading the set first).
                let mut added = false;
                for member in members {
                    if !set.contains(member) {
                        set.add(actor, member.clone());
                        added = true;
                    }
                }
                return Ok(added);
            }
            (Object::Set(set), Op::SetRemove { members }) => {
                for member in members {
                    set.remove(member);
                }
            }
            (Object::Set(set), Op::Delete { .. }) => set.reset(actor),
            (
                Object::Map(map),
                Op::MapUpdate {
                    set,
                    incr,
                    remove,
                    request_id,
                },
            ) => {
                for field in remove {
                    map.remove(actor, field);
                }
                for (field, text) in set {
                    map.update(actor, field.clone(), |f| f.set(actor, stamp, text.clone()));
                }
                for (field, by) in incr {
                    let current = map.get(field).cloned().unwrap_or_default();
                    let mut next = current;
                    next.incr(actor, *by, request_id.as_deref())?;
                    map.update(actor, field.clone(), |f| *f = next);
                }
            }
            (Object::Map(map), Op::Delete { .. }) => {
                let fields: Vec<Vec<u8>> = map.entries().map(|(k, _)| k.clone()).collect();
                for field in fields {
                    map.remove(actor, &field);
                }
            }
            (held, _) => return Err(wrong(held)),
        }
        Ok(true)
    }

    /// Whether `op` can apply to this object's type.
    pub fn accepts(&self, op: &Op) -> bool {
        let mut probe = self.clone();
        let stamp = Stamp {
            physical_ms: 0,
            logical: 0,
            node: NodeId(0),
        };
        !matches!(
            probe.apply(op, NodeId(0), stamp),
            Err(ApplyError::WrongType { .. })
        )
    }

    /// What a client reads.
    pub fn value(&self) -> Value {
        match self {
            Object::Siblings(dvv) => {
                let values: Vec<Vec<u8>> = dvv.values().into_iter().cloned().collect();
                if values.is_empty() {
                    Value::Absent
                } else {
                    Value::Values(values)
                }
            }
            Object::Lww(register) => match register.get() {
                Some(Some(value)) => Value::Values(vec![value.clone()]),
                _ => Value::Absent,
            },
            Object::Counter(counter) if counter.touched() => Value::Counter(counter.value()),
            Object::Counter(_) => Value::Absent,
            Object::Set(set) if set.is_empty() => Value::Absent,
            Object::Set(set) => Value::Set(set.elements().into_iter().collect()),
            Object::Map(map) => {
                let fields: Vec<(Vec<u8>, FieldValue)> = map
                    .entries()
                    .filter_map(|(k, f)| f.value().map(|v| (k.clone(), v)))
                    .collect();
                if fields.is_empty() {
                    Value::Absent
                } else {
                    Value::Map(fields)
                }
            }
        }
    }

    /// Whether this is a deleted plain value: only a tombstone is left, which replicas may
    /// drop once all of them hold it (counters, sets and maps keep their causal state).
    pub fn is_tombstone(&self) -> bool {
        match self {
            Object::Siblings(dvv) => dvv.is_deleted(),
            Object::Lww(register) => matches!(register.get(), Some(None)),
            _ => false,
        }
    }

    /// The causal context a client gets with a read (empty for non-`siblings` types).
    pub fn context(&self) -> Context {
        match self {
            Object::Siblings(dvv) => dvv.context(),
            _ => Context::new(),
        }
    }

    /// The hybrid timestamp of an `lww` value.
    pub fn stamp(&self) -> Option<Stamp> {
        match self {
            Object::Lww(register) => register.stamp(),
            _ => None,
        }
    }

    /// A 128-bit digest of the whole state: equal digests mean equal replicas.
    pub fn digest(&self) -> u128 {
        Self::digest_of_encoding(&self.encode())
    }

    /// The digest of an object from its stored encoding, without decoding it.
    pub fn digest_of_encoding(bytes: &[u8]) -> u128 {
        xxhash_rust::xxh3::xxh3_128(bytes)
    }

    /// The stored encoding (postcard; maps are ordered, so equal states encode equally).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a stored or received object.
    pub fn decode(bytes: &[u8]) -> Result<Object, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

fn resolve(context: &WriteContext, local: Context) -> Context {
    match context {
        WriteContext::Blind => Context::new(),
        WriteContext::Observed(context) => context.clone(),
        WriteContext::Local => local,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stamp(ms: u64, node: u64) -> Stamp {
        Stamp {
            physical_ms: ms,
            logical: 0,
            node: NodeId(node),
        }
    }

    fn apply(object: &mut Object, op: Op, actor: u64, ms: u64) {
        object
            .apply(&op, NodeId(actor), stamp(ms, actor))
            .expect("applies");
    }

    fn put(value: &str, context: WriteContext) -> Op {
        Op::Put {
            value: value.as_bytes().to_vec(),
            context,
        }
    }

    fn join(a: &Object, b: &Object) -> Object {
        let mut joined = a.clone();
        joined.merge(b);
        joined
    }

    #[test]
    fn concurrent_puts_become_siblings_and_a_put_with_the_merged_context_resolves_them() {
        let mut a = Object::empty_for(&put("", WriteContext::Blind), Rule::Siblings);
        let mut b = a.clone();
        apply(&mut a, put("left", WriteContext::Local), 1, 1);
        apply(&mut b, put("right", WriteContext::Local), 2, 1);
        let merged = join(&a, &b);
        assert_eq!(
            merged.value(),
            Value::Values(vec![b"left".to_vec(), b"right".to_vec()])
        );
        let mut resolved = merged.clone();
        apply(
            &mut resolved,
            put("both", WriteContext::Observed(merged.context())),
            1,
            2,
        );
        assert_eq!(resolved.value(), Value::Values(vec![b"both".to_vec()]));
        assert_eq!(join(&resolved, &b).value(), resolved.value());
    }

    #[test]
    fn lww_keeps_the_greater_stamp() {
        let mut a = Object::empty_for(&put("", WriteContext::Blind), Rule::Lww);
        let mut b = a.clone();
        apply(&mut a, put("early", WriteContext::Blind), 1, 10);
        apply(&mut b, put("late", WriteContext::Blind), 2, 20);
        assert_eq!(join(&a, &b).value(), Value::Values(vec![b"late".to_vec()]));
        assert_eq!(join(&b, &a).value(), Value::Values(vec![b"late".to_vec()]));
    }

    #[test]
    fn a_retried_idempotent_increment_counts_once_even_through_another_node() {
        let incr = Op::Incr {
            by: 5,
            request_id: Some("req-1".into()),
        };
        let mut a = Object::empty_for(&incr, Rule::Siblings);
        let mut b = a.clone();
        apply(&mut a, incr.clone(), 1, 1);
        apply(&mut a, incr.clone(), 1, 2);
        apply(&mut b, incr, 2, 3);
        assert_eq!(join(&a, &b).value(), Value::Counter(5));
    }

    #[test]
    fn cart_keeps_concurrent_adds_and_drops_observed_removes() {
        let update = |incr: &[(&str, i64)], remove: &[&str]| Op::MapUpdate {
            set: vec![],
            incr: incr
                .iter()
                .map(|(f, n)| (f.as_bytes().to_vec(), *n))
                .collect(),
            remove: remove.iter().map(|f| f.as_bytes().to_vec()).collect(),
            request_id: None,
        };
        let mut base = Object::empty_for(&update(&[], &[]), Rule::Siblings);
        apply(&mut base, update(&[("apple", 1), ("pear", 1)], &[]), 1, 1);
        let mut left = base.clone();
        let mut right = base.clone();
        apply(&mut left, update(&[("milk", 2)], &["pear"]), 1, 2);
        apply(&mut right, update(&[("apple", 2), ("bread", 1)], &[]), 4, 2);
        let merged = join(&left, &right);
        let Value::Map(fields) = merged.value() else {
            panic!("a map")
        };
        let fields: Vec<(String, FieldValue)> = fields
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).expect("utf8"), v))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("apple".into(), FieldValue::Int(3)),
                ("bread".into(), FieldValue::Int(1)),
                ("milk".into(), FieldValue::Int(2)),
            ]
        );
    }

    #[test]
    fn an_increment_past_the_64_bit_range_is_refused_and_changes_nothing() {
        let incr = |by: i64, id: Option<&str>| Op::Incr {
            by,
            request_id: id.map(String::from),
        };
        let mut counter = Object::empty_for(&incr(0, None), Rule::Siblings);
        apply(&mut counter, incr(i64::MAX, None), 1, 1);
        let before = counter.clone();
        for op in [incr(1, None), incr(1, Some("r"))] {
            assert_eq!(
                counter.apply(&op, NodeId(1), stamp(3, 1)),
                Err(ApplyError::Overflow)
            );
            assert_eq!(counter, before);
        }
        apply(&mut counter, incr(i64::MIN, None), 1, 2);
        assert_eq!(counter.value(), Value::Counter(-1));
        assert_eq!(
            counter.apply(&incr(i64::MIN, None), NodeId(1), stamp(3, 1)),
            Err(ApplyError::Overflow)
        );

        let field = |by: i64| Op::MapUpdate {
            set: vec![],
            incr: vec![(b"f".to_vec(), by)],
            remove: vec![],
            request_id: None,
        };
        let mut map = Object::empty_for(&field(0), Rule::Siblings);
        apply(&mut map, field(i64::MAX), 1, 1);
        let before = map.clone();
        assert_eq!(
            map.apply(&field(1), NodeId(1), stamp(3, 1)),
            Err(ApplyError::Overflow)
        );
        assert_eq!(map.value(), before.value());
    }

    #[test]
    fn hincrby_on_a_numeric_text_field_continues_from_it() {
        let set = Op::MapUpdate {
            set: vec![(b"f".to_vec(), b"5".to_vec())],
            incr: vec![],
            remove: vec![],
            request_id: None,
        };
        let incr = Op::MapUpdate {
            set: vec![],
            incr: vec![(b"f".to_vec(), 2)],
            remove: vec![],
            request_id: None,
        };
        let mut map = Object::empty_for(&set, Rule::Siblings);
        apply(&mut map, set, 1, 1);
        apply(&mut map, incr, 1, 2);
        assert_eq!(
            map.value(),
            Value::Map(vec![(b"f".to_vec(), FieldValue::Int(7))])
        );
    }

    #[test]
    fn a_deleted_value_stays_deleted_after_merging_with_the_copy_it_deleted() {
        let mut a = Object::empty_for(&put("", WriteContext::Blind), Rule::Siblings);
        apply(&mut a, put("v", WriteContext::Local), 1, 1);
        let stale = a.clone();
        apply(
            &mut a,
            Op::Delete {
                context: WriteContext::Local,
            },
            1,
            2,
        );
        assert_eq!(join(&a, &stale).value(), Value::Absent);
        assert_eq!(join(&stale, &a).value(), Value::Absent);
    }

    #[test]
    fn wrong_type_is_refused_and_changes_nothing() {
        let mut counter = Object::empty_for(
            &Op::Incr {
                by: 1,
                request_id: None,
            },
            Rule::Siblings,
        );
        apply(
            &mut counter,
            Op::Incr {
                by: 1,
                request_id: None,
            },
            1,
            1,
        );
        let before = counter.clone();
        let err = counter
            .apply(
                &Op::SetAdd {
                    members: vec![b"x".to_vec()],
                },
                NodeId(1),
                stamp(2, 1),
            )
            .expect_err("wrong type");
        assert!(err.to_string().starts_with("WRONGTYPE"), "{err}");
        assert_eq!(counter, before);
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(|v| put(&v.to_string(), WriteContext::Local)),
            (0u8..3).prop_map(|v| put(&v.to_string(), WriteContext::Blind)),
            Just(Op::Delete {
                context: WriteContext::Local
            }),
            (-3i64..4, proptest::option::of(0u8..3)).prop_map(|(by, id)| Op::Incr {
                by,
                request_id: id.map(|i| i.to_string())
            }),
            (0u8..3).prop_map(|m| Op::SetAdd {
                members: vec![vec![m]]
            }),
            (0u8..3).prop_map(|m| Op::SetRemove {
                members: vec![vec![m]]
            }),
            (0u8..3, -2i64..3, proptest::option::of(0u8..3)).prop_map(|(f, by, rm)| {
                Op::MapUpdate {
                    set: vec![],
                    incr: vec![(vec![f], by)],
                    remove: rm.map(|r| vec![vec![r]]).unwrap_or_default(),
                    request_id: None,
                }
            }),
        ]
    }

    proptest! {
        /// Replicas applying random operations (of possibly different types) and merging in
        /// any order obey the semilattice laws and reach one state.
        #[test]
        fn merges_are_a_semilattice(
            rule in prop_oneof![Just(Rule::Siblings), Just(Rule::Lww)],
            ops in proptest::collection::vec((0usize..3, any_op()), 1..30),
        ) {
            let first = &ops[0].1;
            let mut replicas = vec![Object::empty_for(first, rule); 3];
            for (step, (at, op)) in ops.iter().enumerate() {
                let _ = replicas[*at].apply(op, NodeId(*at as u64 + 1), stamp(step as u64, *at as u64 + 1));
                if step % 4 == 3 {
                    let from = replicas[(at + 1) % 3].clone();
                    replicas[*at].merge(&from);
                }
            }
            let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
            prop_assert_eq!(join(a, b), join(b, a));
            prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
            prop_assert_eq!(join(a, a), a.clone());
            prop_assert_eq!(join(&join(a, b), c).digest(), join(&join(c, a), b).digest());
        }
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    #[test]
    fn a_deleted_value_becomes_a_set_everywhere_and_stays_deleted_as_a_value() {
        let stamp = Stamp {
            physical_ms: 1,
            logical: 0,
            node: NodeId(1),
        };
        let mut value = Object::empty_for(
            &Op::Delete {
                context: WriteContext::Local,
            },
            Rule::Siblings,
        );
        let put = Op::Put {
            value: b"v".to_vec(),
            context: WriteContext::Local,
        };
        value.apply(&put, NodeId(1), stamp).expect("put");
        let stale = value.clone();
        value
            .apply(
                &Op::Delete {
                    context: WriteContext::Local,
                },
                NodeId(1),
                stamp,
            )
            .expect("del");
        let sadd = Op::SetAdd {
            members: vec![b"m".to_vec()],
        };
        value
            .apply(&sadd, NodeId(1), stamp)
            .expect("a deleted key takes a new type");
        let mut merged = stale.clone();
        merged.merge(&value);
        assert_eq!(merged.value(), Value::Set(vec![b"m".to_vec()]));
        let mut other = value.clone();
        other.merge(&stale);
        assert_eq!(other, merged);
    }

    #[test]
    fn a_fallback_write_on_an_empty_copy_stays_a_sibling_of_a_concurrent_primary_write() {
        let stamp = Stamp {
            physical_ms: 1,
            logical: 0,
            node: NodeId(1),
        };
        let put = |v: &str, c: WriteContext| Op::Put {
            value: v.as_bytes().to_vec(),
            context: c,
        };
        let mut base = Object::empty_for(&put("", WriteContext::Blind), Rule::Siblings);
        base.apply(&put("v0", WriteContext::Blind), NodeId(2), stamp)
            .expect("v0");
        let ctx0 = base.context();
        let mut left = base.clone();
        left.apply(
            &put("left", WriteContext::Observed(ctx0.clone())),
            NodeId(2),
            stamp,
        )
        .expect("left");
        let mut right = Object::empty_for(&put("", WriteContext::Blind), Rule::Siblings);
        let fallback = NodeId((1 << 63) | (1 << 32) | 4);
        right
            .apply(&put("right", WriteContext::Observed(ctx0)), fallback, stamp)
            .expect("right");
        let mut merged = left.clone();
        merged.merge(&right);
        assert_eq!(
            merged.value(),
            Value::Values(vec![b"left".to_vec(), b"right".to_vec()]),
            "{merged:?}"
        );
    }
}
