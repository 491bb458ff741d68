//! Isle's version vectors and CRDTs: the merge rules of the AP keyspace (issue 4).
//!
//! Everything here is pure: no I/O, no clock reads, no randomness. Callers pass in the node that
//! coordinates a write and, for [`LwwRegister`], the hybrid timestamp; every type merges by
//! [`Crdt::merge`] and converges whatever the order in which replicas exchange states.
//!
//! - [`causal`]: dots, version vectors ([`Context`]) and the [`DotKernel`] the other types share.
//! - [`dvv`]: [`DvvSet`], dotted version vectors with siblings (the `siblings` merge rule).
//! - [`counter`]: [`PnCounter`], the increment/decrement counter.
//! - [`set`]: [`OrSet`], the add-wins observed-remove set.
//! - [`register`]: [`LwwRegister`] on [`Stamp`]s and the multi-value [`MvRegister`].
//! - [`map`]: [`OrMap`], an add-wins map of CRDT values (the shopping cart), whose removes
//!   reset values through [`ObservedReset`].
//!
//! All merges are *state* merges: a replica sends its whole state for a key. Delta merges would
//! need contexts with gaps (dot clouds), which [`Context`] does not represent.

pub mod causal;
pub mod counter;
pub mod dvv;
pub mod map;
pub mod register;
pub mod set;

pub use causal::{Context, Dot, DotKernel};
pub use counter::PnCounter;
pub use dvv::DvvSet;
pub use isle_types::NodeId;
pub use map::{ObservedReset, OrMap};
pub use register::{LwwRegister, MvRegister, Stamp};
pub use set::OrSet;

/// A state-based CRDT: a value whose replicas converge by merging states.
///
/// `merge` must be the join (least upper bound) of a join-semilattice, so for all states
/// `a`, `b`, `c` (writing `a ⊔ b` for `a` merged with `b`):
///
/// - **commutative**: `a ⊔ b == b ⊔ a`, so the order replicas meet in does not matter;
/// - **associative**: `(a ⊔ b) ⊔ c == a ⊔ (b ⊔ c)`, so merges can be batched or relayed;
/// - **idempotent**: `a ⊔ a == a`, so re-sending a state (a retry, anti-entropy repeating
///   itself) changes nothing.
///
/// Local operations must only move a state up the lattice (`a ⊔ op(a) == op(a)`), which is
/// what makes "merge every replica with every other in any order" reach one state. The laws
/// are checked by property tests for every type in this crate.
pub trait Crdt {
    /// Merge `other` into `self`: afterwards `self` is the join of both states.
    fn merge(&mut self, other: &Self);
}

#[cfg(test)]
pub(crate) mod laws {
    //! The semilattice laws every [`Crdt`](crate::Crdt) is tested against.

    use std::fmt::Debug;

    use crate::Crdt;

    fn join<T: Crdt + Clone>(a: &T, b: &T) -> T {
        let mut joined = a.clone();
        joined.merge(b);
        joined
    }

    /// Assert commutativity, associativity and idempotence on three replica states.
    pub(crate) fn check_laws<T: Crdt + Clone + PartialEq + Debug>(a: &T, b: &T, c: &T) {
        assert_eq!(join(a, b), join(b, a), "merge is not commutative");
        assert_eq!(
            join(&join(a, b), c),
            join(a, &join(b, c)),
            "merge is not associative"
        );
        assert_eq!(&join(a, a), a, "merge is not idempotent");
        let ab = join(a, b);
        assert_eq!(
            join(&ab, b),
            ab,
            "merging a state already merged changed it"
        );
    }
}
