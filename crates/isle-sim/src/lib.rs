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
//! for violation in isle_sim::check(&run.history) {
//!     println!("{violation}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - [`config`]: what a run is made of ([`SimConfig`]).
//! - [`nemesis`]: the fault vocabulary ([`Nemesis`], [`Schedule`]), shared with the process engine.
//! - [`workload`]: what the AP clients ask; [`client`]: how they ask a node; [`cp`]: the CP
//!   clients (registers, compare-and-set, lock → fenced writes → release).
//! - [`history`]: what a run records; [`check`](mod@check): the AP promises checked on it;
//!   [`chaos`]: the same run in `isle-chaos`'s format, and that crate's checkers on it.
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
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod cp;
pub mod engine;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod sweep;
pub mod workload;

pub use check::{Violation, check};
pub use config::{Bug, NetConfig, SimConfig};
pub use engine::{Figures, Run, SimError, run};
pub use history::History;
pub use nemesis::{Action, Effects, Nemesis, Schedule, Sides, Step};
pub use workload::{Mix, WorkloadConfig};
