//! Isle's simulation engine (issue 5): the whole cluster — real node code
//! (`isle_node::start_with`, what `isle node` runs), in-memory redb stores, turmoil's virtual
//! network and clock — in one process, driven by a seed.
//!
//! - [`nemesis`]: the fault vocabulary ([`Nemesis`], [`Schedule`]), shared with the process engine.
//! - [`net`], [`clock`]: the seams the nodes run on (turmoil TCP, a skewable virtual clock).

pub mod clock;
pub mod nemesis;
pub mod net;

pub use nemesis::{Action, Effects, Nemesis, Schedule, Sides, Step};
