//! The commands an operator or a client runs against a cluster: `isle status`, `quorum`,
//! `fault`/`split`/`heal`, the CP keyspace's `put`/`get`/`del`/`watch`/`txn`/`lease`/`lock`/
//! `member`/`compact`/`fence-check`/`recover`, and `ap ...`. Each module holds its flags (clap)
//! and its run function; the `isle` binary only parses and dispatches.

pub mod ap;
pub mod coord;
pub mod fault;
pub mod kv;
pub mod quorum;
pub mod status;
