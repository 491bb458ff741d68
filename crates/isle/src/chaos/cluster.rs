//! The cluster under test: `isle node` processes, and how each nemesis is made on them.
//!
//! Both engines share the process-level nemeses — kill -9 and restart on the same data dir,
//! SIGSTOP/SIGCONT, the wall clock's skew through `/v1/faults/clock`, CP membership through
//! `/v1/cp/members` — and differ in how links break: the loopback engine asks each node's
//! transport fault layer (`/v1/faults`), the netns engine has the kernel drop packets
//! (nftables in each node's namespace; random loss for flaky links). Delays, duplicates and
//! corrupted frames go through the fault layer in both engines (the kernel here has no netem;
//! a corrupted TCP segment would only be a lost one anyway, while a corrupted frame tests the
//! node's checksum).
//!
//! The cluster keeps the [`Effects`] in force and moves to a new set by difference, so
//! overlapping nemeses compose the way `isle_sim::nemesis` defines.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use isle_net::{Direction, FaultAction, FaultRule};
use isle_sim::nemesis::Effects;
use isle_types::NodeId;
use serde_json::json;
use tokio::process::{Child, Command};

use super::netns::Netns;

/// The AP bucket every AP operation of the workload uses.
pub const BUCKET: &str = "siblings";
/// Replicas per AP key.
pub const AP_REPLICAS: u64 = 3;

/// One node of the cluster: where it listens and keeps its files.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// Its id, `1..=n`.
    pub id: u64,
    /// Peer (transport) address.
    pub peer: String,
    /// HTTP address.
    pub http: String,
    /// Data directory (kept across crashes).
    pub data_dir: PathBuf,
    /// Log file (appended to across restarts).
    pub log: PathBuf,
    /// What runs the node (`ip netns exec NS` in the netns engine).
    pub prefix: Vec<String>,
}

/// How links are broken.
pub enum Fabric {
    /// Each node's transport fault layer.
    Loopback,
    /// The kernel, in per-node namespaces.
    Netns(Netns),
}

struct Proc {
    plan: NodePlan,
    child: Option<Child>,
}

/// The running cluster and the faults in force.
pub struct Cluster {
    procs: Vec<Proc>,
    fabric: Fabric,
    admin: reqwest::Client,
    applied: Effects,
    nodes: u64,
}

/// A tiny seeded generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A port in 20000..30000 nothing listens on, picked pseudo-randomly (below the ephemeral range,
/// so outgoing connections do not take it before the node binds).
fn pick_port(rng: &mut Rng, taken: &BTreeSet<u16>) -> anyhow::Result<u16> {
    for _ in 0..500 {
        let port = 20_000 + u16::try_from(rng.below(10_000))?;
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port found in 20000..30000")
}

/// Addresses and files of `nodes` nodes under `dir`: free loopback ports, or fixed ports on
/// each namespace's own address.
pub fn plan(
    nodes: u64,
    dir: &std::path::Path,
    netns: Option<&Netns>,
) -> anyhow::Result<Vec<NodePlan>> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Rng(nanos ^ (u64::from(std::process::id()) << 32));
    let mut taken = BTreeSet::new();
    let mut plans = Vec::new();
    for id in 1..=nodes {
        let (peer, http, prefix) = match netns {
            Some(net) => {
                let ip = Netns::node_ip(id);
                (
                    format!("{ip}:7000"),
                    format!("{ip}:8000"),
                    net.exec_prefix(id),
                )
            }
            None => {
                let peer = pick_port(&mut rng, &taken)?;
                taken.insert(peer);
                let http = pick_port(&mut rng, &taken)?;
                taken.insert(http);
                (
                    format!("127.0.0.1:{peer}"),
                    format!("127.0.0.1:{http}"),
                    Vec::new(),
                )
            }
        };
        plans.push(NodePlan {
            id,
            peer,
            http,
            data_dir: dir.join(format!("n{id}")),
            log: dir.join(format!("n{id}.log")),
            prefix,
        });
    }
    Ok(plans)
}

fn spawn(plans: &[NodePlan], node: &NodePlan) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the isle binary")?;
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("creating {}", node.data_dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening {}", node.log.display()))?;
    let peers: Vec<&str> = plans
        .iter()
        .filter(|n| n.id != node.id)
        .map(|n| n.peer.as_str())
        .collect();
    let mut command = match node.prefix.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    command
        .arg("node")
        .args(["--id", &node.id.to_string()])
        .args(["--listen", &node.peer, "--http", &node.http])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--bootstrap-expect", &plans.len().to_string()])
        .arg("--allow-fault-injection")
        .args([
            "--ap-bucket",
            &format!("{BUCKET}=siblings:{}", AP_REPLICAS.min(plans.len() as u64)),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C at the terminal reaches only `isle chaos`, which
        // then stops the nodes itself.
        .process_group(0)
        .kill_on_drop(true);
    if !peers.is_empty() {
        command.args(["--peers", &peers.join(",")]);
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting node {}", node.id))?;
    if let Some(pid) = child.id() {
        pids().insert(pid);
    }
    Ok(child)
}

/// Kills `child` (a stopped process dies of SIGKILL too) and reaps it.
async fn reap(mut child: Child) {
    let pid = child.id();
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    if let Some(pid) = pid {
        pids().remove(&pid);
    }
}

/// Pids of every node process this run has started and not yet reaped, for [`kill_all`].
static PIDS: std::sync::Mutex<BTreeSet<u32>> = std::sync::Mutex::new(BTreeSet::new());

fn pids() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    PIDS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills every node process this run started (for Ctrl-C, from another thread than the one
/// that owns them).
#[allow(unsafe_code)]
pub fn kill_all() {
    for pid in pids().iter() {
        if let Ok(pid) = i32::try_from(*pid) {
            // SAFETY: kill(2) on a pid we spawned and have not reaped (so not reused).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[allow(unsafe_code)]
fn signal(child: &Child, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = child.id().context("the node has already exited")?;
    let pid = i32::try_from(pid)?;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    if unsafe { libc::kill(pid, signal) } != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Cluster {
    /// Starts every node.
    pub fn start(plans: Vec<NodePlan>, fabric: Fabric) -> anyhow::Result<Cluster> {
        let mut procs = Vec::new();
        for plan in &plans {
            procs.push(Proc {
                plan: plan.clone(),
                child: Some(spawn(&plans, plan)?),
            });
        }
        Ok(Cluster {
            nodes: plans.len() as u64,
            procs,
            fabric,
            admin: crate::client::http()?,
            applied: Effects::default(),
        })
    }

    /// The nodes' plans.
    pub fn plans(&self) -> Vec<NodePlan> {
        self.procs.iter().map(|p| p.plan.clone()).collect()
    }

    /// Nodes running and not paused (they answer HTTP).
    pub fn live(&self) -> Vec<u64> {
        (1..=self.nodes)
            .filter(|id| !self.applied.down.contains(id) && !self.applied.paused.contains(id))
            .collect()
    }

    /// The CP leader as the first live node that knows one tells it.
    pub async fn cp_leader(&self) -> Option<u64> {
        for id in self.live() {
            let Ok(http) = self.http(id) else { continue };
            if let Ok(status) = crate::client::get(&self.admin, &http, "/v1/status").await
                && let Some(leader) = status["cp"]["leader"].as_u64()
            {
                return Some(leader);
            }
        }
        None
    }

    fn proc(&mut self, id: u64) -> anyhow::Result<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|p| p.plan.id == id)
            .with_context(|| format!("no node {id}"))
    }

    async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let proc = self.proc(id)?;
        if let Some(child) = proc.child.take() {
            reap(child).await;
        }
        Ok(())
    }

    fn respawn(&mut self, id: u64) -> anyhow::Result<()> {
        let plans = self.plans();
        let proc = self.proc(id)?;
        if proc.child.is_none() {
            proc.child = Some(spawn(&plans, &proc.plan)?);
        }
        Ok(())
    }

    /// Waits until node `id` answers HTTP (after a restart), at most `limit`.
    async fn wait_http(&self, id: u64, limit: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/v1/health", self.http(id)?);
        let deadline = Instant::now() + limit;
        loop {
            let answer = self.admin.get(&url).send().await;
            match answer {
                Ok(response) if response.status().is_success() => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!("node {id} not answering {url} within {limit:?}: {answer:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn http(&self, id: u64) -> anyhow::Result<String> {
        self.procs
            .iter()
            .find(|p| p.plan.id == id)
            .map(|p| p.plan.http.clone())
            .with_context(|| format!("no node {id}"))
    }

    /// Moves from the effects in force to `target`; `restart` nodes are killed and started
    /// again. Every step is tried; the errors are returned (a nemesis that could not be made
    /// leaves the run undecided, not aborted).
    pub async fn apply(&mut self, target: &Effects, restart: &[u64]) -> Vec<String> {
        let mut errors = Vec::new();
        let before = self.applied.clone();
        let mut note = |r: anyhow::Result<()>| {
            if let Err(err) = r {
                errors.push(format!("{err:#}"));
            }
        };
        // Wake paused nodes first: everything below needs them answering.
        for id in before.paused.difference(&target.paused) {
            if let Ok(proc) = self.proc(*id)
                && let Some(child) = &proc.child
            {
                note(signal(child, libc::SIGCONT));
            }
        }
        // Crashes and restarts.
        let mut started = BTreeSet::new();
        for id in target.down.difference(&before.down) {
            note(self.kill(*id).await);
        }
        for id in restart.iter().filter(|id| !target.down.contains(id)) {
            note(self.kill(*id).await);
            note(self.respawn(*id));
            started.insert(*id);
        }
        for id in before.down.difference(&target.down) {
            note(self.respawn(*id));
            started.insert(*id);
        }
        for id in &started {
            note(self.wait_http(*id, Duration::from_secs(15)).await);
        }
        // Links. A node still paused cannot answer HTTP: its fault-layer rules wait for its
        // resume (the kernel's do not). A restarted node lost its fault table and skew.
        let still_paused: BTreeSet<u64> = before
            .paused
            .intersection(&target.paused)
            .copied()
            .collect();
        let live: Vec<u64> = (1..=self.nodes)
            .filter(|id| !target.down.contains(id) && !still_paused.contains(id))
            .collect();
        if let Fabric::Netns(net) = &self.fabric {
            for id in 1..=self.nodes {
                note(kernel_rules(net, id, target));
            }
        }
        for id in &live {
            note(self.set_fault_layer(*id, target).await);
        }
        // Clock skew.
        for id in &live {
            let want = target.skew_ms.get(id).copied().unwrap_or(0);
            let had = before.skew_ms.get(id).copied().unwrap_or(0);
            if want != had || (started.contains(id) && want != 0) {
                note(self.set_skew(*id, want).await);
            }
        }
        // Membership.
        for id in target.removed.difference(&before.removed) {
            note(self.change_members(json!({ "Remove": id }), *id).await);
        }
        for id in before.removed.difference(&target.removed) {
            note(self.change_members(json!({ "AddLearner": id }), *id).await);
            note(self.change_members(json!({ "Promote": id }), *id).await);
        }
        // Pause last, once the node has its rules.
        for id in target.paused.difference(&before.paused) {
            if let Ok(proc) = self.proc(*id)
                && let Some(child) = &proc.child
            {
                note(signal(child, libc::SIGSTOP));
            }
        }
        self.applied = target.clone();
        errors
    }

    /// Node `id`'s fault-layer rules for `effects`.
    async fn set_fault_layer(&self, id: u64, effects: &Effects) -> anyhow::Result<()> {
        let kernel = matches!(self.fabric, Fabric::Netns(_));
        let rules = fault_rules(effects, id, self.nodes, kernel);
        let http = self.http(id)?;
        crate::client::delete(&self.admin, &http, "/v1/faults")
            .await
            .with_context(|| format!("clearing the faults of node {id}"))?;
        if !rules.is_empty() {
            crate::client::post(&self.admin, &http, "/v1/faults", &json!(rules))
                .await
                .with_context(|| format!("setting the faults of node {id}"))?;
        }
        Ok(())
    }

    async fn set_skew(&self, id: u64, skew_ms: i64) -> anyhow::Result<()> {
        let http = self.http(id)?;
        crate::client::post(
            &self.admin,
            &http,
            "/v1/faults/clock",
            &json!({ "skew_ms": skew_ms }),
        )
        .await
        .with_context(|| format!("skewing node {id}'s clock by {skew_ms} ms"))?;
        Ok(())
    }

    /// Sends a CP membership change through any running node but `about` (retried for a few
    /// seconds: a leader may be being elected).
    async fn change_members(&self, change: serde_json::Value, about: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            for id in (1..=self.nodes).filter(|id| {
                *id != about && !self.applied.down.contains(id) && !self.applied.paused.contains(id)
            }) {
                let http = self.http(id)?;
                match crate::client::post(&self.admin, &http, "/v1/cp/members", &change).await {
                    Ok(_) => return Ok(()),
                    Err(err) => last = format!("via node {id}: {err:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("CP membership change {change} failed: {last}")
    }

    /// Stops every node and, for the netns engine, deletes the namespaces.
    pub async fn shutdown(&mut self) -> Vec<String> {
        for proc in &mut self.procs {
            if let Some(child) = &mut proc.child {
                let _ = child.start_kill();
            }
        }
        for proc in &mut self.procs {
            if let Some(child) = proc.child.take() {
                reap(child).await;
            }
        }
        match &mut self.fabric {
            Fabric::Netns(net) => net.cleanup(),
            Fabric::Loopback => Vec::new(),
        }
    }
}

/// Node `id`'s kernel rules for `effects`: cuts, and random loss on flaky links.
fn kernel_rules(net: &Netns, id: u64, effects: &Effects) -> anyhow::Result<()> {
    let cut_from: BTreeSet<u64> = effects
        .cuts
        .iter()
        .filter(|(_, to)| *to == id)
        .map(|(from, _)| *from)
        .collect();
    let cut_to: BTreeSet<u64> = effects
        .cuts
        .iter()
        .filter(|(from, _)| *from == id)
        .map(|(_, to)| *to)
        .collect();
    let lossy: Vec<(u64, u32)> = effects
        .flaky
        .iter()
        .filter_map(|((a, b), link)| {
            let peer = if *a == id {
                *b
            } else if *b == id {
                *a
            } else {
                return None;
            };
            let per_mille = (link.fail_rate.clamp(0.0, 1.0) * 1000.0).round() as u32;
            (per_mille > 0).then_some((peer, per_mille))
        })
        .collect();
    net.set_rules(id, &cut_from, &cut_to, &lossy)
}

/// The fault-layer rules node `id` gets for `effects`: with `kernel`, only what the kernel does
/// not make (delays, duplicates, corrupted frames); else cuts and losses too.
pub fn fault_rules(effects: &Effects, id: u64, nodes: u64, kernel: bool) -> Vec<FaultRule> {
    let rule = |peer: u64, direction: Direction, action: FaultAction, probability: f64| FaultRule {
        peer: NodeId(peer),
        direction,
        action,
        probability: probability.clamp(0.0, 1.0),
    };
    let mut rules = Vec::new();
    if !kernel {
        for (from, to) in &effects.cuts {
            if *from == id {
                rules.push(rule(*to, Direction::Outbound, FaultAction::Drop, 1.0));
            } else if *to == id {
                rules.push(rule(*from, Direction::Inbound, FaultAction::Drop, 1.0));
            }
        }
    }
    for ((a, b), link) in &effects.flaky {
        let peer = match (*a == id, *b == id) {
            (true, _) => *b,
            (_, true) => *a,
            _ => continue,
        };
        // Losses on the inbound side only, so each direction loses `fail_rate`, not twice it.
        if !kernel {
            rules.push(rule(
                peer,
                Direction::Inbound,
                FaultAction::Drop,
                link.fail_rate,
            ));
        }
        rules.push(rule(
            peer,
            Direction::Inbound,
            FaultAction::Duplicate,
            link.fail_rate,
        ));
        // Half the messages wait up to the maximum: later ones overtake them (reordering).
        if link.latency_ms_max > 0 {
            rules.push(rule(
                peer,
                Direction::Outbound,
                FaultAction::Delay {
                    ms: link.latency_ms_max.min(isle_net::DELAY_MS_MAX),
                },
                0.5,
            ));
        }
    }
    // Corrupted frames on every link of a corrupting node, as its peers receive them.
    for peer in (1..=nodes).filter(|peer| *peer != id) {
        let rate = [id, peer]
            .iter()
            .filter_map(|n| effects.corrupt.get(n))
            .fold(0.0_f64, |a, b| a.max(*b));
        if rate > 0.0 {
            rules.push(rule(peer, Direction::Inbound, FaultAction::Corrupt, rate));
        }
    }
    rules
}

/// Node `id` → how many rules, for a quick look in tests.
#[cfg(test)]
fn counts(effects: &Effects, nodes: u64, kernel: bool) -> std::collections::BTreeMap<u64, usize> {
    (1..=nodes)
        .map(|id| (id, fault_rules(effects, id, nodes, kernel).len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use isle_sim::nemesis::{Nemesis, Sides};

    #[test]
    fn cuts_become_drop_rules_only_without_the_kernel() {
        let split = Nemesis::Partition {
            sides: Sides::Groups(vec![vec![1, 2, 3]]),
        };
        let effects = Effects::of([&split], 5);
        let rules = fault_rules(&effects, 4, 5, false);
        // 4 is cut from 1, 2, 3 both ways: an outbound and an inbound drop each.
        assert_eq!(rules.len(), 6);
        assert!(rules.iter().all(|r| r.action == FaultAction::Drop));
        assert!(counts(&effects, 5, true).values().all(|n| *n == 0));
    }

    #[test]
    fn one_way_cuts_drop_only_one_direction() {
        let one_way = Nemesis::OneWay {
            from: vec![1],
            to: vec![2],
        };
        let effects = Effects::of([&one_way], 3);
        let on_1 = fault_rules(&effects, 1, 3, false);
        let on_2 = fault_rules(&effects, 2, 3, false);
        assert_eq!(on_1[0].direction, Direction::Outbound);
        assert_eq!(on_2[0].direction, Direction::Inbound);
        assert!(fault_rules(&effects, 3, 3, false).is_empty());
    }

    #[test]
    fn corrupt_and_flaky_links_stay_in_the_fault_layer() {
        let corrupt = Nemesis::Corrupt {
            nodes: vec![2],
            rate: 0.2,
        };
        let flaky = Nemesis::Flaky {
            nodes: vec![1],
            fail_rate: 0.05,
            latency_ms_max: 100,
        };
        let effects = Effects::of([&corrupt, &flaky], 3);
        let on_1 = fault_rules(&effects, 1, 3, true);
        assert!(on_1.iter().any(|r| r.action == FaultAction::Corrupt));
        assert!(
            on_1.iter()
                .any(|r| matches!(r.action, FaultAction::Delay { .. }))
        );
        assert!(!on_1.iter().any(|r| r.action == FaultAction::Drop));
        assert!(
            fault_rules(&effects, 1, 3, false)
                .iter()
                .any(|r| r.action == FaultAction::Drop)
        );
    }
}
