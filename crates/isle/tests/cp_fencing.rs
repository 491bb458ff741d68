//! The CP keyspace's two hardest promises on real `isle node` processes on loopback:
//!
//! - a **zombie leader** (SIGSTOPped while its client holds a lock, resumed after another client
//!   was granted the lock under a new leader) cannot apply a write fenced with the old token:
//!   fencing tokens alone protect the data, no STONITH involved;
//! - **membership** grows 3 → 5 and shrinks back to 3 under a steady write load without losing
//!   an acknowledged write.
//!
//! The nodes are started here by the lab (not through `common::LocalCluster`): the membership
//! test adds nodes 4 and 5 to a running cluster, seeded with node 1 only, and the zombie test
//! pauses (SIGSTOP) and resumes (SIGCONT) the leader's process. Every wait is a condition with a
//! deadline; measured times are printed, never asserted. Dropping a [`Nodes`] kills every node,
//! and prints the node logs first if the test is panicking.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{status, wait_for};
use isle_lab::{Node, NodeSpec, spare_port};
use serde_json::{Value, json};

/// Generous limits: CI is a loaded 2-core box running debug builds.
const START_LIMIT: Duration = Duration::from_secs(40);
const ELECT_LIMIT: Duration = Duration::from_secs(30);
const RETRY_LIMIT: Duration = Duration::from_secs(30);
const MEMBERSHIP_LIMIT: Duration = Duration::from_secs(40);
/// Above a node's own bound (5 s for a leader, then 5 s for its answer), so the node's typed
/// `Timeout` is what the client sees.
const CP_CLIENT_TIMEOUT: Duration = Duration::from_secs(12);

// ---------------------------------------------------------------------------------------------
// Node processes.

/// The node processes of one test, by id, and the temp dir holding their data dirs and logs.
/// Dropped: every node is killed (SIGKILL, which ends a paused process too); on a panic the
/// logs are printed first.
struct Nodes {
    nodes: BTreeMap<u64, Node>,
    dir: tempfile::TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- node logs ----\n{}",
                common::logs_tail(self.dir.path(), 150)
            );
        }
        for node in self.nodes.values_mut() {
            node.kill9();
        }
    }
}

/// How one node of this file runs: at `peer` and `http`, no etcd gRPC or RESP, no fault
/// injection, logging at `ISLE_LOG=info`.
fn node_spec(id: u64, peer: String, http: String, data_dir: PathBuf) -> NodeSpec {
    let mut spec = NodeSpec::new(id, peer, http, data_dir);
    spec.env = vec![("ISLE_LOG".into(), "info".into())];
    spec
}

/// Starts `spec` with the `isle` binary of this test run.
fn start_node(spec: NodeSpec) -> Node {
    let id = spec.id;
    Node::start(spec, Path::new(common::isle_bin()))
        .unwrap_or_else(|e| panic!("starting node {id}: {e}"))
}

/// A loopback address on a spare port, distinct from every one in `taken`.
fn fresh_addr(taken: &mut BTreeSet<u16>) -> String {
    loop {
        let port = spare_port();
        if taken.insert(port) {
            return format!("127.0.0.1:{port}");
        }
    }
}

impl Nodes {
    /// Starts `n` nodes forming the Raft group (`--bootstrap-expect n`), every node seeded with
    /// every other; returns once all serve HTTP. A start that loses a port race (a node exits,
    /// e.g. address in use) is retried on new ports.
    fn start(n: u64) -> Nodes {
        let mut failures = Vec::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut taken = BTreeSet::new();
            let mut specs: Vec<NodeSpec> = (1..=n)
                .map(|id| {
                    let peer = fresh_addr(&mut taken);
                    let http = fresh_addr(&mut taken);
                    let mut spec = node_spec(id, peer, http, dir.path().join(format!("n{id}")));
                    spec.bootstrap_expect = Some(n);
                    spec
                })
                .collect();
            isle_lab::mesh(&mut specs);
            let mut nodes = Nodes {
                nodes: specs
                    .into_iter()
                    .map(|spec| (spec.id, start_node(spec)))
                    .collect(),
                dir,
            };
            match (1..=n).try_for_each(|id| nodes.wait_serving(id)) {
                Ok(()) => return nodes,
                Err(why) => {
                    eprintln!("cluster start failed, retrying on other ports: {why}");
                    failures.push(why);
                }
            }
        }
        panic!("could not start {n} nodes: {failures:#?}");
    }

    /// Starts node `id` with no bootstrap flag, seeded with node 1 only (it joins the running
    /// cluster); returns once it serves HTTP, retrying on new ports if it cannot bind.
    fn join(&mut self, id: u64) {
        let seed = self.nodes[&1].spec().peer.clone();
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let mut taken: BTreeSet<u16> = self
                .nodes
                .values()
                .flat_map(|n| [&n.spec().peer, &n.spec().http])
                .filter_map(|a| a.rsplit(':').next()?.parse().ok())
                .collect();
            let peer = fresh_addr(&mut taken);
            let http = fresh_addr(&mut taken);
            let data_dir = self.dir.path().join(format!("n{id}-{attempt}"));
            let mut spec = node_spec(id, peer, http, data_dir);
            spec.peers = vec![seed.clone()];
            if let Some(mut old) = self.nodes.insert(id, start_node(spec)) {
                old.kill9();
            }
            match self.wait_serving(id) {
                Ok(()) => return,
                Err(why) => {
                    eprintln!("node {id} start failed, retrying on other ports: {why}");
                    failures.push(why);
                }
            }
        }
        panic!("could not start node {id}: {failures:#?}");
    }

    /// Waits until node `id` runs and serves its own `/v1/status`.
    fn wait_serving(&mut self, id: u64) -> Result<(), String> {
        self.node_mut(id)
            .wait_serving(START_LIMIT)
            .map_err(|e| e.to_string())
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn http(&self, id: u64) -> String {
        self.node(id).spec().http.clone()
    }

    fn pid(&self, id: u64) -> u32 {
        self.node(id)
            .pid()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    fn kill(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.kill9();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// One request through the shared harness, waiting at most `timeout`: (status code, JSON body or
/// `null`). A connect failure is an `Err` starting with "connect".
fn call(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), String> {
    let (code, text) = common::http_with_timeout(method, addr, path, body, timeout)?;
    Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn post(addr: &str, path: &str, body: &Value) -> Result<(u16, Value), String> {
    call("POST", addr, path, Some(body), CP_CLIENT_TIMEOUT)
}

/// A short description of an answer, for messages and the timeline.
fn describe(answer: &Result<(u16, Value), String>) -> String {
    match answer {
        Ok((code, body)) => format!("{code} {body}"),
        Err(err) => format!("transport: {err}"),
    }
}

/// Worth retrying: unavailable (503), timeout (504), internal/indeterminate (500), no answer.
fn transient(answer: &Result<(u16, Value), String>) -> bool {
    match answer {
        Ok((code, _)) => matches!(code, 500 | 503 | 504),
        Err(_) => true,
    }
}

/// POSTs `body` to `path` on `addr` until the answer is not transient; returns it.
fn post_settled(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let (answer, _) = wait_for(
        &format!("POST {path} {body} via {addr}"),
        RETRY_LIMIT,
        || {
            let answer = post(addr, path, body);
            if transient(&answer) {
                Err(describe(&answer))
            } else {
                answer
            }
        },
    );
    answer
}

/// POSTs until a 200 (retrying transient refusals); panics on any other answer.
fn post_ok(addr: &str, path: &str, body: &Value) -> Value {
    let (code, answer) = post_settled(addr, path, body);
    assert_eq!(code, 200, "POST {path} {body} via {addr}: {answer}");
    answer
}

/// The `cp` object of `GET /v1/status`.
fn cp_status(addr: &str) -> Result<Value, String> {
    let s = status(addr)?;
    match s.get("cp") {
        Some(cp) if cp.is_object() => Ok(cp.clone()),
        _ => Err(format!("no cp object in status: {s}")),
    }
}

/// The leader all of `among` name, which is one of them, calls itself leader and is not
/// `not`, in a term above `after_term`: (leader, term).
fn agreed_leader(
    nodes: &Nodes,
    among: &[u64],
    not: Option<u64>,
    after_term: u64,
) -> Result<(u64, u64), String> {
    let mut named = BTreeSet::new();
    for id in among {
        let cp = cp_status(&nodes.http(*id)).map_err(|e| format!("node {id}: {e}"))?;
        let leader = cp["leader"]
            .as_u64()
            .ok_or_else(|| format!("node {id} knows no leader: {cp}"))?;
        named.insert(leader);
    }
    let leader = match named.iter().collect::<Vec<_>>()[..] {
        [one] => *one,
        _ => return Err(format!("nodes {among:?} name leaders {named:?}")),
    };
    if Some(leader) == not || !among.contains(&leader) {
        return Err(format!(
            "leader {leader}, not one of {among:?} other than {not:?}"
        ));
    }
    let cp = cp_status(&nodes.http(leader))?;
    let term = cp["term"].as_u64().unwrap_or(0);
    if cp["role"] != "leader" || term <= after_term {
        return Err(format!("node {leader} is named leader but says {cp}"));
    }
    Ok((leader, term))
}

/// Waits until every node in `ids` reports `voters` (and no learners) in `/v1/cp/members`.
fn wait_voters(nodes: &Nodes, ids: &[u64], voters: &[u64]) -> Duration {
    let (_, took) = wait_for(
        &format!("voters {voters:?} on nodes {ids:?}"),
        MEMBERSHIP_LIMIT,
        || {
            for id in ids {
                let (code, m) = call(
                    "GET",
                    &nodes.http(*id),
                    "/v1/cp/members",
                    None,
                    Duration::from_secs(2),
                )?;
                if code != 200 || m["voters"] != json!(voters) || m["learners"] != json!([]) {
                    return Err(format!("node {id}: {code} {m}"));
                }
            }
            Ok(())
        },
    );
    took
}

/// The single value of `key`, read linearizably via `addr` (retrying unavailability).
fn get_linearizable(addr: &str, key: &str) -> Option<String> {
    let path = format!("/v1/cp/get?key={key}&consistency=linearizable");
    let (answer, _) = wait_for(
        &format!("linearizable get {key} via {addr}"),
        RETRY_LIMIT,
        || match call("GET", addr, &path, None, CP_CLIENT_TIMEOUT) {
            Ok((200, body)) => Ok(body),
            other if transient(&other) => Err(describe(&other)),
            other => panic!("get {key} via {addr}: {}", describe(&other)),
        },
    );
    answer["kvs"][0]["value"].as_str().map(String::from)
}

/// `(presented, current)` of a `FencingTokenStale` refusal:
/// `{"kind": "Rejected", "reason": "FencingTokenStale", "presented", "current", "error"}`.
fn stale_token(body: &Value) -> Option<(i64, i64)> {
    if body["kind"] != "Rejected" || body["reason"] != "FencingTokenStale" {
        return None;
    }
    Some((body["presented"].as_i64()?, body["current"].as_i64()?))
}

// ---------------------------------------------------------------------------------------------
// Done-when 4: the zombie leader.

/// What happened when, relative to the start of the scenario.
struct Timeline {
    start: Instant,
    events: Vec<(Duration, String)>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            start: Instant::now(),
            events: Vec::new(),
        }
    }

    fn mark(&mut self, what: impl Into<String>) -> Duration {
        let at = self.start.elapsed();
        let what = what.into();
        println!("[{:>8.3}s] {what}", at.as_secs_f64());
        self.events.push((at, what));
        at
    }
}

#[test]
fn zombie_leader_holding_a_lock_cannot_write_after_a_new_holder_is_granted() {
    const LEASE_A_TTL: i64 = 2;
    let nodes = Nodes::start(3);
    let ((leader, term), took) = wait_for("a CP leader among 1..3", START_LIMIT, || {
        agreed_leader(&nodes, &[1, 2, 3], None, 0)
    });
    println!("3 nodes: leader {leader} (term {term}) after {took:?}");
    let zombie = nodes.http(leader);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let mut timeline = Timeline::new();
    let mut tokens: Vec<(&str, i64)> = Vec::new();

    // Client A, through the leader: a short lease, the lock, one fenced write.
    let lease_a = post_ok(
        &zombie,
        "/v1/cp/lease/grant",
        &json!({"ttl_secs": LEASE_A_TTL}),
    )["id"]
        .as_i64()
        .expect("lease id");
    let lock_a = post_ok(
        &zombie,
        "/v1/cp/lock",
        &json!({"name": "payments", "lease": lease_a, "timeout_ms": 5000}),
    );
    let token_a = lock_a["token"].as_i64().expect("token");
    tokens.push(("A", token_a));
    timeline.mark(format!(
        "client A (via leader {leader}) holds lock payments: token {token_a}, lease {lease_a} ttl {LEASE_A_TTL}s"
    ));
    let fence_a = json!({"lock": "payments", "token": token_a});
    let written = post_ok(
        &zombie,
        "/v1/cp/put",
        &json!({"key": "ledger", "value": "A", "request_id": "A:1", "fence": fence_a}),
    );
    timeline.mark(format!(
        "client A fenced write ledger=A: revision {}",
        written["revision"]
    ));
    // The lease's clock starts from here on this leader; nobody keeps it alive afterwards.
    post_ok(&zombie, "/v1/cp/lease/keepalive", &json!({"id": lease_a}));

    // Pause the leader (still the leader: the scenario is about pausing the one that leads).
    let cp = cp_status(&zombie).expect("status of the leader");
    assert!(
        cp["role"] == "leader" && cp["term"] == json!(term),
        "node {leader} no longer leads term {term} before the pause: {cp}"
    );
    nodes.node(leader).pause().expect("SIGSTOP the leader");
    let paused_at = timeline.mark(format!(
        "SIGSTOP leader {leader} (pid {})",
        nodes.pid(leader)
    ));

    let ((new_leader, new_term), _) = wait_for(
        &format!("a new leader among {survivors:?} (term > {term})"),
        ELECT_LIMIT,
        || agreed_leader(&nodes, &survivors, Some(leader), term),
    );
    let elected_at = timeline.mark(format!(
        "node {new_leader} leads in term {new_term} ({:?} after the pause)",
        timeline.start.elapsed() - paused_at
    ));

    // Client B, through the survivor that is not the new leader (forwarded writes, local wait).
    let via_b = *survivors
        .iter()
        .find(|id| **id != new_leader)
        .expect("two survivors");
    let addr_b = nodes.http(via_b);
    let lease_b = post_ok(&addr_b, "/v1/cp/lease/grant", &json!({"ttl_secs": 60}))["id"]
        .as_i64()
        .expect("lease id");
    let mut lock_refusals = Vec::new();
    let (lock_b, _) = wait_for(
        "client B is granted lock payments (after A's lease expires)",
        RETRY_LIMIT,
        || {
            let answer = post(
                &addr_b,
                "/v1/cp/lock",
                &json!({"name": "payments", "lease": lease_b, "timeout_ms": 4000}),
            );
            match answer {
                Ok((200, body)) => Ok(body),
                other if transient(&other) => {
                    lock_refusals.push(describe(&other));
                    Err(describe(&other))
                }
                other => panic!("lock for client B via node {via_b}: {}", describe(&other)),
            }
        },
    );
    let token_b = lock_b["token"].as_i64().expect("token");
    tokens.push(("B", token_b));
    let granted_at = timeline.mark(format!(
        "client B (via node {via_b}) holds lock payments: token {token_b} ({:?} after the election, {:?} after the pause; {} lock calls waited out first)",
        timeline.start.elapsed() - elected_at,
        timeline.start.elapsed() - paused_at,
        lock_refusals.len()
    ));
    assert!(
        token_b > token_a,
        "B's token {token_b} is not above A's {token_a}"
    );
    let fence_b = json!({"lock": "payments", "token": token_b});
    let written = post_ok(
        &addr_b,
        "/v1/cp/put",
        &json!({"key": "ledger", "value": "B", "request_id": "B:1", "fence": fence_b}),
    );
    timeline.mark(format!(
        "client B fenced write ledger=B: revision {}",
        written["revision"]
    ));
    let check = call(
        "GET",
        &addr_b,
        &format!("/v1/cp/fence?lock=payments&token={token_a}"),
        None,
        Duration::from_secs(2),
    );
    println!(
        "fence check of A's token via node {via_b}: {}",
        describe(&check)
    );

    // Resume the zombie; client A, unaware, writes through it with its old token at once.
    nodes.node(leader).resume().expect("SIGCONT the old leader");
    let resumed_at = timeline.mark(format!(
        "SIGCONT node {leader} ({:?} after B's grant)",
        timeline.start.elapsed() - granted_at
    ));
    // What the zombie believes as it wakes, asked alongside the write (not before it).
    let belief = {
        let zombie = zombie.clone();
        let start = timeline.start;
        std::thread::spawn(move || {
            let answer = cp_status(&zombie);
            (start.elapsed(), answer)
        })
    };
    let zombie_write =
        json!({"key": "ledger", "value": "A2", "request_id": "A:2", "fence": fence_a});
    let mut attempts = Vec::new();
    let ((code, answer), _) =
        wait_for("a definite answer to the zombie write", RETRY_LIMIT, || {
            let sent = timeline.start.elapsed();
            let answer = post(&zombie, "/v1/cp/put", &zombie_write);
            let took = timeline.start.elapsed() - sent;
            attempts.push(format!(
                "at {:.3}s (+{took:?}): {}",
                sent.as_secs_f64(),
                describe(&answer)
            ));
            if transient(&answer) {
                Err(describe(&answer))
            } else {
                answer
            }
        });
    timeline.mark(format!(
        "zombie write via node {leader} answered ({:?} after SIGCONT, {} attempts): {code} {answer}",
        timeline.start.elapsed() - resumed_at,
        attempts.len()
    ));
    for attempt in &attempts {
        println!("  zombie write attempt {attempt}");
    }
    let (asked_at, belief) = belief.join().expect("status thread");
    match belief {
        Ok(cp) => println!(
            "  the old leader's own status as it woke (answered at {:.3}s): role {} term {} leader {}",
            asked_at.as_secs_f64(),
            cp["role"],
            cp["term"],
            cp["leader"]
        ),
        Err(err) => println!("  the old leader's status as it woke: {err}"),
    }
    if code != 409 {
        let values: Vec<(u64, Option<String>)> = survivors
            .iter()
            .map(|id| (*id, get_linearizable(&nodes.http(*id), "ledger")))
            .collect();
        panic!(
            "{}: the zombie write (client A, stale token {token_a}, after B was granted \
             {token_b}) via old leader {leader} answered {code} {answer}; linearizable ledger \
             via the survivors: {values:?}; attempts: {attempts:#?}",
            if code == 200 {
                "SAFETY: a stale-token write was acknowledged"
            } else {
                "unexpected answer"
            }
        );
    }
    let refusal = answer;
    assert_eq!(
        stale_token(&refusal),
        Some((token_a, token_b)),
        "the 409 must be FencingTokenStale {{presented: {token_a}, current: {token_b}}}: {refusal}"
    );

    // The data is B's, linearizably, through every node, the old leader included.
    for id in 1..=3u64 {
        let value = get_linearizable(&nodes.http(id), "ledger");
        assert_eq!(
            value.as_deref(),
            Some("B"),
            "linearizable ledger via node {id}"
        );
    }
    let old = cp_status(&zombie).expect("status of the old leader");
    timeline.mark(format!(
        "ledger = B through every node; old leader {leader} now: role {} term {} leader {}",
        old["role"], old["term"], old["leader"]
    ));

    println!("tokens granted, in order: {tokens:?}");
    assert!(
        tokens.windows(2).all(|w| w[0].1 < w[1].1),
        "fencing tokens not strictly increasing: {tokens:?}"
    );
    println!("timeline:");
    for (at, what) in &timeline.events {
        println!("  {:>8.3}s  {what}", at.as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// Done-when 6: membership 3 → 5 → 3 under load.

/// How one write attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Acked,
    Refused(u16),
    Indeterminate(u16),
    NoAnswer,
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One write of the membership test's writer: key `w-<seq>`, value `<seq>`.
struct Attempt {
    seq: u64,
    node: u64,
    outcome: Outcome,
    /// When it was sent and answered, since the load began.
    sent: Duration,
    answered: Duration,
}

/// Applies a membership change via `addr` until `done` holds for the answer (or for a later
/// `GET /v1/cp/members`, if an earlier attempt was applied but not answered): (took, attempts).
fn change_members(
    addr: &str,
    change: &Value,
    done: impl Fn(&Value) -> bool,
) -> (Duration, Vec<String>) {
    let mut refusals = Vec::new();
    let (_, took) = wait_for(
        &format!("membership change {change}"),
        MEMBERSHIP_LIMIT,
        || {
            let answer = call(
                "POST",
                addr,
                "/v1/cp/members",
                Some(change),
                Duration::from_secs(20),
            );
            match &answer {
                Ok((200, body)) if done(body) => return Ok(()),
                Ok((code, body)) if (400..500).contains(code) => {
                    panic!("membership change {change} refused: {code} {body}")
                }
                _ => {}
            }
            refusals.push(describe(&answer));
            match call("GET", addr, "/v1/cp/members", None, Duration::from_secs(2)) {
                Ok((200, m)) if done(&m) => Ok(()),
                _ => Err(describe(&answer)),
            }
        },
    );
    (took, refusals)
}

fn has_voter(m: &Value, id: u64) -> bool {
    m["voters"]
        .as_array()
        .is_some_and(|v| v.contains(&json!(id)))
}

fn has_learner(m: &Value, id: u64) -> bool {
    has_voter(m, id)
        || m["learners"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(id)))
}

#[test]
fn membership_grows_three_to_five_and_shrinks_back_under_load() {
    let mut nodes = Nodes::start(3);
    let ((leader, term), took) = wait_for("a CP leader among 1..3", START_LIMIT, || {
        agreed_leader(&nodes, &[1, 2, 3], None, 0)
    });
    println!("3 nodes: leader {leader} (term {term}) after {took:?}");
    wait_voters(&nodes, &[1, 2, 3], &[1, 2, 3]);

    // The writer's view of the members: (id, HTTP address).
    let members = Mutex::new(
        (1..=3)
            .map(|id| (id, nodes.http(id)))
            .collect::<Vec<(u64, String)>>(),
    );
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut changes: Vec<(String, Duration, Duration, usize)> = Vec::new();

    let attempts = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut attempts = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let (node, addr) = {
                    let members = members.lock().unwrap();
                    members[(seq as usize) % members.len()].clone()
                };
                let body = json!({
                    "key": format!("w-{seq:06}"),
                    "value": seq.to_string(),
                    "request_id": format!("writer:{seq}"),
                });
                let sent = t0.elapsed();
                let outcome = match post(&addr, "/v1/cp/put", &body) {
                    Ok((200, _)) => Outcome::Acked,
                    Ok((code @ (400..=499 | 503), _)) => Outcome::Refused(code),
                    Ok((code, _)) => Outcome::Indeterminate(code),
                    Err(_) => Outcome::NoAnswer,
                };
                if outcome != Outcome::Acked {
                    std::thread::sleep(Duration::from_millis(20));
                }
                attempts.push(Attempt {
                    seq,
                    node,
                    outcome,
                    sent,
                    answered: t0.elapsed(),
                });
            }
            attempts
        });
        // Stops the writer even if this thread panics, so the scope can end.
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_secs(1));

        // Each change via node 1 (forwarded to the leader), timed and recorded.
        let node1 = nodes.http(1);
        let mut change = |name: String, body: Value, done: &dyn Fn(&Value) -> bool| {
            let start = t0.elapsed();
            let (took, refusals) = change_members(&node1, &body, done);
            println!(
                "[{:>7.3}s] {name} took {took:?} ({} retried answers; the first: {:?})",
                t0.elapsed().as_secs_f64(),
                refusals.len(),
                refusals.first()
            );
            changes.push((name, start, took, refusals.len()));
        };

        // Grow: 4 and 5 start seeded with node 1, then join as learners and are promoted.
        for id in [4u64, 5] {
            let started = Instant::now();
            nodes.join(id);
            println!(
                "[{:>7.3}s] node {id} serving after {:?}",
                t0.elapsed().as_secs_f64(),
                started.elapsed()
            );
            change(
                format!("AddLearner {id}"),
                json!({"AddLearner": id}),
                &|m| has_learner(m, id),
            );
            change(format!("Promote {id}"), json!({"Promote": id}), &|m| {
                has_voter(m, id)
            });
            members.lock().unwrap().push((id, nodes.http(id)));
        }
        let took = wait_voters(&nodes, &[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]);
        println!(
            "[{:>7.3}s] all 5 nodes report voters [1..5] ({took:?} after the last promotion)",
            t0.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_secs(1));

        // Shrink: remove 5 then 4; the writer keeps using each until its removal is done.
        for id in [5u64, 4] {
            change(format!("Remove {id}"), json!({"Remove": id}), &|m| {
                !has_voter(m, id)
            });
            members.lock().unwrap().retain(|(member, _)| *member != id);
        }
        let took = wait_voters(&nodes, &[1, 2, 3], &[1, 2, 3]);
        println!(
            "[{:>7.3}s] nodes 1..3 report voters [1, 2, 3] ({took:?} after the last removal)",
            t0.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("writer thread")
    });
    println!("load over after {:?}", t0.elapsed());

    // The removed nodes go away for good: the data must not depend on them.
    for id in [4, 5] {
        println!(
            "removed node {id} before it is killed: {}",
            cp_status(&nodes.http(id)).unwrap_or_else(|e| json!(e))
        );
    }
    nodes.kill(4);
    nodes.kill(5);
    let ((leader_now, term_now), _) =
        wait_for("a CP leader among 1..3 at the end", ELECT_LIMIT, || {
            agreed_leader(&nodes, &[1, 2, 3], None, 0)
        });
    println!(
        "leader {leader_now} term {term_now} at the end (leader {leader} term {term} at the start{})",
        if term_now == term {
            ", no election"
        } else {
            ""
        }
    );

    let mut tally = BTreeMap::<Outcome, usize>::new();
    let mut acked_by_node = BTreeMap::<u64, usize>::new();
    for a in &attempts {
        *tally.entry(a.outcome).or_default() += 1;
        if a.outcome == Outcome::Acked {
            *acked_by_node.entry(a.node).or_default() += 1;
        }
    }
    println!(
        "writes: {} attempted; outcomes {tally:?}; acknowledged via node {acked_by_node:?}",
        attempts.len()
    );
    for (change, start, took, retries) in &changes {
        let end = *start + *took;
        let during = attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Acked && a.answered >= *start && a.sent <= end)
            .count();
        println!(
            "  {change}: at {:.3}s took {took:?} ({retries} retried answers); {during} writes acknowledged meanwhile",
            start.as_secs_f64()
        );
    }

    let acked: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Acked)
        .collect();
    assert!(!acked.is_empty(), "no write was acknowledged");
    for id in 1..=3u64 {
        let (read, _) = wait_for(
            &format!("a linearizable prefix read via node {id}"),
            RETRY_LIMIT,
            || match call(
                "GET",
                &nodes.http(id),
                "/v1/cp/get?key=w-&prefix=true&consistency=linearizable",
                None,
                CP_CLIENT_TIMEOUT,
            ) {
                Ok((200, body)) => Ok(body),
                other if transient(&other) => Err(describe(&other)),
                other => panic!("prefix read via node {id}: {}", describe(&other)),
            },
        );
        let stored: BTreeMap<String, String> = read["kvs"]
            .as_array()
            .expect("kvs")
            .iter()
            .map(|kv| {
                (
                    kv["key"].as_str().unwrap_or_default().to_string(),
                    kv["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let missing: Vec<String> = acked
            .iter()
            .filter_map(|a| {
                let key = format!("w-{:06}", a.seq);
                match stored.get(&key) {
                    Some(value) if *value == a.seq.to_string() => None,
                    other => Some(format!("{key} (acked via node {}): {other:?}", a.node)),
                }
            })
            .collect();
        println!(
            "node {id}: linearizable prefix read holds {} keys; {} of {} acknowledged writes missing or wrong",
            stored.len(),
            missing.len(),
            acked.len()
        );
        assert!(
            missing.is_empty(),
            "{} acknowledged writes lost or wrong via node {id}: {missing:?}",
            missing.len()
        );
        // Whatever is stored was written by the writer (no phantom keys).
        let attempted: BTreeSet<String> =
            attempts.iter().map(|a| format!("w-{:06}", a.seq)).collect();
        let phantoms: Vec<&String> = stored.keys().filter(|k| !attempted.contains(*k)).collect();
        assert!(phantoms.is_empty(), "keys never written: {phantoms:?}");
    }
}
