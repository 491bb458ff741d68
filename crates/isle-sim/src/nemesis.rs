//! The nemesis vocabulary: what can go wrong, as plain data (serde), shared by the simulation
//! engine and, later, the process engine. A nemesis says *what* happens; each engine decides
//! how to make it happen (here: turmoil link states, host crash/bounce, a skewed clock).
//!
//! Nemeses compose: the harness keeps the set of active ones and applies the union of their
//! [`Effects`] (a link cut by two nemeses stays cut until both stop).
//!
//! Nodes are numbered `1..=n`.

use std::collections::{BTreeMap, BTreeSet};

use isle_env::Random;
use serde::{Deserialize, Serialize};

/// Who is on which side of a complete partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sides {
    /// One node alone; everyone else together.
    One(u64),
    /// The lowest ⌊n/2⌋+1 ids against the rest.
    MajorityMinority,
    /// No side holds a majority: two equal halves, plus a lone node when `n` is odd.
    Even,
    /// Explicit groups; nodes not listed form one more group together.
    Groups(Vec<Vec<u64>>),
}

impl Sides {
    /// The groups for a cluster of `n` nodes; no node is in two groups.
    pub fn groups(&self, n: u64) -> Vec<BTreeSet<u64>> {
        let all: BTreeSet<u64> = (1..=n).collect();
        let groups: Vec<BTreeSet<u64>> = match self {
            Sides::One(node) => {
                let alone: BTreeSet<u64> =
                    [*node].into_iter().filter(|id| all.contains(id)).collect();
                vec![alone.clone(), all.difference(&alone).copied().collect()]
            }
            Sides::MajorityMinority => {
                let majority = n / 2 + 1;
                vec![(1..=majority).collect(), (majority + 1..=n).collect()]
            }
            Sides::Even => {
                let half = n / 2;
                let mut groups = vec![(1..=half).collect(), (half + 1..=2 * half).collect()];
                if n % 2 == 1 {
                    groups.push([n].into_iter().collect());
                }
                groups
            }
            Sides::Groups(listed) => {
                let mut seen = BTreeSet::new();
                let mut groups: Vec<BTreeSet<u64>> = listed
                    .iter()
                    .map(|group| {
                        group
                            .iter()
                            .copied()
                            .filter(|id| all.contains(id) && seen.insert(*id))
                            .collect()
                    })
                    .collect();
                groups.push(all.difference(&seen).copied().collect());
                groups
            }
        };
        groups.into_iter().filter(|g| !g.is_empty()).collect()
    }
}

/// One fault. `Restart` is instantaneous; every other nemesis lasts from its start to its stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Nemesis {
    /// A complete partition: no messages between groups, both ways.
    Partition {
        /// The groups.
        sides: Sides,
    },
    /// Every node sees a majority, and no two nodes see the same one: node `i` hears the
    /// ⌊n/2⌋+1 nodes of the ring around it (for n = 5: i-1, i, i+1). With an odd majority the
    /// cuts are symmetric; for n = 3 they are one-way (node `i` hears `i+1` but not `i-1`).
    MajoritiesRing,
    /// Two halves that do not hear each other, and one node (the middle id) that hears both.
    Bridge,
    /// A partial partition: these pairs are cut, both ways; every other link works.
    Cut {
        /// The pairs.
        links: Vec<[u64; 2]>,
    },
    /// A one-way cut: messages from any node of `from` to any node of `to` are dropped;
    /// the reverse direction works.
    OneWay {
        /// Senders whose messages are lost.
        from: Vec<u64>,
        /// Receivers that do not get them.
        to: Vec<u64>,
    },
    /// Lossy, slow links between `nodes` (all nodes when empty) and everyone: each message
    /// fails with `fail_rate` (on turmoil's TCP a lost segment stalls the connection until the
    /// detector resets it), and latency reaches up to `latency_ms_max`.
    Flaky {
        /// The nodes whose links are flaky; empty: every link.
        #[serde(default)]
        nodes: Vec<u64>,
        /// Probability that a message is dropped.
        fail_rate: f64,
        /// Highest message latency, ms.
        latency_ms_max: u64,
    },
    /// The node's process dies (kill -9): in-flight work is lost, its disk (the in-memory redb
    /// database, kept across the crash) survives. Stopping the nemesis restarts it.
    Crash {
        /// The node.
        node: u64,
    },
    /// The node's process is killed and immediately started again on the same disk.
    Restart {
        /// The node.
        node: u64,
    },
    /// The node's wall clock is off by `skew_ms` (positive: ahead); stopping it jumps back.
    ClockSkew {
        /// The node.
        node: u64,
        /// The skew, ms.
        skew_ms: i64,
    },
    /// The node's process is frozen (SIGSTOP; stopping the nemesis sends SIGCONT): it neither
    /// sends nor handles anything, its peers' messages wait in its socket buffers and are all
    /// handled at once when it resumes — the zombie leader who wakes up believing it still
    /// leads. A simulation cannot freeze a host; see the engine for what it does instead.
    Pause {
        /// The node.
        node: u64,
    },
    /// Frames on every link of `nodes` are corrupted with probability `rate` (a bit flipped
    /// after the checksum, so the receiver must reject them).
    Corrupt {
        /// The nodes whose links corrupt frames.
        nodes: Vec<u64>,
        /// Probability that one frame is corrupted, in `[0, 1]`.
        rate: f64,
    },
    /// The node is removed from the CP voters (a membership change through the CP keyspace's
    /// membership API); stopping the nemesis adds it back.
    Membership {
        /// The node.
        node: u64,
    },
}

/// A flaky link's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlakyLink {
    /// Probability that a message is dropped.
    pub fail_rate: f64,
    /// Highest message latency, ms.
    pub latency_ms_max: u64,
}

/// What a set of active nemeses does to the cluster, in the engine's terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Effects {
    /// Directed links `(from, to)` whose messages are dropped.
    pub cuts: BTreeSet<(u64, u64)>,
    /// Flaky links, by unordered pair `(low, high)`.
    pub flaky: BTreeMap<(u64, u64), FlakyLink>,
    /// Nodes that are down.
    pub down: BTreeSet<u64>,
    /// Wall-clock skew by node, ms.
    pub skew_ms: BTreeMap<u64, i64>,
    /// Nodes whose process is frozen.
    pub paused: BTreeSet<u64>,
    /// Frame corruption probability on every link of a node, by node (the highest asked).
    pub corrupt: BTreeMap<u64, f64>,
    /// Nodes removed from the CP voters.
    pub removed: BTreeSet<u64>,
}

impl Effects {
    /// The union of what every nemesis in `active` does to a cluster of `n` nodes.
    pub fn of<'a>(active: impl IntoIterator<Item = &'a Nemesis>, n: u64) -> Effects {
        let mut effects = Effects::default();
        for nemesis in active {
            nemesis.add_effects(n, &mut effects);
        }
        effects
    }

    /// Whether `from` can send to `to` now (both up and running, the link not cut). A
    /// paused node's messages are held, not lost: they arrive when it resumes.
    pub fn delivers(&self, from: u64, to: u64) -> bool {
        !self.cuts.contains(&(from, to))
            && ![from, to]
                .iter()
                .any(|id| self.down.contains(id) || self.paused.contains(id))
    }
}

impl Nemesis {
    /// Whether the nemesis is instantaneous (has no stop).
    pub fn is_instant(&self) -> bool {
        matches!(self, Nemesis::Restart { .. })
    }

    /// A short, stable name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Nemesis::Partition { .. } => "partition",
            Nemesis::MajoritiesRing => "majorities-ring",
            Nemesis::Bridge => "bridge",
            Nemesis::Cut { .. } => "cut",
            Nemesis::OneWay { .. } => "one-way",
            Nemesis::Flaky { .. } => "flaky",
            Nemesis::Crash { .. } => "crash",
            Nemesis::Restart { .. } => "restart",
            Nemesis::ClockSkew { .. } => "clock-skew",
            Nemesis::Pause { .. } => "pause",
            Nemesis::Corrupt { .. } => "corrupt",
            Nemesis::Membership { .. } => "membership",
        }
    }

    fn add_effects(&self, n: u64, effects: &mut Effects) {
        let all: Vec<u64> = (1..=n).collect();
        let mut cut_both = |a: u64, b: u64| {
            if a != b {
                effects.cuts.insert((a, b));
                effects.cuts.insert((b, a));
            }
        };
        match self {
            Nemesis::Partition { sides } => {
                let groups = sides.groups(n);
                for (i, left) in groups.iter().enumerate() {
                    for right in groups.iter().skip(i + 1) {
                        for &a in left {
                            for &b in right {
                                cut_both(a, b);
                            }
                        }
                    }
                }
            }
            Nemesis::MajoritiesRing => {
                for (to, from) in majorities_ring(n) {
                    effects.cuts.insert((from, to));
                }
            }
            Nemesis::Bridge => {
                let bridge = n.div_ceil(2);
                for a in (1..bridge).filter(|_| n >= 3) {
                    for b in bridge + 1..=n {
                        cut_both(a, b);
                    }
                }
            }
            Nemesis::Cut { links } => {
                for [a, b] in links {
                    if all.contains(a) && all.contains(b) {
                        cut_both(*a, *b);
                    }
                }
            }
            Nemesis::OneWay { from, to } => {
                for &a in from.iter().filter(|id| all.contains(id)) {
                    for &b in to.iter().filter(|id| all.contains(id) && **id != a) {
                        effects.cuts.insert((a, b));
                    }
                }
            }
            Nemesis::Flaky {
                nodes,
                fail_rate,
                latency_ms_max,
            } => {
                let flaky_nodes: BTreeSet<u64> = if nodes.is_empty() {
                    all.iter().copied().collect()
                } else {
                    nodes.iter().copied().collect()
                };
                let link = FlakyLink {
                    fail_rate: *fail_rate,
                    latency_ms_max: *latency_ms_max,
                };
                for &a in &all {
                    for &b in all.iter().filter(|&&b| b > a) {
                        if flaky_nodes.contains(&a) || flaky_nodes.contains(&b) {
                            let entry = effects.flaky.entry((a, b)).or_insert(link);
                            entry.fail_rate = entry.fail_rate.max(link.fail_rate);
                            entry.latency_ms_max = entry.latency_ms_max.max(link.latency_ms_max);
                        }
                    }
                }
            }
            Nemesis::Crash { node } => {
                if all.contains(node) {
                    effects.down.insert(*node);
                }
            }
            Nemesis::Restart { .. } => {}
            Nemesis::ClockSkew { node, skew_ms } => {
                *effects.skew_ms.entry(*node).or_insert(0) += skew_ms;
            }
            Nemesis::Pause { node } => {
                if all.contains(node) {
                    effects.paused.insert(*node);
                }
            }
            Nemesis::Corrupt { nodes, rate } => {
                let rate = if rate.is_nan() {
                    0.0
                } else {
                    rate.clamp(0.0, 1.0)
                };
                for &node in nodes.iter().filter(|id| all.contains(id)) {
                    let entry = effects.corrupt.entry(node).or_insert(rate);
                    *entry = entry.max(rate);
                }
            }
            Nemesis::Membership { node } => {
                if all.contains(node) {
                    effects.removed.insert(*node);
                }
            }
        }
    }

    /// A random nemesis for a cluster of `n` nodes, drawn from the whole vocabulary.
    pub fn random(rng: &mut impl Random, n: u64) -> Nemesis {
        let node = 1 + rng.below(n);
        match rng.below(KINDS) {
            0 => Nemesis::Partition {
                sides: Sides::One(node),
            },
            1 => Nemesis::Partition {
                sides: Sides::MajorityMinority,
            },
            2 => Nemesis::Partition { sides: Sides::Even },
            3 => Nemesis::MajoritiesRing,
            4 => Nemesis::Bridge,
            5 => {
                // Any other node: an offset of 1..n-1 around the ring.
                let other = (node + rng.below(n - 1)) % n + 1;
                Nemesis::Cut {
                    links: vec![[node, other]],
                }
            }
            6 => Nemesis::OneWay {
                from: vec![node],
                to: (1..=n).filter(|id| *id != node).collect(),
            },
            7 => Nemesis::Flaky {
                nodes: vec![node],
                fail_rate: [0.001, 0.01, 0.05][rng.below(3) as usize],
                latency_ms_max: 50 + rng.below(200),
            },
            8 => Nemesis::Crash { node },
            9 => Nemesis::Restart { node },
            10 => Nemesis::ClockSkew {
                node,
                skew_ms: [-30_000, -500, 500, 30_000][rng.below(4) as usize],
            },
            11 => Nemesis::Pause { node },
            12 => Nemesis::Corrupt {
                nodes: vec![node],
                rate: [0.01, 0.1, 0.5][rng.below(3) as usize],
            },
            _ => Nemesis::Membership { node },
        }
    }
}

/// How many kinds of nemesis [`Nemesis::random`] draws from.
const KINDS: u64 = 14;

/// `(to, from)` pairs that node `to` does not hear in a majorities ring of `n` nodes.
fn majorities_ring(n: u64) -> Vec<(u64, u64)> {
    let majority = n / 2 + 1;
    let behind = (majority - 1) / 2;
    let mut unheard = Vec::new();
    for i in 0..n {
        // Node i hears i-behind ..= i-behind+majority-1 (mod n).
        let hears: BTreeSet<u64> = (0..majority).map(|d| (i + n - behind + d) % n).collect();
        for j in (0..n).filter(|j| !hears.contains(j)) {
            unheard.push((i + 1, j + 1));
        }
    }
    unheard
}

/// What happens at a moment of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The nemesis begins (for `Restart`: happens).
    Start(Nemesis),
    /// An active nemesis equal to this one ends.
    Stop(Nemesis),
    /// Every active nemesis ends.
    HealAll,
}

/// One step of a schedule: at `at_ms` after the workload starts, `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When, in ms after the workload starts.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

/// When which nemesis starts and stops. Steps at the same time run in list order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The steps, in time order.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// An empty schedule (no faults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `nemesis` from `at_ms` for `for_ms` (an instantaneous one just happens at `at_ms`).
    pub fn window(mut self, at_ms: u64, for_ms: u64, nemesis: Nemesis) -> Self {
        if !nemesis.is_instant() {
            self.steps.push(Step {
                at_ms: at_ms + for_ms,
                action: Action::Stop(nemesis.clone()),
            });
        }
        self.steps.push(Step {
            at_ms,
            action: Action::Start(nemesis),
        });
        self.steps.sort_by_key(|step| step.at_ms);
        self
    }

    /// Adds one step.
    pub fn at(mut self, at_ms: u64, action: Action) -> Self {
        self.steps.push(Step { at_ms, action });
        self.steps.sort_by_key(|step| step.at_ms);
        self
    }

    /// One to three random nemesis windows inside `run_ms`, each 1–4 s long, possibly
    /// overlapping.
    pub fn random(rng: &mut impl Random, n: u64, run_ms: u64) -> Schedule {
        let mut schedule = Schedule::new();
        let windows = 1 + rng.below(3);
        let latest_start_ms = run_ms.saturating_sub(1_500).max(1);
        for _ in 0..windows {
            let nemesis = Nemesis::random(rng, n);
            let at_ms = 300 + rng.below(latest_start_ms);
            let for_ms = (1_000 + rng.below(3_000)).min(run_ms.saturating_sub(at_ms).max(1));
            schedule = schedule.window(at_ms, for_ms, nemesis);
        }
        schedule
    }

    /// Every distinct nemesis the schedule starts.
    pub fn nemeses(&self) -> Vec<&Nemesis> {
        let mut seen: Vec<&Nemesis> = Vec::new();
        for step in &self.steps {
            if let Action::Start(nemesis) = &step.action
                && !seen.contains(&nemesis)
            {
                seen.push(nemesis);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[u64]) -> BTreeSet<u64> {
        items.iter().copied().collect()
    }

    fn cuts(nemesis: Nemesis, n: u64) -> BTreeSet<(u64, u64)> {
        Effects::of([&nemesis], n).cuts
    }

    /// Who `node` hears under `effects`, itself included.
    fn hears(effects: &Effects, node: u64, n: u64) -> BTreeSet<u64> {
        (1..=n)
            .filter(|from| effects.delivers(*from, node))
            .collect()
    }

    #[test]
    fn sides_split_the_cluster() {
        assert_eq!(Sides::One(2).groups(3), vec![ids(&[2]), ids(&[1, 3])]);
        assert_eq!(
            Sides::MajorityMinority.groups(5),
            vec![ids(&[1, 2, 3]), ids(&[4, 5])]
        );
        assert_eq!(
            Sides::Even.groups(5),
            vec![ids(&[1, 2]), ids(&[3, 4]), ids(&[5])]
        );
        assert_eq!(
            Sides::Groups(vec![vec![1, 4]]).groups(5),
            vec![ids(&[1, 4]), ids(&[2, 3, 5])]
        );
    }

    #[test]
    fn a_complete_partition_cuts_every_link_across_sides_both_ways() {
        let cut = cuts(
            Nemesis::Partition {
                sides: Sides::MajorityMinority,
            },
            5,
        );
        assert_eq!(cut.len(), 2 * 3 * 2);
        assert!(cut.contains(&(1, 4)) && cut.contains(&(4, 1)));
        assert!(!cut.contains(&(1, 2)) && !cut.contains(&(4, 5)));
    }

    #[test]
    fn majorities_ring_gives_every_node_a_different_majority() {
        for n in [3, 5] {
            let effects = Effects::of([&Nemesis::MajoritiesRing], n);
            let views: BTreeSet<BTreeSet<u64>> =
                (1..=n).map(|node| hears(&effects, node, n)).collect();
            assert_eq!(views.len() as u64, n, "n={n}: {views:?}");
            assert!(
                views.iter().all(|v| v.len() as u64 == n / 2 + 1),
                "{views:?}"
            );
        }
        // n = 5: symmetric (node 1 hears 5, 1, 2).
        let effects = Effects::of([&Nemesis::MajoritiesRing], 5);
        assert_eq!(hears(&effects, 1, 5), ids(&[5, 1, 2]));
        assert!(
            effects
                .cuts
                .iter()
                .all(|(a, b)| effects.cuts.contains(&(*b, *a)))
        );
    }

    #[test]
    fn a_bridge_hears_both_halves_which_do_not_hear_each_other() {
        let effects = Effects::of([&Nemesis::Bridge], 5);
        assert_eq!(hears(&effects, 3, 5), ids(&[1, 2, 3, 4, 5]));
        assert_eq!(hears(&effects, 1, 5), ids(&[1, 2, 3]));
        assert_eq!(hears(&effects, 5, 5), ids(&[3, 4, 5]));
        let three = Effects::of([&Nemesis::Bridge], 3);
        assert_eq!(three.cuts, BTreeSet::from([(1, 3), (3, 1)]));
    }

    #[test]
    fn one_way_cuts_only_one_direction_and_effects_compose() {
        let one_way = Nemesis::OneWay {
            from: vec![1],
            to: vec![2, 3],
        };
        let crash = Nemesis::Crash { node: 3 };
        let effects = Effects::of([&one_way, &crash], 3);
        assert_eq!(effects.cuts, BTreeSet::from([(1, 2), (1, 3)]));
        assert!(effects.delivers(2, 1) && !effects.delivers(1, 2));
        assert_eq!(effects.down, ids(&[3]));
        assert!(!effects.delivers(2, 3));
    }

    #[test]
    fn pause_corrupt_and_membership_have_their_own_effects() {
        let pause = Nemesis::Pause { node: 2 };
        let corrupt = Nemesis::Corrupt {
            nodes: vec![1, 3, 9],
            rate: 0.1,
        };
        let more = Nemesis::Corrupt {
            nodes: vec![3],
            rate: 0.5,
        };
        let member = Nemesis::Membership { node: 3 };
        let effects = Effects::of([&pause, &corrupt, &more, &member], 3);
        assert_eq!(effects.paused, ids(&[2]));
        assert_eq!(effects.corrupt, BTreeMap::from([(1, 0.1), (3, 0.5)]));
        assert_eq!(effects.removed, ids(&[3]));
        assert!(effects.cuts.is_empty() && effects.down.is_empty());
        assert!(!effects.delivers(1, 2) && !effects.delivers(2, 3));
        assert!(effects.delivers(1, 3));
        for (nemesis, json) in [
            (pause, r#"{"kind":"pause","node":2}"#),
            (
                Nemesis::Corrupt {
                    nodes: vec![1],
                    rate: 0.5,
                },
                r#"{"kind":"corrupt","nodes":[1],"rate":0.5}"#,
            ),
            (member, r#"{"kind":"membership","node":3}"#),
        ] {
            assert_eq!(serde_json::to_string(&nemesis).expect("serialize"), json);
            let back: Nemesis = serde_json::from_str(json).expect("deserialize");
            assert_eq!(back, nemesis);
        }
    }

    #[test]
    fn random_nemeses_cover_the_whole_vocabulary() {
        let mut rng = isle_env::SeededRandom::new(3);
        let names: BTreeSet<&str> = (0..2_000)
            .map(|_| Nemesis::random(&mut rng, 5).name())
            .collect();
        assert_eq!(names.len(), 12, "{names:?}");
    }

    #[test]
    fn nemeses_and_schedules_round_trip_through_json() {
        let schedule = Schedule::new()
            .window(
                1_000,
                2_000,
                Nemesis::Partition {
                    sides: Sides::One(2),
                },
            )
            .window(
                500,
                100,
                Nemesis::Flaky {
                    nodes: vec![],
                    fail_rate: 0.01,
                    latency_ms_max: 200,
                },
            )
            .window(1_500, 0, Nemesis::Restart { node: 1 })
            .at(5_000, Action::HealAll);
        let json = serde_json::to_string(&schedule).expect("serialize");
        let back: Schedule = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, schedule);
        assert!(
            json.contains(r#"{"kind":"partition","sides":{"one":2}}"#),
            "{json}"
        );
        let at: Vec<u64> = schedule.steps.iter().map(|s| s.at_ms).collect();
        assert_eq!(at, vec![500, 600, 1_000, 1_500, 3_000, 5_000]);
    }

    #[test]
    fn random_schedules_stay_inside_the_run_and_pair_starts_with_stops() {
        let mut rng = isle_env::SeededRandom::new(9);
        for _ in 0..200 {
            let schedule = Schedule::random(&mut rng, 5, 8_000);
            for step in &schedule.steps {
                assert!(step.at_ms <= 8_000, "{schedule:?}");
            }
            for nemesis in schedule.nemeses() {
                let stops = schedule
                    .steps
                    .iter()
                    .any(|s| s.action == Action::Stop(nemesis.clone()));
                assert_eq!(stops, !nemesis.is_instant(), "{schedule:?}");
            }
        }
    }
}
