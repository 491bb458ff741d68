//! The seams between Isle's logic and the outside world.
//!
//! Node code reaches time, randomness, sockets and disk only through the traits here. The real
//! implementations (tokio's clock, an OS-seeded RNG, tokio TCP in `isle-net`, redb in
//! `isle-storage`) are what `isle node` runs; the chaos lab swaps in a virtual clock, a seeded RNG, a
//! simulated network and an in-memory store without touching the node code.
//!
//! Architecture invariant: nothing outside an implementation of these traits reads `SystemTime`,
//! `Instant`, sleeps, or draws from a global RNG.

mod clock;
mod network;
mod random;
mod store;

pub use clock::{Clock, ClockSkew, SystemClock};
pub use network::{Listener, Network};
pub use random::{Random, SeededRandom};
pub use store::{MetaStore, StoreError};
