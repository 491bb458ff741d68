//! Group commit for a write-ahead log: appends are written without an fsync and made durable by
//! one flusher thread, which fsyncs once for every append that queued while the previous fsync
//! ran and then reports them all flushed.
//!
//! openraft allows exactly this (`RaftLogStorage::append` returns once the entries are readable;
//! its callback fires once they are durable), and with
//! `Config::broadcast_submitted_on_append` the leader sends entries to its followers while its
//! own fsync runs: the leader's flush overlaps replication instead of preceding it. The AP store
//! answers a batch's writers from the same callback.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a flush reports back to one append: called once the entries are durable (or not).
pub(crate) type FlushJob = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Makes everything written so far durable; `Ok(None)` once its target is gone.
pub(crate) type SyncFn = Box<dyn FnMut() -> io::Result<Option<()>> + Send>;

/// Counters of a log's disk work, for `/metrics`: fsyncs per committed entry and entries per
/// batch are what group commit is judged by.
#[derive(Debug, Default)]
pub struct LogStats {
    /// fsyncs (fdatasync) of the log's files: its segments, their directory, and (for the Raft
    /// log) the durable commits of its metadata.
    pub fsyncs: AtomicU64,
    /// `append` calls (batches of entries) written.
    pub append_batches: AtomicU64,
    /// Entries written by those batches.
    pub entries_appended: AtomicU64,
    /// Flushes made by the flusher thread (each covers one or more batches).
    pub flushes: AtomicU64,
    /// Batches made durable by those flushes.
    pub batches_flushed: AtomicU64,
}

impl LogStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The flusher thread of one log, shared by every handle on it.
pub(crate) struct Flusher {
    jobs: Mutex<Option<Sender<FlushJob>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    /// Starts the flusher thread around `sync` (which should hold its files weakly, so
    /// dropping the log closes them); it ends when the last handle on the flusher is dropped.
    pub(crate) fn start(sync: SyncFn, stats: Arc<LogStats>) -> io::Result<Flusher> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("isle-wal-flush".into())
            .spawn(move || run(sync, &rx, &stats))?;
        Ok(Flusher {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `job` for the next flush. Runs it at once with an error if the thread is gone.
    pub(crate) fn submit(&self, job: FlushJob) {
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            job(Err(io::Error::other("the log's flusher has stopped")));
        }
    }

    /// Blocks until everything queued before this call is flushed and reported.
    pub(crate) fn flush_now(&self) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        rx.recv()
            .unwrap_or_else(|_| Err(io::Error::other("the log's flusher has stopped")))
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has flushed what was queued; joining it
        // means the database file is closed when the last store handle is gone.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn run(mut sync: SyncFn, jobs: &Receiver<FlushJob>, stats: &LogStats) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let result = match sync() {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(io::Error::other("the log was closed before the flush")),
            Err(err) => Err(err),
        };
        LogStats::add(&stats.flushes, 1);
        LogStats::add(&stats.batches_flushed, batch.len() as u64);
        for job in batch {
            job(match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
            });
        }
    }
}
