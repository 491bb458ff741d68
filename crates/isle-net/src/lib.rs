//! Isle's peer-to-peer transport: the thin IO shell that carries node messages between
//! `isle node` processes.
//!
//! # Frame format
//!
//! ```text
//! 0        4        8                              8 + len
//! +--------+--------+------------------------------+
//! |  len   |  crc   | payload                      |
//! | u32 BE | u32 BE | postcard(Envelope<M>)        |
//! +--------+--------+------------------------------+
//! crc = crc32c(payload); Envelope { version: u16 = WIRE_VERSION, from: NodeId, msg: M }
//! ```
//!
//! A checksum mismatch skips the frame; a payload that passes its checksum but does not decode
//! (or carries another wire version) is skipped too; a length above `max_frame_bytes` (16 MiB by
//! default) closes the connection, because nothing after it can be framed reliably.
//!
//! # Connection model
//!
//! Each node dials one outbound connection per peer address and only ever writes on it; the peer
//! dials its own connection back for its messages. Every peer has a bounded queue and a task
//! that owns the connection: it dials with a timeout, backs off exponentially with full jitter,
//! opens a circuit breaker after repeated failures (sends are rejected and the queue discarded
//! for a cooldown, then one trial dial), and writes whatever is queued as one batch bounded by a
//! write timeout. [`Transport::send`] never awaits, so one dead or slow peer cannot stall sends
//! to the others. Inbound, a reader task per accepted connection decodes frames and `try_send`s
//! them to the node loop; a full inbound queue drops (and counts) rather than blocks.
//!
//! # Fault model
//!
//! With `--allow-fault-injection`, [`Faults`] rules drop, delay, duplicate or corrupt messages
//! to or from a peer (by [`NodeId`](isle_types::NodeId)) in one direction or both, each with a
//! probability drawn from a seeded generator. Outbound faults act in the sender before the bytes
//! reach the socket (a corrupt frame has a bit flipped after its checksum was computed, so the
//! receiver counts it as corrupt); inbound faults act on receipt. Delays hold a message in a
//! spawned task (at most `delayed_max` at once) and never hold up later messages.
//!
//! All waiting goes through [`isle_env::Clock`] and all randomness through
//! [`isle_env::SeededRandom`], so the same code runs on virtual time in the simulator.

mod fault;
mod frame;
mod inbound;
mod metrics;
mod peer;
mod tcp;
mod transport;

pub use fault::{
    DELAY_MS_MAX, Direction, FaultAction, FaultError, FaultRule, Faults, RULES_MAX, Verdict,
};
pub use frame::{
    Envelope, FrameDecoder, FrameError, HEADER_BYTES, MAX_FRAME_BYTES_DEFAULT, WIRE_VERSION,
    encode, encode_limited,
};
pub use metrics::{DropLabels, DropReason, NetMetrics, NetStats, PeerLabels};
pub use tcp::{TcpNetListener, TcpNetwork};
pub use transport::{
    BreakerState, Inbound, NetError, PEERS_MAX, PeerAddr, PeerState, SendError, Transport,
    TransportConfig,
};
