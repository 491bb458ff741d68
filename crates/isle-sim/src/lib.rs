//! Isle's simulation engine (issue 5): the whole cluster — real node code
//! (`isle_node::start_with`, what `isle node` runs), in-memory redb stores, turmoil's virtual
//! network and clock — in one process, driven by a seed, so the same seed replays the same run
//! exactly.
//!
//! ```no_run
//! use isle_sim::{Nemesis, Schedule, Sides, SimConfig};
//!
//! # fn main() -> Result<(), isle_sim::SimError> {
//! let split = Nemesis::Partition { sides: Sides::MajorityMinority };
//! let schedule = Schedule::new().window(1_000, 3_000, split);
//! let run = isle_sim::run(SimConfig::new(7).nodes(5).schedule(schedule))?;
//! println!("{}", isle_sim::chaos::convergence(&run));
//! println!("{}", isle_sim::chaos::linearizability(&run));
//! # Ok(())
//! # }
//! ```
//!
//! - [`config`]: what a run is made of ([`SimConfig`]).
//! - [`nemesis`]: the fault vocabulary ([`Nemesis`], [`Schedule`]), shared with the process engine.
//! - [`workload`]: what the AP clients ask; [`client`]: how they ask a node; [`cp`]: the CP
//!   clients (registers, compare-and-set, lock → fenced writes → release).
//! - [`record`]: what a run records, in `isle-chaos`'s history model (operations, final
//!   copies of every replica) plus the nemesis events; [`chaos`]: that crate's checkers on it.
//! - [`engine`]: turmoil hosts, the harness, the phases of a run.
//! - [`sweep`]: one run with every checker, and a sweep of seeds on every core (what
//!   `isle chaos sim` runs).
//! - [`net`], [`clock`]: the seams the nodes run on (turmoil TCP, a skewable virtual clock).
//!
//! Determinism rests on: one seed for turmoil, every node RNG, openraft's RNG (each node's
//! Raft is created in a scope seeded from the node's RNG) and the workloads; tokio's own RNG
//! seeded by turmoil (`--cfg tokio_unstable`, set in `.cargo/config.toml`: which waiter a watch
//! channel wakes first is drawn from it); turmoil's single-threaded, step-by-step scheduling;
//! the wall clock derived from turmoil's epoch; every `select!` in node code `biased`; the
//! harness acting only between steps; and a crashing node cut off while its tasks are dropped
//! (see `engine`).

pub mod chaos;
pub mod client;
pub mod clock;
pub mod config;
pub mod cp;
pub mod engine;
pub mod nemesis;
pub mod net;
pub mod record;
pub mod sweep;
pub mod workload;

pub use config::{Bug, NetConfig, SimConfig};
pub use engine::{Figures, Run, SimError, run};
pub use nemesis::{Action, Effects, Nemesis, Schedule, Sides, Step};
pub use sweep::Violation;
pub use workload::{Mix, WorkloadConfig};
