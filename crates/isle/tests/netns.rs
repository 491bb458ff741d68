//! The 3|2 split of `cluster.rs`, made by the kernel instead of the in-process fault layer.
//!
//! Five real `isle node` processes run in five network namespaces joined by veth pairs to a
//! Linux bridge in a sixth; a seventh namespace holds the client that reads their status — the
//! lab's namespace harness (`isle_lab::netns`), the one `isle chaos run --engine netns` uses. The
//! split is an nftables table in each node's namespace dropping (not rejecting) traffic from and
//! to the other side. Nothing is added to the root namespace and no namespace has a default
//! route, so no packet can leave the bridge. Every namespace made here is deleted when the test
//! ends, passes or fails.
//!
//! Needs root, `ip`, `nft` and `curl`; runs only with `ISLE_NETNS=1` (as `.ci/run` does).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{reachable_of, state_of};
use isle_lab::Node;
use isle_lab::netns::Netns;
use serde_json::{Value, json};

/// Generous limits: CI is a loaded 2-core box. The measured times are printed.
const START_LIMIT: Duration = Duration::from_secs(20);
const DETECT_LIMIT: Duration = Duration::from_secs(10);
const HEAL_LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

const NODES: u64 = 5;
const MAJORITY: [u64; 3] = [1, 2, 3];
const MINORITY: [u64; 2] = [4, 5];
const HTTP_PORT: u16 = 8000;

/// Runs a command to completion, returning its output whatever the exit status.
fn run_raw(args: &[&str], stdin: Option<&str>) -> Result<Output, String> {
    let (program, rest) = args.split_first().expect("a command");
    let mut command = Command::new(program);
    command
        .args(rest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("{}: stdin: {e}", args.join(" ")))?;
    }
    child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))
}

/// Runs a command that must succeed; returns its stdout.
fn run_ok(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let out = run_raw(args, stdin)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// Fails (not skips) when a tool the test needs is missing.
fn require_tool(args: &[&str], package: &str) {
    if let Err(e) = run_ok(args, None) {
        panic!(
            "ISLE_NETNS=1 but `{}` does not work ({e}); install the `{package}` package",
            args[0]
        );
    }
}

/// The namespaces (the lab's harness), node processes and files of one run; all torn down on
/// drop — the nodes first (fields drop in order), then the namespaces.
struct Net {
    /// The running nodes, index i holding node id i+1.
    nodes: Vec<Node>,
    /// Bridge, node and client namespaces.
    net: Netns,
    /// Data dirs and node logs.
    dir: tempfile::TempDir,
}

impl Net {
    /// Bridge, node and client namespaces, wired up; no default route anywhere.
    fn new() -> Net {
        Net {
            nodes: Vec::new(),
            net: Netns::create(NODES).unwrap_or_else(|e| panic!("building namespaces: {e:#}")),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn http(&self, id: u64) -> String {
        format!("{}:{HTTP_PORT}", Netns::node_ip(id))
    }

    /// Starts every node in its namespace, seeded with all the others, without fault injection.
    fn start_nodes(&mut self) {
        for mut spec in self.net.specs(self.dir.path()) {
            assert_eq!(spec.http, self.http(spec.id));
            spec.bootstrap_expect = Some(NODES);
            spec.env = vec![("ISLE_LOG".into(), "info".into())];
            let id = spec.id;
            let node = Node::start(spec, Path::new(common::isle_bin()))
                .unwrap_or_else(|e| panic!("starting node {id}: {e}"));
            self.nodes.push(node);
        }
    }

    /// `GET path` on node `id`, from the client namespace.
    fn get(&self, id: u64, path: &str) -> Result<String, String> {
        let url = format!("http://{}{path}", self.http(id));
        run_ok(
            &[
                "ip",
                "netns",
                "exec",
                &self.net.client_ns(),
                "curl",
                "-sS",
                "--fail",
                "-m",
                "2",
                &url,
            ],
            None,
        )
    }

    /// `POST path` with a JSON body on node `id`, from the client namespace: (status, body).
    fn post(&self, id: u64, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let url = format!("http://{}{path}", self.http(id));
        let text = body.to_string();
        let out = run_ok(
            &[
                "ip",
                "netns",
                "exec",
                &self.net.client_ns(),
                "curl",
                "-sS",
                "-m",
                "12",
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "--data-binary",
                &text,
                "-w",
                "\n%{http_code}",
                &url,
            ],
            None,
        )?;
        let (json, code) = out
            .trim_end()
            .rsplit_once('\n')
            .ok_or_else(|| format!("curl: {out}"))?;
        let code: u16 = code
            .trim()
            .parse()
            .map_err(|e| format!("status {code:?}: {e}"))?;
        Ok((code, serde_json::from_str(json).unwrap_or(Value::Null)))
    }

    /// The value of CP key `key` in node `id`'s own replica (a stale read).
    fn stale_value(&self, id: u64, key: &str) -> Result<String, String> {
        let body = self.get(id, &format!("/v1/cp/get?key={key}&consistency=stale"))?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        Ok(answer["kvs"][0]["value"].as_str().unwrap_or("").to_string())
    }

    /// Puts through node `id` until it succeeds (a leader may be being elected).
    fn put_until_ok(&self, id: u64, key: &str, value: &str, limit: Duration) -> Duration {
        let body = serde_json::json!({"key": key, "value": value});
        let (_, took) = common::wait_for(
            &format!("put {key}={value} via node {id}"),
            limit,
            || match self.post(id, "/v1/cp/put", &body)? {
                (200, _) => Ok(()),
                (code, answer) => Err(format!("{code}: {answer}")),
            },
        );
        took
    }

    fn status(&self, id: u64) -> Result<Value, String> {
        let body = self.get(id, "/v1/status")?;
        serde_json::from_str(&body).map_err(|e| format!("node {id} status JSON: {e}: {body}"))
    }

    /// Drops everything between `side` and `other` in the namespace of each node of `side`.
    fn cut(&self, side: &[u64], other: &[u64]) {
        let other: BTreeSet<u64> = other.iter().copied().collect();
        for id in side {
            self.net
                .set_rules(*id, &other, &other, &[])
                .unwrap_or_else(|e| panic!("cutting node {id}: {e:#}"));
        }
    }

    fn heal(&self) {
        for id in 1..=NODES {
            self.net
                .set_rules(id, &BTreeSet::new(), &BTreeSet::new(), &[])
                .unwrap_or_else(|e| panic!("healing node {id}: {e:#}"));
        }
    }

    fn logs(&self) -> String {
        common::logs(self.dir.path())
    }
}

fn ids(values: &[u64]) -> BTreeSet<u64> {
    values.iter().copied().collect()
}

/// Polls every node in parallel until `check` accepts its status; returns each node's time.
fn wait_each(
    net: &Net,
    what: &str,
    limit: Duration,
    check: impl Fn(u64, &Value) -> Result<(), String> + Sync,
) -> Vec<Duration> {
    let start = Instant::now();
    let results: Vec<Result<Duration, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=NODES)
            .map(|id| {
                let check = &check;
                scope.spawn(move || {
                    let mut last = String::from("never answered");
                    while start.elapsed() < limit {
                        match net.status(id).and_then(|s| check(id, &s)) {
                            Ok(()) => return Ok(start.elapsed()),
                            Err(why) => last = why,
                        }
                        std::thread::sleep(POLL);
                    }
                    Err(format!("node {id}: {last}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("poller thread"))
            .collect()
    });
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "timed out after {limit:?} waiting for {what}:\n{failed:#?}"
    );
    results.into_iter().map(Result::unwrap).collect()
}

fn all_normal(id: u64, s: &Value) -> Result<(), String> {
    let others: BTreeSet<u64> = (1..=NODES).filter(|o| *o != id).collect();
    if state_of(s) == "Normal"
        && s["quorum"]["held"] == json!(true)
        && ids(&reachable_of(s)) == others
        && s["partition"]["kind"] == "none"
    {
        Ok(())
    } else {
        Err(format!(
            "{} reaches {:?}, partition {}",
            state_of(s),
            reachable_of(s),
            s["partition"]
        ))
    }
}

fn print_times(label: &str, times: &[Duration]) {
    for (i, took) in times.iter().enumerate() {
        println!("  node {}: {label} after {:.2}s", i + 1, took.as_secs_f64());
    }
}

/// Node `id` shows the 3|2 split: Degraded with quorum on {1,2,3}, Emergency without on {4,5},
/// reaching exactly its own side, the partition complete with its own side first.
fn split_seen(id: u64, s: &Value) -> Result<(), String> {
    let (own, other, state, held): (&[u64], &[u64], &str, bool) = if MAJORITY.contains(&id) {
        (&MAJORITY, &MINORITY, "Degraded", true)
    } else {
        (&MINORITY, &MAJORITY, "Emergency", false)
    };
    let expected_reach: BTreeSet<u64> = own.iter().copied().filter(|o| *o != id).collect();
    let sides = json!({"kind": "complete", "sides": [own, other]});
    if state_of(s) == state
        && s["quorum"]["held"] == json!(held)
        && ids(&reachable_of(s)) == expected_reach
        && s["partition"] == sides
    {
        Ok(())
    } else {
        Err(format!(
            "{} held={} reaches {:?} partition {} ({})",
            state_of(s),
            s["quorum"]["held"],
            reachable_of(s),
            s["partition"],
            s["quorum_reason"]
        ))
    }
}

fn scenario(net: &mut Net) {
    println!(
        "namespaces {}..{} (nodes), {} (client) ready",
        net.net.node_ns(1),
        net.net.node_ns(NODES),
        net.net.client_ns(),
    );
    net.start_nodes();

    // 1) All five Normal, holding quorum, each hearing the other four.
    let times = wait_each(net, "all nodes Normal with quorum", START_LIMIT, all_normal);
    println!("all {NODES} nodes Normal with quorum (from start):");
    print_times("Normal", &times);

    // The CP keyspace: the Raft group forms, a first write lands everywhere.
    let took = net.put_until_ok(1, "account", "before", START_LIMIT);
    println!(
        "CP: first write committed {:.2}s after all Normal",
        took.as_secs_f64()
    );
    for id in 1..=NODES {
        common::wait_for(
            &format!("node {id} replicates the first write"),
            START_LIMIT,
            || match net.stale_value(id, "account")?.as_str() {
                "before" => Ok(()),
                other => Err(format!("node {id} has {other:?}")),
            },
        );
    }

    // 2) The kernel splits {1,2,3} | {4,5}.
    let cut_start = Instant::now();
    net.cut(&MAJORITY, &MINORITY);
    net.cut(&MINORITY, &MAJORITY);
    println!(
        "nftables cut {MAJORITY:?} | {MINORITY:?} applied in {:?}",
        cut_start.elapsed()
    );
    let times = wait_each(net, "the 3|2 split on every node", DETECT_LIMIT, split_seen);
    println!("split seen (from the first nft rule; target ~2 s):");
    for (i, took) in times.iter().enumerate() {
        let id = i as u64 + 1;
        let state = if MAJORITY.contains(&id) {
            "Degraded, quorum held"
        } else {
            "Emergency, no quorum"
        };
        println!(
            "  node {id}: {state}, partition complete, after {:.2}s",
            took.as_secs_f64()
        );
    }

    // The split holds: a second later every node still shows it.
    std::thread::sleep(Duration::from_secs(1));
    for id in 1..=NODES {
        let shown = net.status(id).and_then(|s| split_seen(id, &s));
        assert!(
            shown.is_ok(),
            "node {id} no longer shows the split 1 s later: {shown:?}"
        );
    }

    // CP under the kernel split: the minority refuses at once, the majority writes on.
    for id in MINORITY {
        let asked = Instant::now();
        let body = serde_json::json!({"key": "account", "value": format!("minority-{id}")});
        let (code, answer) = net
            .post(id, "/v1/cp/put", &body)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            code, 503,
            "node {id} (minority) accepted or failed oddly: {answer}"
        );
        assert_eq!(answer["kind"], "NoQuorum", "node {id}: {answer}");
        println!(
            "CP: node {id} (minority) refused with NoQuorum in {:?}: {}",
            asked.elapsed(),
            answer["error"]
        );
    }
    let took = net.put_until_ok(1, "account", "after", HEAL_LIMIT);
    println!(
        "CP: majority write committed {:.2}s after asking",
        took.as_secs_f64()
    );
    for id in MINORITY {
        let value = net
            .stale_value(id, "account")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            value, "before",
            "node {id} (minority) must still serve the old value"
        );
    }

    // 3) Heal: every node back through Reconciling to Normal.
    net.heal();
    let times = wait_each(
        net,
        "all nodes Normal again after heal",
        HEAL_LIMIT,
        all_normal,
    );
    println!("healed; Normal again (from heal):");
    print_times("Normal", &times);
    for id in MINORITY {
        let (_, took) =
            common::wait_for(&format!("node {id} catches up"), HEAL_LIMIT, || {
                match net.stale_value(id, "account")?.as_str() {
                    "after" => Ok(()),
                    other => Err(format!("node {id} has {other:?}")),
                }
            });
        println!(
            "CP: node {id} caught up with the majority's write {:.2}s after Normal",
            took.as_secs_f64()
        );
    }
    for id in 1..=NODES {
        let s = net.status(id).unwrap_or_else(|e| panic!("{e}"));
        let path: Vec<(String, String)> = s["transitions"]
            .as_array()
            .expect("transitions")
            .iter()
            .map(|t| {
                (
                    t["from"].as_str().unwrap_or("?").into(),
                    t["to"].as_str().unwrap_or("?").into(),
                )
            })
            .collect();
        let into = path.iter().rposition(|(_, to)| to == "Reconciling");
        let out = path
            .iter()
            .rposition(|(from, to)| from == "Reconciling" && to == "Normal");
        assert!(
            matches!((into, out), (Some(i), Some(o)) if i < o),
            "node {id} did not go through Reconciling to Normal: {path:?}"
        );
        let text = net.get(id, "/metrics").unwrap_or_else(|e| panic!("{e}"));
        let duration = isle_lab::metrics::first(&text, "isle_last_partition_duration_seconds")
            .unwrap_or_else(|| panic!("node {id}: no isle_last_partition_duration_seconds"));
        let recovery = isle_lab::metrics::first(&text, "isle_last_recovery_seconds")
            .unwrap_or_else(|| panic!("node {id}: no isle_last_recovery_seconds"));
        assert!(
            duration > 0.0 && recovery > 0.0,
            "node {id}: duration {duration}, recovery {recovery}"
        );
        let steps: Vec<String> = path
            .iter()
            .map(|(from, to)| format!("{from}->{to}"))
            .collect();
        println!(
            "  node {id}: partition lasted {duration:.2}s, recovered in {recovery:.2}s; transitions {}",
            steps.join(", ")
        );
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

#[test]
fn kernel_split_three_two_then_heal() {
    if !common::netns_enabled() {
        return;
    }
    isle_lab::netns::preflight().unwrap_or_else(|e| panic!("ISLE_NETNS=1 but {e:#}"));
    require_tool(&["curl", "--version"], "curl");

    let mut net = Net::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| scenario(&mut net)));
    if let Err(payload) = outcome {
        let logs = net.logs();
        drop(net); // Kill the nodes and delete the namespaces before reporting.
        if logs.is_empty() {
            resume_unwind(payload);
        }
        panic!(
            "{}\n--- node logs ---\n{logs}",
            panic_message(payload.as_ref())
        );
    }
    let made = net.net.made();
    drop(net);
    let left: Vec<String> = isle_lab::netns::namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|ns| made.contains(ns))
        .collect();
    assert!(left.is_empty(), "namespaces left after cleanup: {left:?}");
}
