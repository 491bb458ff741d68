//! STONITH: when this node becomes leader it runs the operator's fence command against the
//! previous leader (which may be paused, not dead), so a zombie cannot act on the world
//! outside Isle; and a node stuck in a minority for too long can fence itself.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use isle_env::Clock;
use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tracing::{info, warn};

/// The outcome of one fence run, for `/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FenceRecord {
    /// The node fenced.
    pub target: u64,
    /// The term in which this node became leader and fenced it.
    pub term: u64,
    /// When the command started, Unix ms.
    pub started_unix_ms: u64,
    /// How long it ran.
    pub took_ms: u64,
    /// `ok`, `failed: ...` or `timeout`.
    pub outcome: String,
}

/// Fence runs so far (the last few kept).
#[derive(Debug, Default)]
pub(crate) struct FenceLog {
    records: Mutex<Vec<FenceRecord>>,
}

/// Most fence records kept for status.
const FENCE_RECORDS_MAX: usize = 16;

impl FenceLog {
    fn lock(&self) -> MutexGuard<'_, Vec<FenceRecord>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, record: FenceRecord) {
        let mut records = self.lock();
        if records.len() == FENCE_RECORDS_MAX {
            records.remove(0);
        }
        records.push(record);
    }

    pub(crate) fn records(&self) -> Vec<FenceRecord> {
        self.lock().clone()
    }
}

/// Runs `command` (through `sh -c`) with `{node}` replaced by `target`, also passed as
/// `ISLE_FENCE_NODE`, bounded by `timeout`.
pub(crate) async fn run(
    command: &str,
    target: u64,
    term: u64,
    timeout: Duration,
    clock: &Arc<dyn Clock>,
) -> FenceRecord {
    let started_unix_ms = clock.unix_ms();
    let started = clock.now();
    let script = command.replace("{node}", &target.to_string());
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("ISLE_FENCE_NODE", target.to_string())
        .kill_on_drop(true)
        .status();
    let outcome = tokio::select! {
        biased;
        status = child => match status {
            Ok(status) if status.success() => "ok".to_string(),
            Ok(status) => format!("failed: {status}"),
            Err(err) => format!("failed: cannot run sh: {err}"),
        },
        () = clock.sleep(timeout) => "timeout".to_string(),
    };
    let took_ms = clock.now().since(started).as_millis() as u64;
    if outcome == "ok" {
        info!(target, term, took_ms, "fenced the previous leader");
    } else {
        warn!(target, term, took_ms, %outcome, "fencing the previous leader did not succeed");
    }
    FenceRecord {
        target,
        term,
        started_unix_ms,
        took_ms,
        outcome,
    }
}
