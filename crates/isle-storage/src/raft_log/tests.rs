//! Tests of the redb Raft log: openraft's storage suite, restart, corruption, truncate and purge
//! boundaries, concurrent reads, and a printed (not asserted) group-commit figure.

use std::io;
use std::ops::Bound;
use std::path::Path;
use std::time::{Duration, Instant};

use isle_env::MetaStore;
use isle_types::{Identity, NodeId};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::testing::log::Suite;
use openraft::type_config::TypeConfigExt;
use openraft::type_config::alias::{EntryOf, LogIdOf};
use openraft::{Vote, testing};
use redb::{ReadableDatabase, ReadableTable};

use super::testkit::{RedbBuilder, TestConfig};
use super::{CorruptRecord, LOG_TABLE, META_TABLE, RecordKey, RedbLogStore};
use crate::RedbStore;
use crate::record;

type Store = RedbLogStore<TestConfig>;

fn log_id(term: u64, index: u64) -> LogIdOf<TestConfig> {
    testing::log_id::<TestConfig>(term, 0, index)
}

fn blank(term: u64, index: u64) -> EntryOf<TestConfig> {
    testing::blank_ent::<TestConfig>(term, 0, index)
}

/// A normal entry carrying `payload_len` bytes of application data.
fn normal(term: u64, index: u64, payload_len: usize) -> EntryOf<TestConfig> {
    EntryOf::<TestConfig>::new_normal(log_id(term, index), "x".repeat(payload_len))
}

fn open(dir: &Path) -> (RedbStore, Store) {
    let node = RedbStore::open(dir).unwrap();
    let log = node.raft_log_store();
    (node, log)
}

/// A log whose entries are in the redb table (as in a simulator's in-memory store), on disk so
/// tests can damage it.
fn open_table(dir: &Path) -> (RedbStore, Store) {
    let node = RedbStore::open(dir).unwrap();
    let log = RedbLogStore::open(node.database()).unwrap();
    (node, log)
}

/// Appends and waits for the flush callback, as openraft does.
async fn append(
    store: &mut Store,
    entries: impl IntoIterator<Item = EntryOf<TestConfig>>,
) -> io::Result<()> {
    let entries: Vec<_> = entries.into_iter().collect();
    let (tx, rx) = TestConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await
        .map_err(|_| io::Error::other("flush callback dropped"))?
}

async fn indexes(store: &mut Store) -> Vec<u64> {
    let entries = store.try_get_log_entries(..).await.unwrap();
    entries.iter().map(|e| e.index()).collect()
}

fn state(purged: Option<(u64, u64)>, last: Option<(u64, u64)>) -> LogState<TestConfig> {
    LogState {
        last_purged_log_id: purged.map(|(t, i)| log_id(t, i)),
        last_log_id: last.map(|(t, i)| log_id(t, i)),
    }
}

#[test]
fn openraft_storage_suite_passes() {
    TestConfig::run(async {
        Suite::test_all(RedbBuilder { group_commit: true })
            .await
            .unwrap();
    });
}

#[test]
fn openraft_storage_suite_passes_inline() {
    TestConfig::run(async {
        Suite::test_all(RedbBuilder {
            group_commit: false,
        })
        .await
        .unwrap();
    });
}

/// Group commit: appends return before their fsync; every callback fires once durable, each
/// flush is one fsync covering all batches queued meanwhile, and the committed id costs none.
#[test]
fn group_commit_flushes_every_batch_with_one_fsync_per_flush() {
    TestConfig::run(async {
        let dir = tempfile::tempdir().unwrap();
        let (_node, mut log) = open(dir.path());
        let stats = std::sync::Arc::clone(log.stats());
        let mut flushed = Vec::new();
        for index in 1..=50 {
            let (tx, rx) = TestConfig::oneshot();
            log.append([normal(1, index, 100)], IOFlushed::signal(tx))
                .await
                .unwrap();
            flushed.push(rx);
            // Readable as soon as append returns, flushed or not.
            assert_eq!(
                log.try_get_log_entries(index..=index).await.unwrap().len(),
                1
            );
        }
        for rx in flushed {
            rx.await.unwrap().unwrap();
        }
        use super::LogStats;
        assert_eq!(LogStats::get(&stats.append_batches), 50);
        assert_eq!(LogStats::get(&stats.entries_appended), 50);
        assert_eq!(LogStats::get(&stats.batches_flushed), 50);
        let flushes = LogStats::get(&stats.flushes);
        assert!((1..=50).contains(&flushes), "{flushes} flushes");
        // One fdatasync of the segment per flush at most, plus the directory's once (the
        // segment file was created).
        let fsyncs = LogStats::get(&stats.fsyncs);
        assert!(
            fsyncs <= flushes + 1,
            "{fsyncs} fsyncs for {flushes} flushes"
        );
        log.save_committed(Some(log_id(1, 50))).await.unwrap();
        assert_eq!(LogStats::get(&stats.fsyncs), fsyncs, "committed id fsynced");
        drop(log);
        drop(_node);
        // What the callbacks reported flushed is there after a reopen.
        let (_node, mut log) = open(dir.path());
        assert_eq!(indexes(&mut log).await, (1..=50).collect::<Vec<_>>());
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 50)));
    });
}

#[test]
fn restart_keeps_vote_committed_entries_and_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(3, 2);
    TestConfig::run(async {
        let (mut node, mut log) = open(dir.path());
        append(&mut log, (1..=10).map(|i| normal(1, i, 16)))
            .await
            .unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 7))).await.unwrap();
        log.purge(log_id(1, 3)).await.unwrap();
        // The node's own records share the file.
        node.save_identity(&Identity {
            node_id: NodeId(2),
            incarnation: 1,
            created_unix_ms: 5,
        })
        .unwrap();
    });
    TestConfig::run(async {
        let (node, mut log) = open(dir.path());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
        assert_eq!(
            log.get_log_state().await.unwrap(),
            state(Some((1, 3)), Some((1, 10)))
        );
        assert_eq!(indexes(&mut log).await, (4..=10).collect::<Vec<_>>());
        assert_eq!(
            node.load_identity().unwrap().map(|i| i.node_id),
            Some(NodeId(2))
        );
        // Committed can be cleared, and that survives too.
        log.save_committed(None).await.unwrap();
    });
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        assert_eq!(log.read_committed().await.unwrap(), None);
    });
}

/// How a test damages the stored state, and where the damage must be reported.
struct Damage {
    name: &'static str,
    apply: fn(&redb::Database),
    want_table: &'static str,
    want_key: RecordKey,
}

fn rewrite_entry(db: &redb::Database, index: u64, edit: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>) {
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(LOG_TABLE).unwrap();
        let old = table.get(index).unwrap().map(|v| v.value().to_vec());
        match edit(old.unwrap_or_default()) {
            Some(new) => table.insert(index, new.as_slice()).unwrap(),
            None => table.remove(index).unwrap(),
        };
    }
    txn.commit().unwrap();
}

fn entry_bytes(db: &redb::Database, index: u64) -> Vec<u8> {
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(LOG_TABLE).unwrap();
    table.get(index).unwrap().unwrap().value().to_vec()
}

const DAMAGES: [Damage; 5] = [
    Damage {
        name: "a flipped payload byte",
        apply: |db| {
            rewrite_entry(db, 5, |mut v| {
                let last = v.len() - 1;
                v[last] ^= 0x20;
                Some(v)
            })
        },
        want_table: "raft_log",
        want_key: RecordKey::Index(5),
    },
    Damage {
        name: "a record copied under another index",
        apply: |db| {
            let four = entry_bytes(db, 4);
            rewrite_entry(db, 5, |_| Some(four));
        },
        want_table: "raft_log",
        want_key: RecordKey::Index(5),
    },
    Damage {
        name: "a well-framed entry that claims another index",
        apply: |db| {
            let six = record::encode("raft_log", RecordKey::Index(5), &blank(1, 6)).unwrap();
            rewrite_entry(db, 5, |_| Some(six));
        },
        want_table: "raft_log",
        want_key: RecordKey::Index(5),
    },
    Damage {
        name: "a missing entry (a hole)",
        apply: |db| rewrite_entry(db, 5, |_| None),
        want_table: "raft_log",
        want_key: RecordKey::Index(5),
    },
    Damage {
        name: "a truncated record",
        apply: |db| rewrite_entry(db, 5, |v| Some(v[..3].to_vec())),
        want_table: "raft_log",
        want_key: RecordKey::Index(5),
    },
];

fn assert_corrupt(
    result: io::Result<impl std::fmt::Debug>,
    table: &str,
    key: RecordKey,
    case: &str,
) {
    let err = result.expect_err(case);
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{case}: {err}");
    let corrupt = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<CorruptRecord>());
    let corrupt = corrupt.unwrap_or_else(|| panic!("{case}: not a CorruptRecord: {err}"));
    assert_eq!((corrupt.table, corrupt.key), (table, key), "{case}: {err}");
    let message = err.to_string();
    assert!(
        message.contains(table) && message.contains(&key.to_string()),
        "{case}: {message}"
    );
}

#[test]
fn damaged_entries_are_invalid_data_naming_table_and_index() {
    for damage in DAMAGES {
        let dir = tempfile::tempdir().unwrap();
        TestConfig::run(async {
            let (_node, mut log) = open_table(dir.path());
            append(&mut log, (1..=10).map(|i| normal(1, i, 32)))
                .await
                .unwrap();
            (damage.apply)(log.database());
            let read = log.try_get_log_entries(1..=10).await;
            assert_corrupt(read, damage.want_table, damage.want_key, damage.name);
            // Reads that do not touch the damaged record still work.
            assert_eq!(
                log.try_get_log_entries(6..=10).await.unwrap().len(),
                5,
                "{}",
                damage.name
            );
        });
    }
}

#[test]
fn damaged_metadata_and_log_tail_are_invalid_data() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open_table(dir.path());
        append(&mut log, (1..=3).map(|i| blank(1, i)))
            .await
            .unwrap();
        log.save_vote(&Vote::new(4, 1)).await.unwrap();
        let txn = log.database().begin_write().unwrap();
        {
            let mut meta = txn.open_table(META_TABLE).unwrap();
            let mut vote = meta.get("vote").unwrap().unwrap().value().to_vec();
            vote[6] ^= 0x01;
            meta.insert("vote", vote.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        assert_corrupt(
            log.read_vote().await,
            "raft_meta",
            RecordKey::Meta("vote"),
            "vote",
        );

        rewrite_entry(log.database(), 3, |mut v| {
            v[0] ^= 0xff;
            Some(v)
        });
        assert_corrupt(
            log.get_log_state().await,
            "raft_log",
            RecordKey::Index(3),
            "tail",
        );
    });
}

/// One truncate/purge scenario on a log holding entries 1..=10 of term 1.
struct Boundary {
    name: &'static str,
    truncate_after: Option<Option<u64>>,
    purge: &'static [u64],
    want_state: LogState<TestConfig>,
    want_indexes: std::ops::Range<u64>,
}

#[test]
fn truncate_and_purge_boundaries() {
    let none = 0..0;
    let cases = [
        Boundary {
            name: "truncate all",
            truncate_after: Some(None),
            purge: &[],
            want_state: state(None, None),
            want_indexes: none.clone(),
        },
        Boundary {
            name: "truncate after first",
            truncate_after: Some(Some(1)),
            purge: &[],
            want_state: state(None, Some((1, 1))),
            want_indexes: 1..2,
        },
        Boundary {
            name: "truncate after last",
            truncate_after: Some(Some(10)),
            purge: &[],
            want_state: state(None, Some((1, 10))),
            want_indexes: 1..11,
        },
        Boundary {
            name: "truncate past the end",
            truncate_after: Some(Some(15)),
            purge: &[],
            want_state: state(None, Some((1, 10))),
            want_indexes: 1..11,
        },
        Boundary {
            name: "purge first",
            truncate_after: None,
            purge: &[1],
            want_state: state(Some((1, 1)), Some((1, 10))),
            want_indexes: 2..11,
        },
        Boundary {
            name: "purge last",
            truncate_after: None,
            purge: &[10],
            want_state: state(Some((1, 10)), Some((1, 10))),
            want_indexes: none.clone(),
        },
        Boundary {
            name: "purge past the end",
            truncate_after: None,
            purge: &[20],
            want_state: state(Some((1, 20)), Some((1, 20))),
            want_indexes: none.clone(),
        },
        Boundary {
            name: "a lower purge changes nothing",
            truncate_after: None,
            purge: &[5, 3],
            want_state: state(Some((1, 5)), Some((1, 10))),
            want_indexes: 6..11,
        },
        Boundary {
            name: "purge then truncate",
            truncate_after: Some(Some(7)),
            purge: &[5],
            want_state: state(Some((1, 5)), Some((1, 7))),
            want_indexes: 6..8,
        },
    ];
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        TestConfig::run(async {
            let (_node, mut log) = open(dir.path());
            append(&mut log, (1..=10).map(|i| blank(1, i)))
                .await
                .unwrap();
            for &index in case.purge {
                log.purge(log_id(1, index)).await.unwrap();
            }
            if let Some(last_kept) = case.truncate_after {
                log.truncate_after(last_kept.map(|i| log_id(1, i)))
                    .await
                    .unwrap();
            }
            assert_eq!(
                log.get_log_state().await.unwrap(),
                case.want_state,
                "{}",
                case.name
            );
            let want: Vec<u64> = case.want_indexes.clone().collect();
            assert_eq!(indexes(&mut log).await, want, "{}", case.name);
            // The next append goes right after the last log id, whatever removed the rest.
            let next = case.want_state.last_log_id.map_or(1, |id| id.index + 1);
            append(&mut log, [blank(2, next)]).await.unwrap();
            assert_eq!(
                log.get_log_state().await.unwrap().last_log_id,
                Some(log_id(2, next)),
                "{}",
                case.name
            );
        });
    }
}

#[test]
fn appends_that_would_leave_a_hole_or_overwrite_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        append(&mut log, (1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();
        let refused: [(&str, Vec<EntryOf<TestConfig>>); 4] = [
            ("overwrite the last", vec![blank(2, 10)]),
            ("skip one", vec![blank(1, 12)]),
            ("a hole inside the batch", vec![blank(1, 11), blank(1, 13)]),
            ("out of order", vec![blank(1, 12), blank(1, 11)]),
        ];
        for (name, entries) in refused {
            let err = append(&mut log, entries).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}: {err}");
            assert_eq!(
                indexes(&mut log).await,
                (1..=10).collect::<Vec<_>>(),
                "{name}"
            );
        }
        log.purge(log_id(1, 10)).await.unwrap();
        let err = append(&mut log, [blank(1, 12)]).await.unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "after the purge point: {err}"
        );
        append(&mut log, []).await.unwrap();
        append(&mut log, [blank(1, 11)]).await.unwrap();
    });
}

#[test]
fn range_reads_respect_every_bound() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        append(&mut log, (1..=10).map(|i| blank(1, i)))
            .await
            .unwrap();
        type Case = ((Bound<u64>, Bound<u64>), Vec<u64>);
        let ranges: [Case; 7] = [
            ((Bound::Included(0), Bound::Excluded(3)), vec![1, 2]),
            ((Bound::Excluded(3), Bound::Included(5)), vec![4, 5]),
            ((Bound::Included(8), Bound::Unbounded), vec![8, 9, 10]),
            (
                (Bound::Unbounded, Bound::Included(u64::MAX)),
                (1..=10).collect(),
            ),
            ((Bound::Included(5), Bound::Excluded(5)), vec![]),
            ((Bound::Included(7), Bound::Excluded(3)), vec![]),
            ((Bound::Excluded(u64::MAX), Bound::Unbounded), vec![]),
        ];
        for (range, want) in ranges {
            let got = log.try_get_log_entries(range).await.unwrap();
            let got: Vec<u64> = got.iter().map(|e| e.index()).collect();
            assert_eq!(got, want, "{range:?}");
        }
    });
}

#[test]
fn limited_reads_stop_at_the_entry_bound() {
    let dir = tempfile::tempdir().unwrap();
    let n_entries = super::LIMITED_READ_ENTRIES_MAX as u64 + 100;
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        append(&mut log, (1..=n_entries).map(|i| blank(1, i)))
            .await
            .unwrap();
        let got = log.limited_get_log_entries(1, n_entries + 1).await.unwrap();
        assert_eq!(got.len(), super::LIMITED_READ_ENTRIES_MAX);
        assert_eq!(got.first().map(|e| e.index()), Some(1));
        let all = log.try_get_log_entries(1..=n_entries).await.unwrap();
        assert_eq!(all.len() as u64, n_entries);
    });
}

#[test]
fn a_reader_is_not_blocked_by_an_open_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open_table(dir.path());
        let mut reader = log.get_log_reader().await;
        append(&mut log, (1..=3).map(|i| blank(1, i)))
            .await
            .unwrap();
        // A writer mid-transaction (as `append` is while it commits) holding an uncommitted entry.
        let txn = log.database().begin_write().unwrap();
        {
            let mut table = txn.open_table(LOG_TABLE).unwrap();
            let four = record::encode("raft_log", RecordKey::Index(4), &blank(1, 4)).unwrap();
            table.insert(4, four.as_slice()).unwrap();
        }
        let seen = reader.try_get_log_entries(..).await.unwrap();
        assert_eq!(
            seen.len(),
            3,
            "a reader sees committed entries only, without waiting"
        );
        txn.commit().unwrap();
        assert_eq!(reader.try_get_log_entries(..).await.unwrap().len(), 4);
    });
}

fn per_call(elapsed: Duration, calls: u32) -> f64 {
    elapsed.as_secs_f64() * 1000.0 / f64::from(calls)
}

/// The disk's own floor in the same run: rewrite 4 KiB and `fdatasync`, `calls` times.
fn raw_fsync(dir: &Path, calls: u32) -> Duration {
    use std::io::{Seek, Write};
    let mut file = std::fs::File::create(dir.join("probe")).unwrap();
    let block = [7_u8; 4096];
    let start = Instant::now();
    for _ in 0..calls {
        file.rewind().unwrap();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
    }
    start.elapsed()
}

/// Prints the cost of a commit (run with `--nocapture`): one entry per append vs a hundred, and
/// the thread hop `spawn_blocking` would add. A figure, not an assertion.
#[test]
fn append_throughput_single_vs_batched() {
    const PAYLOAD_LEN: usize = 100;
    let single = tempfile::tempdir().unwrap();
    let batched = tempfile::tempdir().unwrap();
    let hopped = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open(single.path());
        let start = Instant::now();
        for index in 1..=1000 {
            append(&mut log, [normal(1, index, PAYLOAD_LEN)])
                .await
                .unwrap();
        }
        let single_elapsed = start.elapsed();

        let (_node, mut log) = open(batched.path());
        let start = Instant::now();
        for batch in 0..10 {
            let first = batch * 100 + 1;
            append(
                &mut log,
                (first..first + 100).map(|i| normal(1, i, PAYLOAD_LEN)),
            )
            .await
            .unwrap();
        }
        let batched_elapsed = start.elapsed();

        let (_node, log) = open(hopped.path());
        let start = Instant::now();
        for index in 1..=200 {
            let store = log.clone();
            let entry = normal(1, index, PAYLOAD_LEN);
            TestConfig::spawn_blocking(move || {
                store.append_entries([entry], redb::Durability::Immediate)
            })
            .await
            .unwrap()
            .unwrap();
        }
        let hopped_elapsed = start.elapsed();
        let mut inline = log.clone();
        let start = Instant::now();
        for index in 201..=400 {
            append(&mut inline, [normal(1, index, PAYLOAD_LEN)])
                .await
                .unwrap();
        }
        let inline_elapsed = start.elapsed();
        let fsync_elapsed = raw_fsync(hopped.path(), 200);

        println!(
            "raft log append, {PAYLOAD_LEN}-byte entries, Durability::Immediate:\n  \
             1000 appends x 1 entry:  {:>8.1} ms total, {:.3} ms per append\n  \
             10 appends x 100 entries: {:>8.1} ms total, {:.3} ms per append \
             ({:.1}x the entries/s)\n  \
             200 single appends inline: {:.3} ms each; via spawn_blocking: {:.3} ms each\n  \
             disk floor, 4 KiB write + fdatasync: {:.3} ms each",
            single_elapsed.as_secs_f64() * 1000.0,
            per_call(single_elapsed, 1000),
            batched_elapsed.as_secs_f64() * 1000.0,
            per_call(batched_elapsed, 10),
            single_elapsed.as_secs_f64() / batched_elapsed.as_secs_f64(),
            per_call(inline_elapsed, 200),
            per_call(hopped_elapsed, 200),
            per_call(fsync_elapsed, 200),
        );
    });
}

/// The WAL's segment files, oldest first.
fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("raft-wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// A WAL-mode log on `dir` with small segments, so a few entries span several.
fn open_small_segments(dir: &Path) -> (RedbStore, Store) {
    let node = RedbStore::open(dir).unwrap();
    let log = RedbLogStore::open_wal_with(node.database(), &dir.join("raft-wal"), 1024).unwrap();
    (node, log)
}

#[test]
fn wal_cuts_a_torn_tail_and_keeps_every_flushed_entry() {
    for tail in [
        vec![7u8; 5], // a frame header cut short
        {
            let mut frame = 300u32.to_le_bytes().to_vec(); // a frame cut short
            frame.extend_from_slice(&11u64.to_le_bytes());
            frame.extend_from_slice(&[1, 2, 3]);
            frame
        },
        vec![0u8; 4096], // zeros to the end
    ] {
        let dir = tempfile::tempdir().unwrap();
        TestConfig::run(async {
            let (_node, mut log) = open(dir.path());
            append(&mut log, (1..=10).map(|i| normal(1, i, 40)))
                .await
                .unwrap();
        });
        let segment = segments(dir.path()).pop().unwrap();
        let whole = std::fs::metadata(&segment).unwrap().len();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        std::io::Write::write_all(&mut file, &tail).unwrap();
        drop(file);
        TestConfig::run(async {
            let (_node, mut log) = open(dir.path());
            assert_eq!(indexes(&mut log).await, (1..=10).collect::<Vec<_>>());
            assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole);
            append(&mut log, [normal(1, 11, 40)]).await.unwrap();
            assert_eq!(indexes(&mut log).await, (1..=11).collect::<Vec<_>>());
        });
    }
}

#[test]
fn wal_damage_before_the_tail_refuses_to_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        append(&mut log, (1..=10).map(|i| normal(1, i, 40)))
            .await
            .unwrap();
    });
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[30] ^= 0x10; // inside the first entry's record: acknowledged entries follow it
    std::fs::write(&segment, &bytes).unwrap();
    let err = RedbStore::open(dir.path()).expect_err("a damaged log must not open");
    let message = err.to_string();
    assert!(
        message.contains("damaged") && message.contains(&segment.display().to_string()),
        "{message}"
    );
}

#[test]
fn wal_segments_roll_truncate_purge_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open_small_segments(dir.path());
        for i in 1..=60 {
            append(&mut log, [normal(1, i, 100)]).await.unwrap();
        }
        let rolled = segments(dir.path()).len();
        assert!(rolled > 3, "{rolled} segments");
        assert_eq!(indexes(&mut log).await, (1..=60).collect::<Vec<_>>());
        // Cut in the middle of the run: later segments go, the log continues from there.
        log.truncate_after(Some(log_id(1, 33))).await.unwrap();
        assert_eq!(indexes(&mut log).await, (1..=33).collect::<Vec<_>>());
        append(&mut log, (34..=40).map(|i| normal(2, i, 100)))
            .await
            .unwrap();
        // A purge drops whole segments below the purge point.
        log.purge(log_id(1, 20)).await.unwrap();
        assert!(segments(dir.path()).len() < rolled);
        assert_eq!(indexes(&mut log).await, (21..=40).collect::<Vec<_>>());
    });
    TestConfig::run(async {
        let (_node, mut log) = open_small_segments(dir.path());
        assert_eq!(
            log.get_log_state().await.unwrap(),
            state(Some((1, 20)), Some((2, 40)))
        );
        assert_eq!(indexes(&mut log).await, (21..=40).collect::<Vec<_>>());
        let terms: Vec<u64> = log
            .try_get_log_entries(33..=34)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id().leader_id.term)
            .collect();
        assert_eq!(terms, vec![1, 2]);
    });
}

#[test]
fn a_log_kept_in_the_redb_table_moves_into_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open_table(dir.path());
        append(&mut log, (1..=25).map(|i| normal(1, i, 30)))
            .await
            .unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
    });
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        assert_eq!(indexes(&mut log).await, (1..=25).collect::<Vec<_>>());
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        assert!(!segments(dir.path()).is_empty());
        let txn = redb::ReadableDatabase::begin_read(log.database().as_ref()).unwrap();
        let table = txn.open_table(LOG_TABLE).unwrap();
        assert!(
            table.first().unwrap().is_none(),
            "the table still holds entries"
        );
    });
}

/// A snapshot can move the purge point past the log's end (openraft purges up to the snapshot's
/// last log id); the next entries start there, and a reopen must accept the jump.
#[test]
fn wal_accepts_a_purge_past_its_end_and_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        append(&mut log, (1..=10).map(|i| normal(1, i, 40)))
            .await
            .unwrap();
        log.purge(log_id(2, 20)).await.unwrap();
        assert_eq!(indexes(&mut log).await, Vec::<u64>::new());
        append(&mut log, (21..=25).map(|i| normal(2, i, 40)))
            .await
            .unwrap();
        assert_eq!(indexes(&mut log).await, (21..=25).collect::<Vec<_>>());
    });
    TestConfig::run(async {
        let (_node, mut log) = open(dir.path());
        assert_eq!(
            log.get_log_state().await.unwrap(),
            state(Some((2, 20)), Some((2, 25)))
        );
        assert_eq!(indexes(&mut log).await, (21..=25).collect::<Vec<_>>());
    });
}
