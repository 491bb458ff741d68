//! The same seed gives the same history twice: byte-identical JSON lines — AP and CP
//! operations (Raft elections included: openraft's RNG is seeded), nemeses and final replica
//! copies. The two runs go on two threads at once (fresh thread-locals, half
//! the wall time). `ISLE_SIM_SEED` picks the seed (default 3).

use std::hash::{DefaultHasher, Hash, Hasher};

use isle_chaos::Keyspace;
use isle_sim::{Nemesis, Schedule, Sides, SimConfig};

fn seed() -> u64 {
    std::env::var("ISLE_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A run with a partition, a crash and a skewed clock: the nemeses most likely to expose
/// hidden nondeterminism (reconnects, restarts, wall-clock reads).
fn config(seed: u64) -> SimConfig {
    let schedule = Schedule::new()
        .window(
            500,
            2_000,
            Nemesis::Partition {
                sides: Sides::One(1),
            },
        )
        .window(1_500, 1_500, Nemesis::Crash { node: 2 })
        .window(
            1_000,
            3_000,
            Nemesis::ClockSkew {
                node: 3,
                skew_ms: 700,
            },
        );
    SimConfig::new(seed)
        .nodes(5)
        .schedule(schedule)
        .run_ms(4_000)
}

fn history(seed: u64) -> String {
    let run = isle_sim::run(config(seed)).unwrap_or_else(|e| panic!("{e}"));
    // Both keyspaces must be in what is compared: acknowledged CP writes and reads included,
    // and the final copies of the AP keys.
    let cp_ok = run.history.outcome_counts(Keyspace::Cp).ok;
    let ap = run.history.of_keyspace(Keyspace::Ap).len();
    assert!(
        cp_ok >= 10 && ap >= 10 && !run.finals.keys.is_empty(),
        "seed {seed}: too few operations to compare ({cp_ok} CP acknowledged, {ap} AP, {} keys \
         with final copies)",
        run.finals.keys.len()
    );
    run.to_json_lines()
        .unwrap_or_else(|e| panic!("seed {seed}: history does not serialize: {e}"))
}

#[test]
fn the_same_seed_gives_the_same_history_twice() {
    // tokio seeds its own RNG (watch wake-ups, select!) only with this cfg (.cargo/config.toml).
    #[allow(unexpected_cfgs)]
    let seeded_tokio = cfg!(tokio_unstable);
    assert!(
        seeded_tokio,
        "built without --cfg tokio_unstable (RUSTFLAGS replaces .cargo/config.toml's flags): \
         tokio's RNG is unseeded and CP runs cannot replay"
    );
    let seed = seed();
    println!("determinism seed {seed} (replay: ISLE_SIM_SEED={seed})");
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| history(seed));
        let second = scope.spawn(|| history(seed));
        let join = |h: std::thread::ScopedJoinHandle<'_, String>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        (join(first), join(second))
    });
    if first != second {
        let line = first
            .lines()
            .zip(second.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(first.lines().count().min(second.lines().count()));
        panic!(
            "seed {seed}: histories diverge at line {line} ({} vs {} bytes):\n{}\nvs\n{}\n(replay: ISLE_SIM_SEED={seed})",
            first.len(),
            second.len(),
            first.lines().nth(line).unwrap_or("<end>"),
            second.lines().nth(line).unwrap_or("<end>"),
        );
    }
    // `DefaultHasher::new` has fixed keys: the fingerprint compares runs across processes and
    // build profiles.
    let mut hasher = DefaultHasher::new();
    first.hash(&mut hasher);
    println!(
        "  {} lines, {} bytes, identical (fingerprint {:016x})",
        first.lines().count(),
        first.len(),
        hasher.finish()
    );
}
