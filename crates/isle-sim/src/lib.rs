//! Isle's simulation engine (issue 5, first slice): the whole cluster — real node code
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
//! - [`workload`]: what the clients ask; [`client`]: how they ask a node.
//! - [`history`]: what a run records; [`check`](mod@check): the AP promises checked on it;
//!   [`chaos`]: the same run in `isle-chaos`'s format, and that crate's checkers on it.
//! - [`engine`]: turmoil hosts, the harness, the phases of a run.
//! - [`net`], [`clock`]: the seams the nodes run on (turmoil TCP, a skewable virtual clock).
//!
//! Determinism rests on: one seed for turmoil, every node RNG and the workload; turmoil's
//! single-threaded, step-by-step scheduling; the wall clock derived from turmoil's epoch;
//! every `select!` in node code `biased`; the harness acting only between steps; a crashing
//! node cut off while its tasks are dropped (see `engine`); and the CP keyspace started but
//! inert (never bootstrapped, Raft ticks beyond the run), because openraft draws its tick
//! phase and election timeouts from an unseeded RNG.

pub mod chaos;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod engine;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod workload;

pub use check::{Violation, check};
pub use config::{NetConfig, SimConfig};
pub use engine::{Figures, Run, SimError, run};
pub use history::History;
pub use nemesis::{Action, Effects, Nemesis, Schedule, Sides, Step};
pub use workload::{Mix, WorkloadConfig};
