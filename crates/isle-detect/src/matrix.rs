//! Who sees whom: the gossiped matrix of reachability views, and partition classification.
//!
//! Every node gossips its own [`View`] (the peers its failure detector currently deems available)
//! and relays the newest views it holds of others. [`classify`] turns the resulting [`Matrix`]
//! into a [`Partition`] verdict from one node's point of view.

use std::collections::{BTreeMap, BTreeSet};

use isle_types::{Millis, NodeId};
use serde::{Deserialize, Serialize};

/// One node's reachability view: whose heartbeats `origin` currently receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The node whose view this is.
    pub origin: NodeId,
    /// The origin's incarnation; a restart bumps it and supersedes any older version.
    pub incarnation: u64,
    /// Bumped by the origin each time it publishes a new view within one incarnation.
    pub version: u64,
    /// The peers `origin` hears ("origin hears x" for every x in the set).
    pub reachable: BTreeSet<NodeId>,
}

impl View {
    /// The view's position in the (incarnation, version) order; larger is newer.
    pub fn stamp(&self) -> (u64, u64) {
        (self.incarnation, self.version)
    }
}

#[derive(Debug, Clone)]
struct Row {
    view: View,
    learned_at: Millis,
}

/// The newest known view of each origin, with when that version was first learned.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    rows: BTreeMap<NodeId, Row>,
}

impl Matrix {
    /// Keeps `view` if it is newer than the held one for its origin; true if it replaced.
    pub fn merge(&mut self, view: View, now: Millis) -> bool {
        if let Some(row) = self.rows.get(&view.origin)
            && row.view.stamp() >= view.stamp()
        {
            return false;
        }
        self.rows.insert(
            view.origin,
            Row {
                view,
                learned_at: now,
            },
        );
        true
    }

    /// Sets the local node's own row unconditionally (it is always the freshest source).
    pub fn set_own(&mut self, view: View, now: Millis) {
        self.rows.insert(
            view.origin,
            Row {
                view,
                learned_at: now,
            },
        );
    }

    /// All held views in origin order: what to gossip.
    pub fn views(&self) -> impl Iterator<Item = &View> {
        self.rows.values().map(|row| &row.view)
    }

    /// The held view of `origin`, if any.
    pub fn get(&self, origin: NodeId) -> Option<&View> {
        self.rows.get(&origin).map(|row| &row.view)
    }

    /// When the held version of `origin`'s view was first learned.
    pub fn learned_at(&self, origin: NodeId) -> Option<Millis> {
        self.rows.get(&origin).map(|row| row.learned_at)
    }

    /// Drops the row of `origin` (e.g. it left the cluster).
    pub fn forget(&mut self, origin: NodeId) {
        self.rows.remove(&origin);
    }
}

/// What kind of partition the cluster is in, as seen from one node.
///
/// The kinds can co-occur (a one-way link inside an otherwise clean split, say). [`classify`]
/// reports one, by precedence: `Asymmetric` over `Partial` over `Complete`, because a one-way
/// link is the most misleading to protocols and a partial cut the next most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Partition {
    /// Every pair of members hears each other both ways.
    None,
    /// Internally fully connected groups, fully cut from each other.
    Complete {
        /// The groups: the one holding the observer first, the rest in ascending order.
        sides: Vec<BTreeSet<NodeId>>,
    },
    /// Some pairs are cut both ways but still connected through others (A↔B cut, both reach C).
    Partial {
        /// The cut links as (lower, higher), ascending.
        cut: Vec<(NodeId, NodeId)>,
    },
    /// Some links work one way only.
    Asymmetric {
        /// `(from, to)`: messages from `from` do not reach `to`, while `to`'s reach `from`. Ascending.
        one_way: Vec<(NodeId, NodeId)>,
    },
}

/// Classifies the partition among `members` as seen by `me`.
///
/// `fresh` holds the origins whose rows are trustworthy now: the members `me` currently hears,
/// plus `me`. For each ordered pair, "a hears b" is read from a's row if fresh; else from b's row
/// if fresh, assuming symmetry; else from a's last known row; else assumed true (optimistic about
/// what cannot be seen). A fresh origin with no row counts as stale.
pub fn classify(
    me: NodeId,
    members: &BTreeSet<NodeId>,
    matrix: &Matrix,
    fresh: &BTreeSet<NodeId>,
) -> Partition {
    let nodes: Vec<NodeId> = members.iter().copied().collect();
    let hears = |a: NodeId, b: NodeId| hears(matrix, fresh, a, b);

    let mut one_way = Vec::new();
    // Both-ways-connected pairs as an adjacency map; built in ascending order.
    let mut linked: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
    let mut any_cut = false;
    for (i, &a) in nodes.iter().enumerate() {
        for &b in &nodes[i + 1..] {
            match (hears(a, b), hears(b, a)) {
                (true, true) => {
                    linked.entry(a).or_default().insert(b);
                    linked.entry(b).or_default().insert(a);
                }
                // a hears b but b does not hear a: a's messages do not reach b.
                (true, false) => one_way.push((a, b)),
                (false, true) => one_way.push((b, a)),
                (false, false) => any_cut = true,
            }
        }
    }
    if !one_way.is_empty() {
        one_way.sort_unstable();
        return Partition::Asymmetric { one_way };
    }
    if !any_cut {
        return Partition::None;
    }
    let components = components(&nodes, &linked);
    let mut cut = Vec::new();
    for component in &components {
        for (i, &a) in component.iter().enumerate() {
            for &b in component.iter().skip(i + 1) {
                if !linked.get(&a).is_some_and(|peers| peers.contains(&b)) {
                    cut.push((a, b));
                }
            }
        }
    }
    if !cut.is_empty() {
        cut.sort_unstable();
        return Partition::Partial { cut };
    }
    Partition::Complete {
        sides: order_sides(me, components),
    }
}

/// Whether `a` hears `b`, by the freshness rules documented on [`classify`].
fn hears(matrix: &Matrix, fresh: &BTreeSet<NodeId>, a: NodeId, b: NodeId) -> bool {
    let row = |node: NodeId| matrix.get(node);
    let fresh_row = |node: NodeId| row(node).filter(|_| fresh.contains(&node));
    if let Some(view) = fresh_row(a) {
        return view.reachable.contains(&b);
    }
    if let Some(view) = fresh_row(b) {
        return view.reachable.contains(&a);
    }
    row(a).is_none_or(|view| view.reachable.contains(&b))
}

/// Connected components of the `linked` graph over `nodes`, each as a set.
fn components(
    nodes: &[NodeId],
    linked: &BTreeMap<NodeId, BTreeSet<NodeId>>,
) -> Vec<BTreeSet<NodeId>> {
    let mut seen = BTreeSet::new();
    let mut components = Vec::new();
    for &start in nodes {
        if !seen.insert(start) {
            continue;
        }
        let mut component = BTreeSet::from([start]);
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &peer in linked.get(&node).into_iter().flatten() {
                if seen.insert(peer) {
                    component.insert(peer);
                    stack.push(peer);
                }
            }
        }
        components.push(component);
    }
    components
}

/// Sorts sides ascending, then moves the one containing `me` (if any) to the front.
fn order_sides(me: NodeId, mut sides: Vec<BTreeSet<NodeId>>) -> Vec<BTreeSet<NodeId>> {
    sides.sort();
    if let Some(mine) = sides.iter().position(|side| side.contains(&me)) {
        let side = sides.remove(mine);
        sides.insert(0, side);
    }
    sides
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().map(|&id| NodeId(id)).collect()
    }

    fn view(origin: u64, version: u64, reachable: &[u64]) -> View {
        View {
            origin: NodeId(origin),
            incarnation: 1,
            version,
            reachable: set(reachable),
        }
    }

    fn matrix(views: &[View]) -> Matrix {
        let mut matrix = Matrix::default();
        for view in views {
            matrix.merge(view.clone(), Millis(0));
        }
        matrix
    }

    fn sides(groups: &[&[u64]]) -> Partition {
        Partition::Complete {
            sides: groups.iter().map(|group| set(group)).collect(),
        }
    }

    #[test]
    fn merge_keeps_the_newer_view() {
        let mut matrix = Matrix::default();
        assert!(matrix.merge(view(1, 5, &[2]), Millis(10)));
        assert!(!matrix.merge(view(1, 5, &[3]), Millis(20)));
        assert!(!matrix.merge(view(1, 4, &[3]), Millis(20)));
        assert_eq!(matrix.get(NodeId(1)), Some(&view(1, 5, &[2])));
        assert_eq!(matrix.learned_at(NodeId(1)), Some(Millis(10)));
        let restarted = View {
            incarnation: 2,
            version: 0,
            ..view(1, 0, &[3])
        };
        assert!(matrix.merge(restarted.clone(), Millis(30)));
        assert_eq!(matrix.get(NodeId(1)), Some(&restarted));
        assert_eq!(matrix.learned_at(NodeId(1)), Some(Millis(30)));
    }

    #[test]
    fn set_own_always_replaces_and_forget_removes() {
        let mut matrix = matrix(&[view(1, 9, &[2]), view(2, 1, &[1])]);
        matrix.set_own(view(1, 3, &[]), Millis(50));
        assert_eq!(matrix.get(NodeId(1)), Some(&view(1, 3, &[])));
        assert_eq!(matrix.learned_at(NodeId(1)), Some(Millis(50)));
        let origins: Vec<NodeId> = matrix.views().map(|v| v.origin).collect();
        assert_eq!(origins, vec![NodeId(1), NodeId(2)]);
        matrix.forget(NodeId(2));
        assert_eq!(matrix.get(NodeId(2)), None);
        assert_eq!(matrix.views().count(), 1);
    }

    /// Nodes 1–3 fresh seeing only each other; 4, 5 with stale all-connected rows (old version).
    fn three_two_split(me: u64) -> Partition {
        let all = [1, 2, 3, 4, 5];
        let (ours, theirs): (&[u64], &[u64]) = if me <= 3 {
            (&[1, 2, 3], &[4, 5])
        } else {
            (&[4, 5], &[1, 2, 3])
        };
        let mut views: Vec<View> = ours.iter().map(|&id| view(id, 2, ours)).collect();
        views.extend(theirs.iter().map(|&id| view(id, 1, &all)));
        let fresh = set(ours);
        classify(NodeId(me), &set(&all), &matrix(&views), &fresh)
    }

    #[test]
    fn three_two_split_from_the_majority() {
        assert_eq!(three_two_split(1), sides(&[&[1, 2, 3], &[4, 5]]));
    }

    #[test]
    fn three_two_split_from_the_minority() {
        assert_eq!(three_two_split(4), sides(&[&[4, 5], &[1, 2, 3]]));
    }

    #[test]
    fn crashed_node_is_its_own_side() {
        let alive = [1, 2, 3, 4];
        let mut views: Vec<View> = alive.iter().map(|&id| view(id, 2, &alive)).collect();
        views.push(view(5, 1, &[1, 2, 3, 4, 5]));
        let partition = classify(
            NodeId(1),
            &set(&[1, 2, 3, 4, 5]),
            &matrix(&views),
            &set(&alive),
        );
        assert_eq!(partition, sides(&[&[1, 2, 3, 4], &[5]]));
    }

    #[test]
    fn cut_pair_bridged_by_a_third_is_partial() {
        let (a, b, c) = (1, 2, 3);
        let views = [
            view(a, 1, &[a, c]),
            view(b, 1, &[b, c]),
            view(c, 1, &[a, b, c]),
        ];
        let partition = classify(
            NodeId(c),
            &set(&[a, b, c]),
            &matrix(&views),
            &set(&[a, b, c]),
        );
        assert_eq!(
            partition,
            Partition::Partial {
                cut: vec![(NodeId(a), NodeId(b))]
            }
        );
    }

    #[test]
    fn dropped_one_way_is_asymmetric() {
        let views = [view(1, 1, &[2, 3]), view(2, 1, &[3]), view(3, 1, &[1, 2])];
        let partition = classify(
            NodeId(1),
            &set(&[1, 2, 3]),
            &matrix(&views),
            &set(&[1, 2, 3]),
        );
        assert_eq!(
            partition,
            Partition::Asymmetric {
                one_way: vec![(NodeId(1), NodeId(2))]
            }
        );
    }

    #[test]
    fn asymmetric_wins_over_a_cut() {
        // 1→2 one-way and 3 cut from everyone: both present, asymmetric reported.
        let views = [view(1, 1, &[2]), view(2, 1, &[]), view(3, 1, &[])];
        let partition = classify(
            NodeId(1),
            &set(&[1, 2, 3]),
            &matrix(&views),
            &set(&[1, 2, 3]),
        );
        assert!(matches!(partition, Partition::Asymmetric { .. }));
    }

    #[test]
    fn healthy_single_and_unseen_are_none() {
        let all = [1, 2, 3];
        let healthy: Vec<View> = all.iter().map(|&id| view(id, 1, &all)).collect();
        let none = Partition::None;
        assert_eq!(
            classify(NodeId(1), &set(&all), &matrix(&healthy), &set(&all)),
            none
        );
        assert_eq!(
            classify(NodeId(1), &set(&[1]), &Matrix::default(), &set(&[1])),
            none
        );
        assert_eq!(
            classify(NodeId(1), &set(&all), &Matrix::default(), &set(&[1])),
            none
        );
        // Only our own row exists, hearing everyone: the unseen rows are taken as symmetric.
        let own_only = matrix(&[view(1, 1, &all)]);
        assert_eq!(classify(NodeId(1), &set(&all), &own_only, &set(&all)), none);
        assert_eq!(classify(NodeId(1), &set(&[]), &own_only, &set(&[1])), none);
    }

    #[test]
    fn partition_serializes_with_a_kind_tag() {
        let json = serde_json::to_value(sides(&[&[1], &[2]])).ok();
        assert_eq!(
            json,
            Some(serde_json::json!({"kind": "complete", "sides": [[1], [2]]}))
        );
        let none = serde_json::to_value(Partition::None).ok();
        assert_eq!(none, Some(serde_json::json!({"kind": "none"})));
    }

    fn arbitrary_matrix() -> impl Strategy<Value = (Vec<View>, BTreeSet<NodeId>, u64)> {
        let row = (
            1u64..8,
            0u64..3,
            proptest::collection::btree_set(1u64..8, 0..8),
        );
        (
            proptest::collection::vec(row, 0..12),
            proptest::collection::btree_set(1u64..8, 0..8),
            1u64..8,
        )
            .prop_map(|(rows, fresh, me)| {
                let views = rows
                    .into_iter()
                    .map(|(origin, version, reachable)| View {
                        origin: NodeId(origin),
                        incarnation: 0,
                        version,
                        reachable: reachable.into_iter().map(NodeId).collect(),
                    })
                    .collect();
                (views, fresh.into_iter().map(NodeId).collect(), me)
            })
    }

    proptest! {
        #[test]
        fn classify_is_total_and_deterministic(
            (views, fresh, me) in arbitrary_matrix(),
            members in proptest::collection::btree_set(1u64..8, 0..8),
        ) {
            let members: BTreeSet<NodeId> = members.into_iter().map(NodeId).collect();
            let matrix = matrix(&views);
            let first = classify(NodeId(me), &members, &matrix, &fresh);
            let second = classify(NodeId(me), &members, &matrix.clone(), &fresh);
            prop_assert_eq!(first, second);
        }

        #[test]
        fn disjoint_cliques_are_a_complete_partition(
            groups in proptest::collection::vec(0u8..4, 1..10),
            me_index in 0usize..10,
        ) {
            // Node i+1 belongs to clique groups[i].
            let mut cliques: BTreeMap<u8, BTreeSet<NodeId>> = BTreeMap::new();
            for (i, &group) in groups.iter().enumerate() {
                cliques.entry(group).or_default().insert(NodeId(i as u64 + 1));
            }
            let members: BTreeSet<NodeId> = cliques.values().flatten().copied().collect();
            let mut matrix = Matrix::default();
            for clique in cliques.values() {
                for &node in clique {
                    let own = View { origin: node, incarnation: 1, version: 1, reachable: clique.clone() };
                    matrix.merge(own, Millis(0));
                }
            }
            let me = NodeId((me_index % groups.len()) as u64 + 1);
            let partition = classify(me, &members, &matrix, &members);
            if cliques.len() == 1 {
                prop_assert_eq!(partition, Partition::None);
            } else {
                let mut expected: Vec<BTreeSet<NodeId>> = cliques.into_values().collect();
                expected.sort();
                let mine = expected.iter().position(|side| side.contains(&me));
                prop_assert!(mine.is_some());
                let side = expected.remove(mine.unwrap_or(0));
                expected.insert(0, side);
                prop_assert_eq!(partition, Partition::Complete { sides: expected });
            }
        }
    }
}
