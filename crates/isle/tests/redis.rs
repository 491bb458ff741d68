//! Redis compatibility: Debian's `redis-cli` drives every RESP command Isle answers against a
//! 3-node cluster (writes through one node, reads through another), checking each answer as
//! redis-cli prints it; when `redis-server` is installed the same script's portable steps run
//! against a real Redis too and must print the same. Then `redis-benchmark` runs
//! SET/GET/INCR/SADD/HSET (plain and pipelined) against one node with no error.
//!
//! Skips with a loud message when `redis-cli` is not installed, unless `CI` is set (there a
//! missing tool fails the test instead).

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{LocalCluster, installed, wait_for};
use isle_lab::spare_port;

/// Whether the tools are there: a skip, or a failure under CI, when they are not.
fn redis_tools_present(test: &str) -> bool {
    common::require(
        installed("redis-cli") && installed("redis-benchmark"),
        &format!("redis-cli and redis-benchmark (for {test})"),
        "apt-get install redis-tools redis-server",
    )
}

/// Runs `redis-cli --no-raw` against `addr` in db `db`, feeding `script` (one command a line)
/// on stdin; returns what it printed (stdout and stderr), without trailing blanks.
fn cli(addr: &str, db: u32, script: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut child = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "-n", &db.to_string(), "--no-raw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{script}\n").as_bytes())
        .expect("write script");
    drop(stdin);
    let output = child.wait_with_output().expect("redis-cli output");
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim_end().to_string()
}

/// Where a step's expectation holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Isle and Redis print the same.
    Both,
    /// Isle only: Isle-specific commands, refusals, or an order Redis does not fix.
    Isle,
}

/// One step: the node it runs on (1-based; Redis has one), the db, the commands, and what
/// redis-cli must print (a trailing `*` makes it a prefix).
struct Step {
    node: u64,
    db: u32,
    script: &'static str,
    expect: &'static str,
    scope: Scope,
}

const fn step(node: u64, script: &'static str, expect: &'static str, scope: Scope) -> Step {
    Step {
        node,
        db: 0,
        script,
        expect,
        scope,
    }
}

const fn step_db(node: u64, db: u32, script: &'static str, expect: &'static str) -> Step {
    Step {
        node,
        db,
        script,
        expect,
        scope: Scope::Both,
    }
}

use Scope::{Both, Isle};

/// The script: every command of the RESP endpoint.
const STEPS: &[Step] = &[
    // Strings.
    step(1, "SET k v1", "OK", Both),
    step(2, "GET k", "\"v1\"", Both),
    step(3, "SET k v2", "OK", Both),
    step(1, "GET k", "\"v2\"", Both),
    step(2, "GET nope", "(nil)", Both),
    step(1, "SET e ''\nGET e", "OK\n\"\"", Both),
    step(1, "SET 'a key' \"x y\"", "OK", Both),
    step(3, "GET 'a key'", "\"x y\"", Both),
    step(1, "MSET a 1 b 2", "OK", Both),
    step(2, "MGET a nope b", "1) \"1\"\n2) (nil)\n3) \"2\"", Both),
    step(3, "EXISTS a a nope b", "(integer) 3", Both),
    step(1, "TYPE a", "string", Both),
    step(1, "TTL a\nPTTL nope", "(integer) -1\n(integer) -2", Both),
    step(2, "DEL a nope", "(integer) 1", Both),
    step(3, "GET a\nEXISTS a", "(nil)\n(integer) 0", Both),
    step(1, "UNLINK b", "(integer) 1", Both),
    step(1, "SET k v BOGUS", "(error) ERR syntax error", Both),
    step(
        1,
        "SET k v EX 10",
        "(error) ERR Isle does not support SET ... EX: keys in the AP keyspace do not expire",
        Isle,
    ),
    step(
        1,
        "SET k v NX",
        "(error) ERR Isle does not support SET ... NX: *",
        Isle,
    ),
    step(
        1,
        "MSET a 1 b",
        "(error) ERR wrong number of arguments for 'mset' command",
        Both,
    ),
    step(
        1,
        "GET",
        "(error) ERR wrong number of arguments for 'get' command",
        Both,
    ),
    // Counters.
    step(1, "INCR n", "(integer) 1", Both),
    step(2, "INCRBY n 10", "(integer) 11", Both),
    step(3, "DECR n", "(integer) 10", Both),
    step(1, "DECRBY n 4", "(integer) 6", Both),
    step(2, "GET n", "\"6\"", Both),
    step(
        1,
        "INCRBY n x",
        "(error) ERR value is not an integer or out of range",
        Both,
    ),
    step(
        1,
        "INCR k",
        "(error) WRONGTYPE key holds a value, not a counter (incr refused)",
        Isle,
    ),
    // Sets.
    step(1, "SADD s b a b", "(integer) 2", Both),
    step(2, "SADD s a c", "(integer) 1", Both),
    step(3, "SREM s a z", "(integer) 1", Both),
    step(1, "SMEMBERS s", "1) \"b\"\n2) \"c\"", Isle),
    step(
        2,
        "SISMEMBER s b\nSISMEMBER s a",
        "(integer) 1\n(integer) 0",
        Both,
    ),
    step(
        3,
        "SMISMEMBER s b z",
        "1) (integer) 1\n2) (integer) 0",
        Both,
    ),
    step(1, "SCARD s\nSCARD nope", "(integer) 2\n(integer) 0", Both),
    step(1, "SMEMBERS nope", "(empty array)", Both),
    step(1, "TYPE s", "set", Both),
    step(
        2,
        "GET s",
        "(error) WRONGTYPE Operation against a key holding the wrong kind of value",
        Both,
    ),
    // Hashes.
    step(1, "HSET h f1 v1 f2 v2", "(integer) 2", Both),
    step(2, "HSET h f1 x f3 y", "(integer) 1", Both),
    step(3, "HGET h f1\nHGET h nope", "\"x\"\n(nil)", Both),
    step(
        1,
        "HGETALL h",
        "1) \"f1\"\n2) \"x\"\n3) \"f2\"\n4) \"v2\"\n5) \"f3\"\n6) \"y\"",
        Both,
    ),
    step(2, "HDEL h f1 nope", "(integer) 1", Both),
    step(3, "HINCRBY h n 5", "(integer) 5", Both),
    step(1, "HINCRBY h n -2", "(integer) 3", Both),
    step(2, "HGET h n\nHLEN h", "\"3\"\n(integer) 3", Both),
    step(3, "HMGET h f2 nope", "1) \"v2\"\n2) (nil)", Both),
    step(1, "HKEYS h", "1) \"f2\"\n2) \"f3\"\n3) \"n\"", Both),
    step(1, "HVALS h", "1) \"v2\"\n2) \"y\"\n3) \"3\"", Both),
    step(
        1,
        "HEXISTS h f2\nHEXISTS h f1",
        "(integer) 1\n(integer) 0",
        Both,
    ),
    step(
        1,
        "HINCRBY h f2 1",
        "(error) ERR hash value is not an integer",
        Both,
    ),
    step(1, "HMSET h m 1", "OK", Both),
    step(1, "TYPE h", "hash", Both),
    // Connection and server.
    step(1, "PING\nPING hi", "PONG\n\"hi\"", Both),
    step(1, "ECHO hello", "\"hello\"", Both),
    step(
        1,
        "ECHO",
        "(error) ERR wrong number of arguments for 'echo' command",
        Both,
    ),
    step(
        1,
        "SELECT 1\nSELECT 99",
        "OK\n(error) ERR DB index is out of range",
        Both,
    ),
    step_db(2, 1, "SET k other-db", "OK"),
    step_db(3, 1, "GET k", "\"other-db\""),
    step(1, "GET k", "\"v2\"", Both),
    step(1, "CLIENT SETNAME me\nCLIENT GETNAME", "OK\n\"me\"", Both),
    step(1, "CLIENT ID", "(integer) *", Both),
    // redis-cli prints CLIENT LIST and INFO raw.
    step(1, "CLIENT LIST", "id=*", Both),
    step(1, "CLIENT SETINFO lib-name isle-test", "OK", Isle),
    step(1, "COMMAND COUNT", "(integer) *", Both),
    step(1, "COMMAND DOCS", "(empty array)", Isle),
    step(
        1,
        "COMMAND INFO get",
        "1)  1) \"get\"\n    2) (integer) 2\n*",
        Both,
    ),
    step(1, "INFO server", "# Server\r\nredis_version:7.0*", Both),
    step(1, "CONFIG GET save", "1) \"save\"\n2) \"\"", Both),
    step(
        1,
        "CONFIG GET appendonly",
        "1) \"appendonly\"\n2) \"no\"",
        Both,
    ),
    step(
        1,
        "HELLO 2",
        " 1) \"server\"\n 2) \"redis\"\n 3) \"version\"\n 4) \"7.0*",
        Both,
    ),
    step(1, "HELLO 3", "(error) NOPROTO *", Isle),
    step(
        1,
        "AUTH pw",
        "(error) ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        Both,
    ),
    step(
        1,
        "FLUSHALL",
        "(error) ERR Isle does not support 'flushall': *",
        Isle,
    ),
    step(
        1,
        "EXPIRE k 10",
        "(error) ERR Isle does not support 'expire': *",
        Isle,
    ),
    step(
        1,
        "FOO a",
        "(error) ERR unknown command 'FOO', with args beginning with: 'a'",
        Both,
    ),
    step(
        1,
        "ISLE.CONSISTENCY one all\nISLE.CONSISTENCY\nGET k",
        "OK\n1) \"one\"\n2) \"all\"\n\"v2\"",
        Isle,
    ),
    // redis-cli answers QUIT itself: nothing printed, no error.
    step(1, "QUIT", "", Both),
];

fn matches(expect: &str, got: &str) -> bool {
    match expect.strip_suffix('*') {
        Some(prefix) => got.starts_with(prefix),
        None => got == expect,
    }
}

/// Runs the script's steps in `scope` against `addr_of(node)`; returns the mismatches.
fn run_script(addr_of: &dyn Fn(u64) -> String, redis: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for step in STEPS {
        if redis && step.scope == Scope::Isle {
            continue;
        }
        let node = if redis { 1 } else { step.node };
        let got = cli(&addr_of(node), step.db, step.script);
        if !matches(step.expect, &got) {
            failures.push(format!(
                "{} node {node} db {}: {:?}\n  expected {:?}\n  got      {:?}",
                if redis { "redis" } else { "isle" },
                step.db,
                step.script,
                step.expect,
                got
            ));
        }
    }
    failures
}

/// A real `redis-server` on a free port, killed when dropped.
struct RedisServer {
    child: Child,
    addr: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> Option<RedisServer> {
    if !common::require(
        installed("redis-server"),
        "redis-server (the reference the script is compared with)",
        "apt-get install redis-server",
    ) {
        return None;
    }
    let port = spare_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--databases", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let server = RedisServer {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    wait_for(
        "redis-server answers",
        Duration::from_secs(10),
        || match cli(&server.addr, 0, "PING").as_str() {
            "PONG" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    Some(server)
}

/// A 3-node cluster whose AP keyspace takes quorum writes through every node.
fn cluster() -> LocalCluster {
    let cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    for id in 1..=3 {
        let addr = cluster.resp(id);
        wait_for(
            &format!("node {id} takes RESP writes"),
            Duration::from_secs(30),
            || match cli(&addr, 0, "SET isle:ready yes").as_str() {
                "OK" => Ok(()),
                other => Err(other.to_string()),
            },
        );
    }
    cli(&cluster.resp(1), 0, "DEL isle:ready");
    cluster
}

#[test]
fn redis_cli_drives_every_command_through_three_nodes() {
    if !redis_tools_present("redis_cli_drives_every_command_through_three_nodes") {
        return;
    }
    let cluster = cluster();
    let _logs = cluster.logs_on_panic();
    let mut failures = run_script(&|id| cluster.resp(id), false);
    if let Some(server) = redis_server() {
        failures.extend(run_script(&|_| server.addr.clone(), true));
    }
    assert!(
        failures.is_empty(),
        "{} step(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The `NAME: N requests per second` figures of `redis-benchmark -q` output.
fn benchmark_figures(output: &str) -> Vec<(String, f64)> {
    output
        .split(['\r', '\n'])
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(": ")?;
            let (rate, _) = rest.split_once(" requests per second")?;
            Some((name.to_string(), rate.trim().parse().ok()?))
        })
        .collect()
}

fn benchmark(addr: &str, extra: &[&str]) -> Vec<(String, f64)> {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let output = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-t", "set,get,incr,sadd,hset", "-q"])
        .args(extra)
        .output()
        .expect("run redis-benchmark");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let all = format!("{stdout}{stderr}");
    assert!(
        output.status.success(),
        "redis-benchmark {extra:?} failed: {all}"
    );
    for bad in ["ERR", "Error", "error", "WARNING", "NOQUORUM", "WRONGTYPE"] {
        assert!(
            !all.contains(bad),
            "redis-benchmark {extra:?} reported {bad:?}: {all}"
        );
    }
    let figures = benchmark_figures(&stdout);
    let names: Vec<&str> = figures.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["SET", "GET", "INCR", "SADD", "HSET"],
        "every test reports a rate: {all}"
    );
    assert!(figures.iter().all(|(_, rate)| *rate > 0.0), "{figures:?}");
    println!("redis-benchmark {extra:?}: {figures:?}");
    figures
}

#[test]
fn redis_benchmark_runs_without_errors() {
    if !redis_tools_present("redis_benchmark_runs_without_errors") {
        return;
    }
    let cluster = cluster();
    let _logs = cluster.logs_on_panic();
    let addr = cluster.resp(1);
    benchmark(&addr, &["-n", "2000"]);
    // Pipelined: 16 commands a round trip from each of 10 clients.
    benchmark(&addr, &["-n", "2000", "-c", "10", "-P", "16"]);
    // The counter took every increment of both runs, once (read through another node).
    assert_eq!(
        cli(&cluster.resp(2), 0, "GET counter:__rand_int__"),
        "\"4000\""
    );
}
