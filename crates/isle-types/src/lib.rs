//! Isle's shared vocabulary: node ids, cluster members, monotonic time.
//!
//! Everything here is plain data. No IO, no clocks, no randomness: every other crate may depend on
//! this one, and it depends on nothing of Isle's.

mod member;
mod outcome;
mod time;

pub use member::Identity;
pub use member::{Member, MemberError, NodeId, ZoneId};
pub use outcome::ErrorKind;
pub use time::Millis;
