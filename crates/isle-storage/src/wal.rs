//! An append-only write-ahead log in segment files, as etcd keeps its WAL: a batch of records
//! costs one `write` and the flusher's one `fdatasync`, and an append never waits for an fsync
//! in progress (a redb commit would: it holds the database's single write lock through its
//! fsync). Two logs use it: the Raft log's entries ([`WalKind::RAFT`]) and the AP store's
//! changes ([`WalKind::AP`]).
//!
//! # Layout
//!
//! `<data-dir>/<kind's dir>/<first index, 20 digits>.wal`, each segment a run of frames:
//!
//! ```text
//! [record length: u32 LE][index: u64 LE][record: crc32c, version, postcard payload]
//! ```
//!
//! The record is checksummed as [`record`](crate::record) says: the checksum covers the kind's
//! table name, the index, the version and the payload, so a frame is trusted only if its record
//! is intact *for that log and that index*. A segment is closed once it passes
//! [`SEGMENT_BYTES`]; the next one is named after the index it starts with.
//!
//! # Recovery
//!
//! Opening reads every segment in order. A frame that is cut short or fails its checksum at the
//! end of the *last* segment is a torn write of a batch that was never acknowledged (its fsync
//! had not returned): the segment is truncated there and the log goes on. The same damage
//! anywhere else — or indexes that skip or repeat — means the node cannot trust its log: opening
//! fails with `InvalidData`, naming the file and offset, and nothing is served from it.
//!
//! # Failure
//!
//! A failed write is undone (the segment is cut back to its last whole frame) or, if even that
//! fails, poisons the log. A failed fsync always poisons it: after a failed `fdatasync` Linux may
//! have dropped the dirty pages, so what was written can no longer be vouched for. A poisoned
//! log answers every call with an error (openraft then stops this node's Raft; the AP store
//! refuses writes).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

mod flush;

pub(crate) use flush::FlushJob;
use flush::Flusher;
pub use flush::LogStats;

use crate::record::{self, RecordKey};

/// A segment is closed once it holds this many bytes (the frame that crosses it included).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The record length and the index before each record.
const FRAME_HEADER: usize = 12;
/// Longest record accepted when reading a segment back (an entry is far smaller; a larger
/// length is damage, not data).
const RECORD_MAX: u32 = 256 << 20;
/// Which log a WAL holds: the name its records' checksums are computed with, and how messages
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalKind {
    /// Mixed into every record's checksum (a frame of another log never passes as this one's).
    pub table: &'static str,
    /// The log as an operator reads it in an error ("the Raft log").
    pub label: &'static str,
}

impl WalKind {
    /// The Raft log's entries (checksummed like the redb table they once lived in).
    pub const RAFT: WalKind = WalKind {
        table: crate::raft_log::LOG_TABLE_NAME,
        label: "the Raft log",
    };
    /// The AP store's changes, each batch one record.
    pub const AP: WalKind = WalKind {
        table: "ap_wal",
        label: "the AP log",
    };
}

/// Where one entry's record sits.
#[derive(Debug, Clone, Copy)]
struct Loc {
    /// The first index of its segment (the segment's key).
    segment: u64,
    /// Offset of the record (after the frame header) in the segment.
    offset: u64,
    len: u32,
}

/// One segment file.
struct Segment {
    file: Arc<File>,
    /// Bytes of whole frames in it.
    len: u64,
}

/// What is guarded by the lock.
struct State {
    /// Segments by first index; the last is the one appended to.
    segments: BTreeMap<u64, Segment>,
    /// Locations of the entries `first..first + locs.len()`.
    locs: VecDeque<Loc>,
    first: u64,
    /// Files written since the last flush, and whether a segment was created or removed
    /// (the directory needs its own fsync).
    unsynced: Vec<Arc<File>>,
    dir_dirty: bool,
    /// Set by a failure that leaves the log untrustworthy.
    poisoned: Option<String>,
}

/// The shared part, also reached (weakly) by the flusher thread.
struct Shared {
    kind: WalKind,
    dir: PathBuf,
    /// Size at which a segment is closed ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
    state: Mutex<State>,
    stats: Arc<LogStats>,
}

/// A write-ahead log (see the module docs).
pub(crate) struct Wal {
    shared: Arc<Shared>,
    flusher: Flusher,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

fn poisoned(kind: WalKind, why: &str) -> io::Error {
    io::Error::other(format!(
        "{} is unusable after an earlier failure ({why}); restart the node",
        kind.label
    ))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// fsyncs every file written since the last call (and the directory if it changed).
    fn sync(&self) -> io::Result<()> {
        let (files, dir_dirty) = {
            let mut state = self.lock();
            if let Some(why) = &state.poisoned {
                return Err(poisoned(self.kind, why));
            }
            let dir_dirty = std::mem::take(&mut state.dir_dirty);
            (std::mem::take(&mut state.unsynced), dir_dirty)
        };
        let mut result = Ok(());
        for file in &files {
            result = result.and_then(|()| file.sync_data());
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        if dir_dirty {
            result = result.and_then(|()| File::open(&self.dir).and_then(|d| d.sync_all()));
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(err) = &result {
            self.lock().poisoned = Some(format!("fsync failed: {err}"));
        }
        result
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, recovering as the module docs say;
    /// segments are closed at `segment_bytes` ([`SEGMENT_BYTES`] but in tests).
    pub(crate) fn open_with(
        kind: WalKind,
        dir: &Path,
        segment_bytes: u64,
        stats: Arc<LogStats>,
    ) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for item in fs::read_dir(dir)? {
            let path = item?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(first) = name.strip_suffix(".wal").and_then(|n| n.parse().ok()) {
                names.push((first, path));
            }
        }
        names.sort();
        let mut state = State {
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            first: 0,
            unsynced: Vec::new(),
            dir_dirty: false,
            poisoned: None,
        };
        let count = names.len();
        for (n, (first, path)) in names.into_iter().enumerate() {
            let last_segment = n + 1 == count;
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = recover_segment(kind, &file, &path, first, last_segment, &mut state)?;
            state.segments.insert(
                first,
                Segment {
                    file: Arc::new(file),
                    len,
                },
            );
        }
        let shared = Arc::new(Shared {
            kind,
            dir: dir.to_path_buf(),
            segment_bytes,
            state: Mutex::new(state),
            stats: Arc::clone(&stats),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let flusher = Flusher::start(
            Box::new(move || match weak.upgrade() {
                Some(shared) => shared.sync().map(Some),
                None => Ok(None),
            }),
            stats,
        )?;
        Ok(Wal { shared, flusher })
    }

    fn kind(&self) -> WalKind {
        self.shared.kind
    }

    /// The first and last index held, if any.
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        let state = self.shared.lock();
        let len = state.locs.len() as u64;
        (len > 0).then(|| (state.first, state.first + len - 1))
    }

    /// Appends `records` (consecutive indexes, each right after the last held) with one write;
    /// returns once they are readable, not yet durable: pass a job to [`Wal::on_flushed`].
    pub(crate) fn append(&self, records: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let Some((first_index, _)) = records.first() else {
            return Ok(());
        };
        let mut state = self.shared.lock();
        if let Some(why) = &state.poisoned {
            return Err(poisoned(self.kind(), why));
        }
        if !state.locs.is_empty() {
            let next = state.first + state.locs.len() as u64;
            if *first_index != next {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("WAL append of index {first_index} refused: {next} expected next"),
                ));
            }
        }
        if state.locs.is_empty() && !state.segments.is_empty() {
            // Nothing is held (all purged — a snapshot may have moved the log past its end — or
            // truncated): what the segments keep is dead, and the new run may not follow it.
            // Drop them, durably, before the new segment exists, so a reopen never meets a gap.
            self.drop_all_segments(&mut state)?;
        }
        if state.segments.is_empty() || active_len(&state) >= self.shared.segment_bytes {
            self.roll(&mut state, *first_index)?;
        }
        let (&segment_first, segment) = state
            .segments
            .last_key_value()
            .ok_or_else(|| io::Error::other("WAL without a segment"))?;
        let (file, start) = (Arc::clone(&segment.file), segment.len);
        let mut buffer =
            Vec::with_capacity(records.iter().map(|(_, r)| r.len() + FRAME_HEADER).sum());
        let mut locs = Vec::with_capacity(records.len());
        for (i, (index, record)) in records.iter().enumerate() {
            if *index != first_index + i as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("WAL append refused: index {index} breaks the run from {first_index}"),
                ));
            }
            let len = u32::try_from(record.len())
                .ok()
                .filter(|len| *len <= RECORD_MAX)
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "log entry too large")
                })?;
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&index.to_le_bytes());
            locs.push(Loc {
                segment: segment_first,
                offset: start + buffer.len() as u64,
                len,
            });
            buffer.extend_from_slice(record);
        }
        if let Err(err) = file.write_all_at(&buffer, start) {
            // Cut back to the last whole frame so the tail holds no half batch.
            if let Err(undo) = file.set_len(start) {
                state.poisoned = Some(format!("write failed ({err}), then truncation: {undo}"));
            }
            return Err(err);
        }
        if state.locs.is_empty() {
            state.first = *first_index;
        }
        state.locs.extend(locs);
        if let Some(segment) = state.segments.get_mut(&segment_first) {
            segment.len = start + buffer.len() as u64;
        }
        if !state.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            state.unsynced.push(file);
        }
        Ok(())
    }

    /// Deletes every segment (the log holds no entry) and fsyncs the directory.
    fn drop_all_segments(&self, state: &mut State) -> io::Result<()> {
        let firsts: Vec<u64> = state.segments.keys().copied().collect();
        for first in firsts {
            self.remove_segment(state, first)?;
        }
        state.unsynced.clear();
        File::open(&self.shared.dir)?.sync_all()?;
        self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Forgets segment `first` and deletes its file (the caller fsyncs the directory).
    fn remove_segment(&self, state: &mut State, first: u64) -> io::Result<()> {
        state.segments.remove(&first);
        fs::remove_file(self.shared.dir.join(segment_name(first)))
    }

    /// Starts a new segment for entries from `first`.
    fn roll(&self, state: &mut State, first: u64) -> io::Result<()> {
        let path = self.shared.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let file = Arc::new(file);
        // The closed segment's last frames and the new file's name must be durable too.
        state.unsynced.push(Arc::clone(&file));
        state.dir_dirty = true;
        state.segments.insert(first, Segment { file, len: 0 });
        Ok(())
    }

    /// Blocks until everything appended so far is durable.
    pub(crate) fn sync_now(&self) -> io::Result<()> {
        self.flusher.flush_now()
    }

    /// Runs `job` once everything appended so far is durable.
    pub(crate) fn on_flushed(&self, job: FlushJob) {
        self.flusher.submit(job);
    }

    /// Reads the records of `start..end` (clamped to what is held), stopping once `max_entries`
    /// or `max_bytes` are reached (at least one record is returned when any is held).
    pub(crate) fn read(
        &self,
        start: u64,
        end: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let wanted: Vec<(u64, Loc, Arc<File>)> = {
            let state = self.shared.lock();
            if let Some(why) = &state.poisoned {
                return Err(poisoned(self.kind(), why));
            }
            let held_end = state.first + state.locs.len() as u64;
            let (start, end) = (start.max(state.first), end.min(held_end));
            let mut wanted = Vec::new();
            let mut bytes = 0usize;
            let mut index = start;
            while index < end
                && wanted.len() < max_entries
                && (wanted.is_empty() || bytes < max_bytes)
            {
                let loc = state.locs[(index - state.first) as usize];
                let segment = state
                    .segments
                    .get(&loc.segment)
                    .ok_or_else(|| io::Error::other("WAL entry in a missing segment"))?;
                bytes = bytes.saturating_add(loc.len as usize);
                wanted.push((index, loc, Arc::clone(&segment.file)));
                index += 1;
            }
            wanted
        };
        let mut out = Vec::with_capacity(wanted.len());
        for (index, loc, file) in wanted {
            let mut record = vec![0; loc.len as usize];
            file.read_exact_at(&mut record, loc.offset)?;
            out.push((index, record));
        }
        Ok(out)
    }

    /// Removes every entry after `last_kept` (all for `None`), durably. Everything queued for a
    /// flush is flushed and reported first, so no flush report outlives the entries it covers.
    pub(crate) fn truncate_after(&self, last_kept: Option<u64>) -> io::Result<()> {
        self.flusher.flush_now()?;
        let mut state = self.shared.lock();
        if let Some(why) = &state.poisoned {
            return Err(poisoned(self.kind(), why));
        }
        let held_end = state.first + state.locs.len() as u64;
        let first_removed = match last_kept {
            Some(kept) => kept.saturating_add(1).max(state.first),
            None => state.first,
        };
        if state.locs.is_empty() || first_removed >= held_end {
            return Ok(());
        }
        let loc = state.locs[(first_removed - state.first) as usize];
        let cut = loc.offset - FRAME_HEADER as u64;
        // Later segments go whole; the one holding the cut is shortened (or removed whole when
        // the cut is its start, so a segment's name always names its first entry).
        let later: Vec<u64> = state
            .segments
            .range(loc.segment + 1..)
            .map(|(first, _)| *first)
            .collect();
        for first in later {
            self.remove_segment(&mut state, first)?;
        }
        if cut == 0 {
            self.remove_segment(&mut state, loc.segment)?;
        } else if let Some(segment) = state.segments.get_mut(&loc.segment) {
            segment.file.set_len(cut)?;
            segment.file.sync_data()?;
            self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            segment.len = cut;
        }
        File::open(&self.shared.dir)?.sync_all()?;
        self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let kept = (first_removed - state.first) as usize;
        state.locs.truncate(kept);
        Ok(())
    }

    /// Forgets every entry up to `upto` and deletes the segments holding nothing after it. The
    /// caller has recorded the purge point durably first.
    pub(crate) fn purge_through(&self, upto: u64) -> io::Result<()> {
        let mut state = self.shared.lock();
        while !state.locs.is_empty() && state.first <= upto {
            state.locs.pop_front();
            state.first += 1;
        }
        if state.locs.is_empty() {
            state.first = upto.saturating_add(1);
        }
        // A segment may go when the next one starts at or before the first entry kept; the last
        // segment stays (it is appended to).
        let firsts: Vec<u64> = state.segments.keys().copied().collect();
        let mut removed = false;
        for pair in firsts.windows(2) {
            if pair[1] <= upto.saturating_add(1) {
                self.remove_segment(&mut state, pair[0])?;
                removed = true;
            }
        }
        if removed {
            state.dir_dirty = true;
        }
        Ok(())
    }
}

fn active_len(state: &State) -> u64 {
    state.segments.last_key_value().map_or(0, |(_, s)| s.len)
}

/// Reads one segment into `state`; returns the length of its whole frames (after cutting a torn
/// tail of the last segment).
fn recover_segment(
    kind: WalKind,
    file: &File,
    path: &Path,
    first: u64,
    last_segment: bool,
    state: &mut State,
) -> io::Result<u64> {
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &*file, &mut bytes)?;
    let mut offset = 0usize;
    let mut expected = first;
    let damage = |offset: usize, detail: String| {
        invalid(format!(
            "{} segment {} is damaged at byte {offset}: {detail}; the node cannot trust \
             its log (restore this node from a peer)",
            kind.label,
            path.display()
        ))
    };
    while offset < bytes.len() {
        let frame = parse_frame(kind, &bytes[offset..], expected);
        match frame {
            Ok((index, len)) => {
                if !state.locs.is_empty() && index != state.first + state.locs.len() as u64 {
                    return Err(damage(
                        offset,
                        format!(
                            "index {index} does not follow {}",
                            state.first + state.locs.len() as u64 - 1
                        ),
                    ));
                }
                if state.locs.is_empty() {
                    state.first = index;
                }
                state.locs.push_back(Loc {
                    segment: first,
                    offset: (offset + FRAME_HEADER) as u64,
                    len,
                });
                offset += FRAME_HEADER + len as usize;
                expected = index + 1;
            }
            Err(detail) if last_segment && torn_tail(&bytes[offset..]) => {
                tracing::warn!(
                    log = kind.label,
                    segment = %path.display(),
                    offset,
                    %detail,
                    "cutting a torn write off the end of a log (a batch never acknowledged)"
                );
                file.set_len(offset as u64)?;
                file.sync_data()?;
                return Ok(offset as u64);
            }
            Err(detail) => return Err(damage(offset, detail)),
        }
    }
    Ok(offset as u64)
}

/// Whether damage starting at the front of `rest` (the end of the last segment) is what a write
/// cut short by a crash leaves: a frame running past the end of the file, a last frame whose
/// bytes are all there but wrong (a torn sector), or zeros to the end. Damage followed by more
/// data is not a torn tail: acknowledged entries may follow it.
fn torn_tail(rest: &[u8]) -> bool {
    if rest.len() < FRAME_HEADER || rest.iter().all(|b| *b == 0) {
        return true;
    }
    let mut len = [0; 4];
    len.copy_from_slice(&rest[..4]);
    let frame_end = FRAME_HEADER as u64 + u64::from(u32::from_le_bytes(len));
    frame_end >= rest.len() as u64
}

/// Checks the frame at the start of `bytes`: `(index, record length)`, or what is wrong.
fn parse_frame(kind: WalKind, bytes: &[u8], expected: u64) -> Result<(u64, u32), String> {
    if bytes.len() < FRAME_HEADER {
        return Err(format!(
            "{} bytes left, a frame header needs 12",
            bytes.len()
        ));
    }
    let mut len = [0; 4];
    len.copy_from_slice(&bytes[..4]);
    let len = u32::from_le_bytes(len);
    let mut index = [0; 8];
    index.copy_from_slice(&bytes[4..12]);
    let index = u64::from_le_bytes(index);
    if len > RECORD_MAX {
        return Err(format!("record length {len} is beyond any entry"));
    }
    let Some(record) = bytes.get(FRAME_HEADER..FRAME_HEADER + len as usize) else {
        return Err(format!("record of {len} bytes cut short"));
    };
    if index != expected {
        return Err(format!("index {index} where {expected} was expected"));
    }
    if !record::intact(kind.table, RecordKey::Index(index), record) {
        return Err(format!("record for index {index} fails its checksum"));
    }
    Ok((index, len))
}
