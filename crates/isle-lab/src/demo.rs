//! `isle demo`: the flooded-bridge story on five real `isle node` processes.
//!
//! East Isle (nodes 1, 2, 3) and West Isle (nodes 4, 5) share one bridge. The demo starts the
//! nodes, floods the bridge (a 3|2 split through each node's transport fault layer), pauses a
//! leader into a zombie, reopens the bridge, and narrates what the nodes *answered* at each step:
//! every outcome printed comes from an HTTP answer or a status read, every time is measured. With
//! `--json`, the same steps are one JSON event per line on stdout (for tools and the test).
//!
//! The acts run in this order: calm, flood, bridge reopens, zombie, summary. The zombie comes
//! after the heal on purpose: with the bridge down East holds exactly 3 of 5 votes, so pausing
//! East's leader would leave no majority anywhere and no successor could be elected.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Node, NodeSpec, Ports};
use anyhow::{Context, bail};
use clap::Args;
use isle_api::wire::cp::Fence;
use isle_api::wire::{ErrorBody, ap, cp};
use isle_detect::State;
use isle_net::{Direction, FaultAction, FaultRule};
use isle_node::StatusReport;
use isle_types::NodeId;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Value, json};

use crate::netns::Netns;

/// Flags of `isle demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Wait for Enter between acts.
    #[arg(long)]
    step: bool,
    /// One JSON event per line on stdout instead of the narration.
    #[arg(long)]
    json: bool,
    /// Keep the nodes (and the dashboard) running after the story until Ctrl-C, and keep the
    /// data directory afterwards.
    #[arg(long)]
    keep: bool,
    /// Node i listens for peers on BASE+i and for HTTP (API and dashboard) on BASE+1000+i.
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// Directory for the nodes' data and logs (default: a new directory under the system's
    /// temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run each node in its own network namespace and flood the bridge with nftables (root,
    /// `ip` and `nft` needed; the dashboard is then reachable only inside the namespaces).
    #[arg(long)]
    netns: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            step: false,
            json: false,
            keep: false,
            base_port: 7400,
            dir: None,
            netns: false,
        }
    }
}

/// East Isle.
const EAST: [u64; 3] = [1, 2, 3];
/// West Isle.
const WEST: [u64; 2] = [4, 5];
/// A CP client waits longer than a node's own bound, so the node's typed answer is what we see.
const CP_TIMEOUT: Duration = Duration::from_secs(12);
/// Limit for any one wait of the story; a healthy run needs a fraction of it.
const WAIT_LIMIT: Duration = Duration::from_secs(40);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

fn side_of(id: u64) -> &'static str {
    if EAST.contains(&id) { "East" } else { "West" }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// The five nodes' specs: fixed ports from `--base-port` on loopback, or each namespace's own
/// address; a zone per island, anti-entropy and hints brisk enough for a short story, and a
/// STONITH hook that only records what it would do.
fn plan(args: &DemoArgs, dir: &Path, net: Option<&Netns>) -> anyhow::Result<Vec<NodeSpec>> {
    let mut specs = match net {
        // Each namespace has its own loopback and address: the same ports everywhere.
        Some(net) => net.specs(dir),
        None => crate::plan(5, dir, Ports::Base(args.base_port))?,
    };
    // The fencing (STONITH) hook a new CP leader runs against the previous one. Here it only
    // records what it would do: the zombie must live on to show that fencing tokens alone keep
    // its late write out. `isle local --stonith` shows the hook that kills.
    let fence_log = dir.join("stonith.log");
    let fence = format!(
        "echo \"$(date +%H:%M:%S.%N | cut -c1-12) STONITH requested against node {{node}} (pid \
         $(cat '{}/n{{node}}/isle.pid')): the demo's hook records it; a real one would power \
         the machine off\" >> '{}'",
        dir.display(),
        fence_log.display()
    );
    for spec in &mut specs {
        let zone = if EAST.contains(&spec.id) {
            "east"
        } else {
            "west"
        };
        spec.bootstrap_expect = Some(5);
        spec.fault_injection = true;
        spec.flags = [
            "--zone",
            zone,
            "--aae-interval-ms",
            "1000",
            "--hint-interval-ms",
            "300",
            "--fence-command",
            &fence,
        ]
        .map(String::from)
        .to_vec();
        // Own process group: Ctrl-C reaches the demo, which then stops the nodes itself.
        spec.own_process_group = true;
    }
    Ok(specs)
}

// ---------------------------------------------------------------------------------------------
// Output.

/// Where the story goes: narration for people, or JSON events for tools.
struct Out {
    json: bool,
    tty: bool,
    start: Instant,
    /// Whether a progress line is on screen (to be cleared before the next line).
    progress_shown: bool,
}

impl Out {
    fn say(&mut self, text: impl AsRef<str>) {
        if self.json {
            return;
        }
        self.clear_progress();
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) must not stop the story before the nodes are stopped.
        let _ = writeln!(stdout, "{}", text.as_ref());
        let _ = stdout.flush();
    }

    /// One event: for `--json`, a line on stdout.
    fn event(&mut self, act: u32, name: &str, mut fields: Value) {
        if !self.json {
            return;
        }
        if let Value::Object(map) = &mut fields {
            map.insert("act".into(), json!(act));
            map.insert("event".into(), json!(name));
            map.insert("at_ms".into(), json!(ms(self.start.elapsed())));
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{fields}");
        let _ = stdout.flush();
    }

    fn progress(&mut self, what: &str, waited: Duration) {
        if self.json || !self.tty {
            return;
        }
        const SPIN: [char; 4] = ['|', '/', '-', '\\'];
        let frame = SPIN[(waited.as_millis() / 120) as usize % SPIN.len()];
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2K  {frame} {what} ({:.1} s)",
            waited.as_secs_f64()
        );
        let _ = stderr.flush();
        self.progress_shown = true;
    }

    fn clear_progress(&mut self) {
        if self.progress_shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.progress_shown = false;
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// One answer from a node: status code (None: no answer at all) and JSON body.
#[derive(Debug, Clone)]
struct Answer {
    code: Option<u16>,
    body: Value,
    took: Duration,
}

impl Answer {
    fn ok(&self) -> bool {
        self.code == Some(200)
    }

    /// Worth retrying: no answer, 500, 503 or 504.
    fn transient(&self) -> bool {
        matches!(self.code, None | Some(500 | 503 | 504))
    }

    /// The body as the answer `T` it should be, if it is one.
    fn parse<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.body.clone()).ok()
    }

    /// The body as an error, if it is one.
    fn error(&self) -> Option<ErrorBody> {
        self.parse()
    }

    /// The error's sentence, or the whole answer.
    fn sentence(&self) -> String {
        self.error()
            .map_or_else(|| self.describe(), |error| error.error)
    }

    fn kind(&self) -> String {
        match self.error().and_then(|error| error.name()) {
            Some(name) => name,
            None => match self.code {
                Some(code) => format!("HTTP {code}"),
                None => "no answer".to_string(),
            },
        }
    }

    /// The revision a CP put created, for the narration.
    fn revision(&self) -> String {
        shown(self.parse::<cp::PutReply>().map(|put| put.revision))
    }

    /// The value an AP write left, for the narration: a set's members as a JSON list, a
    /// counter's count.
    fn written(&self) -> String {
        match self.parse::<ap::WriteReply>().map(|reply| reply.data) {
            Some(ap::Data::Counter(n)) => n.to_string(),
            Some(ap::Data::Set(members)) => serde_json::to_string(&members).unwrap_or_default(),
            _ => shown(None::<i64>),
        }
    }

    fn describe(&self) -> String {
        match self.code {
            Some(code) => format!("{code} {}", self.body),
            None => format!("no answer: {}", self.body),
        }
    }

    fn json(&self) -> Value {
        json!({"code": self.code, "body": self.body, "took_ms": ms(self.took)})
    }
}

/// The demo's view of the cluster: specs, processes (once started) and an HTTP client.
struct Cluster {
    specs: Vec<NodeSpec>,
    nodes: Vec<Node>,
    client: reqwest::Client,
}

impl Cluster {
    fn http(&self, id: u64) -> &str {
        &self.specs[(id - 1) as usize].http
    }

    async fn call(
        &self,
        method: reqwest::Method,
        id: u64,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Answer {
        let url = format!("http://{}{path}", self.http(id));
        let mut request = self.client.request(method, url).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let code = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                Answer {
                    code: Some(code),
                    body,
                    took: started.elapsed(),
                }
            }
            Err(err) => Answer {
                code: None,
                body: Value::String(err.to_string()),
                took: started.elapsed(),
            },
        }
    }

    async fn get(&self, id: u64, path: &str) -> Answer {
        self.call(
            reqwest::Method::GET,
            id,
            path,
            NO_BODY,
            Duration::from_secs(2),
        )
        .await
    }

    async fn post(&self, id: u64, path: &str, body: &(impl Serialize + ?Sized)) -> Answer {
        self.call(reqwest::Method::POST, id, path, Some(body), CP_TIMEOUT)
            .await
    }

    async fn put(&self, id: u64, path: &str, body: &(impl Serialize + ?Sized)) -> Answer {
        self.call(reqwest::Method::PUT, id, path, Some(body), CP_TIMEOUT)
            .await
    }

    async fn status(&self, id: u64) -> Result<StatusReport, String> {
        let answer = self.get(id, "/v1/status").await;
        if !answer.ok() {
            return Err(format!("node {id}: {}", answer.describe()));
        }
        serde_json::from_value(answer.body)
            .map_err(|err| format!("node {id}: not a status report: {err}"))
    }

    /// The sum over `ids` of every sample of metric `name` (any labels) in `/metrics`.
    async fn metric_sum(&self, ids: &[u64], name: &str) -> f64 {
        let mut total = 0.0;
        for id in ids {
            let url = format!("http://{}/metrics", self.http(*id));
            let Ok(response) = self.client.get(url).send().await else {
                continue;
            };
            let text = response.text().await.unwrap_or_default();
            total += crate::metrics::sum(&text, name);
        }
        total
    }

    fn node(&self, id: u64) -> anyhow::Result<&Node> {
        self.nodes
            .get((id - 1) as usize)
            .with_context(|| format!("node {id} is not running"))
    }
}

// ---------------------------------------------------------------------------------------------
// The story.

/// What each act measured, for the summary and the verdict.
#[derive(Default)]
struct Findings {
    rows: Vec<(String, String)>,
    broken: Vec<String>,
}

impl Findings {
    fn row(&mut self, mechanism: &str, what: impl Into<String>) {
        self.rows.push((mechanism.to_string(), what.into()));
    }

    fn broken(&mut self, what: impl Into<String>) {
        self.broken.push(what.into());
    }
}

struct Story {
    args: DemoArgs,
    out: Out,
    cluster: Cluster,
    findings: Findings,
    dir: PathBuf,
    /// The keys East wrote with `strict=true` during the flood (anti-entropy's work).
    strict_keys: Vec<String>,
    /// With `--netns`: the namespaces (deleted, with what runs in them, when dropped).
    net: Option<Netns>,
}

/// Runs the demo: start, tell the story, stop (and clean up unless `--keep`).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !args.netns {
        return tell(args, None).await;
    }
    crate::netns::preflight()?;
    // Sockets belong to the namespace of the thread that opens them: the story runs on its own
    // thread, moved into the client namespace, with a runtime of its own.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let net = Netns::create(5)?;
            net.enter_client()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the story's runtime")?;
            runtime.block_on(tell(args, Some(net)))
        })();
        let _ = done_tx.send(result);
    });
    done_rx.await.unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "the story's thread ended without an answer"
        ))
    })
}

async fn tell(args: DemoArgs, net: Option<Netns>) -> anyhow::Result<()> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("isle-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let specs = plan(&args, &dir, net.as_ref())?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("building HTTP client")?;
    let mut story = Story {
        out: Out {
            json: args.json,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            progress_shown: false,
        },
        args,
        cluster: Cluster {
            specs,
            nodes: Vec::new(),
            client,
        },
        findings: Findings::default(),
        dir,
        strict_keys: Vec::new(),
        net,
    };
    let told = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        told = story.tell() => told,
    };
    story.out.clear_progress();
    if told.is_ok() && story.args.keep {
        story.out.say(format!(
            "\nThe nodes keep running (--keep): dashboard http://{}/dashboard. Ctrl-C stops them.",
            story.cluster.http(1)
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    story.stop();
    if story.args.keep {
        story
            .out
            .say(format!("data kept in {}", story.dir.display()));
    } else if let Err(err) = std::fs::remove_dir_all(&story.dir) {
        story
            .out
            .say(format!("could not remove {}: {err}", story.dir.display()));
    }
    told?;
    if !story.findings.broken.is_empty() {
        bail!(
            "the cluster did not keep a promise: {}",
            story.findings.broken.join("; ")
        );
    }
    Ok(())
}

impl Story {
    async fn tell(&mut self) -> anyhow::Result<()> {
        self.start_nodes().await?;
        self.act_calm().await?;
        self.pause().await;
        self.act_flood().await?;
        self.pause().await;
        self.act_reopen().await?;
        self.pause().await;
        self.act_zombie().await?;
        self.pause().await;
        self.act_summary();
        Ok(())
    }

    async fn pause(&mut self) {
        if !self.args.step || self.args.json {
            return;
        }
        self.out.say("\n  [press Enter for the next act]");
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)
        })
        .await;
    }

    /// Polls `check` until it answers `Ok`, showing progress; the value and the time it took.
    async fn wait<T>(
        &mut self,
        what: &str,
        mut check: impl AsyncFnMut(&Cluster) -> Result<T, String>,
    ) -> anyhow::Result<(T, Duration)> {
        let started = Instant::now();
        loop {
            match check(&self.cluster).await {
                Ok(value) => {
                    self.out.clear_progress();
                    return Ok((value, started.elapsed()));
                }
                Err(why) if started.elapsed() > WAIT_LIMIT => {
                    self.out.clear_progress();
                    bail!(
                        "gave up waiting for {what} after {}: {why} (node logs in {})",
                        secs(WAIT_LIMIT),
                        self.dir.display()
                    );
                }
                Err(_) => {}
            }
            self.out.progress(what, started.elapsed());
            tokio::time::sleep(POLL).await;
        }
    }

    async fn start_nodes(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the isle binary")?;
        for spec in &self.cluster.specs {
            self.cluster.nodes.push(Node::start(spec.clone(), &exe)?);
        }
        let dashboard = format!("http://{}/dashboard", self.cluster.http(1));
        self.out
            .say("Isle demo: the flooded bridge. Five real `isle node` processes on this machine.");
        self.out.say(format!(
            "  East Isle: nodes 1, 2, 3    West Isle: nodes 4, 5    data and logs: {}",
            self.dir.display()
        ));
        match &self.net {
            Some(net) => self.out.say(format!(
                "  each node in its own network namespace; links cut by nftables. dashboard: \
                 {dashboard}, reachable inside the client namespace (ip netns exec {} ...)",
                net.client_ns()
            )),
            None => self.out.say(format!(
                "  dashboard: {dashboard}   (every node serves one on its HTTP port)"
            )),
        }
        let endpoints: Vec<Value> = self
            .cluster
            .specs
            .iter()
            .map(|n| json!({"id": n.id, "http": n.http, "peer": n.peer, "side": side_of(n.id)}))
            .collect();
        let dir = self.dir.display().to_string();
        self.out.event(
            0,
            "started",
            json!({"dir": dir, "dashboard": dashboard, "nodes": endpoints}),
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Act 1.

    async fn act_calm(&mut self) -> anyhow::Result<()> {
        self.out.say("\nAct 1: a calm day on the islands");
        let (_, took) = self
            .wait("five nodes hearing each other", async |c: &Cluster| {
                for id in 1..=5 {
                    let status = c.status(id).await?;
                    let heard = reachable(&status);
                    if heard.len() < 4 || status.node.state != State::Normal {
                        return Err(format!("node {id} hears {heard:?}, {}", status.node.state));
                    }
                }
                Ok(())
            })
            .await?;
        let ((leader, term), elected) = self
            .wait("the CP leader", async |c: &Cluster| {
                agreed_leader(c, &[1, 2, 3, 4, 5], None, 0).await
            })
            .await?;
        let status = self.cluster.status(4).await.map_err(anyhow::Error::msg)?;
        let quorum = status.node.quorum_reason;
        self.out.say(format!(
            "  all five nodes up and hearing each other after {}; state Normal everywhere",
            secs(took)
        ));
        self.out.say(format!(
            "  CP leader: node {leader} ({}), term {term}; node 4 says: {quorum}",
            side_of(leader)
        ));
        self.out.event(
            1,
            "healthy",
            json!({"leader": leader, "term": term, "quorum": quorum,
                   "mesh_ms": ms(took), "leader_ms": ms(elected)}),
        );

        let put = cp_put("account/alice", "100", "demo-open", None);
        let answer = self.cp_put_settled(1, &put).await?;
        self.out.say(format!(
            "  CP  put account/alice = 100 via node 1: {} (revision {}, {} ms)",
            if answer.ok() { "accepted" } else { "REFUSED" },
            answer.revision(),
            ms(answer.took)
        ));
        self.out.event(
            1,
            "cp_write",
            json!({"asked": "put account/alice=100 via node 1", "answered": answer.json(),
                   "outcome": if answer.ok() { "accepted" } else { "refused" }}),
        );
        let cart = self
            .ap_post(1, 1, "default/cart/sadd", &members(&["apples"]))
            .await;
        self.out.say(format!(
            "  AP  cart += apples via node 1: cart {} ({})",
            cart.written(),
            replicas(&cart)
        ));
        let likes = self
            .ap_post(1, 1, "default/likes/incr", &incr(1, "likes-1"))
            .await;
        self.out.say(format!(
            "  AP  likes += 1 via node 1: likes = {} ({})",
            likes.written(),
            replicas(&likes)
        ));
        Ok(())
    }

    /// POSTs a CP write, retrying transient refusals (not during the flood: there a refusal
    /// is the point).
    async fn cp_put_settled(&mut self, via: u64, body: &cp::PutBody) -> anyhow::Result<Answer> {
        let (answer, _) = self
            .wait("a CP write to be answered", async |c: &Cluster| {
                let answer = c.post(via, "/v1/cp/put", body).await;
                if answer.transient() {
                    Err(answer.describe())
                } else {
                    Ok(answer)
                }
            })
            .await?;
        Ok(answer)
    }

    /// An AP operation (`bucket/key/op`) via node `via`, recorded as an event.
    async fn ap_post(
        &mut self,
        act: u32,
        via: u64,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Answer {
        let answer = self
            .cluster
            .post(via, &format!("/v1/ap/{path}"), body)
            .await;
        let body = serde_json::to_string(body).unwrap_or_default();
        self.out.event(
            act,
            "ap_write",
            json!({"asked": format!("POST /v1/ap/{path} {body} via node {via} ({})", side_of(via)),
                   "answered": answer.json(),
                   "outcome": if answer.ok() { "accepted" } else { "refused" }}),
        );
        answer
    }

    async fn ap_put(&mut self, act: u32, via: u64, path: &str, value: &str) -> Answer {
        let body = ap::PutBody {
            value: value.to_string(),
            ..ap::PutBody::default()
        };
        let answer = self
            .cluster
            .put(via, &format!("/v1/ap/{path}"), &body)
            .await;
        let body = serde_json::to_string(&body).unwrap_or_default();
        self.out.event(
            act,
            "ap_write",
            json!({"asked": format!("PUT /v1/ap/{path} {body} via node {via} ({})", side_of(via)),
                   "answered": answer.json(),
                   "outcome": if answer.ok() { "accepted" } else { "refused" }}),
        );
        answer
    }

    // -----------------------------------------------------------------------------------------
    // Act 2.

    async fn act_flood(&mut self) -> anyhow::Result<()> {
        self.out
            .say("\nAct 2: the bridge floods (every link between East and West is cut)");
        let cut_at = Instant::now();
        for id in 1..=5u64 {
            if let Some(net) = &self.net {
                let others: BTreeSet<u64> = if EAST.contains(&id) {
                    WEST.into()
                } else {
                    EAST.into()
                };
                net.set_rules(id, &others, &others, &[])?;
                continue;
            }
            let others: Vec<u64> = if EAST.contains(&id) {
                WEST.to_vec()
            } else {
                EAST.to_vec()
            };
            let rules: Vec<FaultRule> = others
                .iter()
                .map(|p| FaultRule {
                    peer: NodeId(*p),
                    direction: Direction::Both,
                    action: FaultAction::Drop,
                    probability: 1.0,
                })
                .collect();
            let answer = self.cluster.post(id, "/v1/faults", &rules).await;
            if answer.code != Some(201) {
                bail!("cutting node {id}'s links: {}", answer.describe());
            }
        }
        // Poll every node until each has noticed and settled; times from the cut.
        let mut noticed: BTreeMap<u64, Duration> = BTreeMap::new();
        let mut settled: BTreeMap<u64, (Duration, String, String)> = BTreeMap::new();
        self.wait("every node to notice the flood", async |c: &Cluster| {
            for id in 1..=5u64 {
                if settled.contains_key(&id) {
                    continue;
                }
                let Ok(status) = c.status(id).await else {
                    continue;
                };
                let state = status.node.state;
                if state != State::Normal {
                    noticed.entry(id).or_insert_with(|| cut_at.elapsed());
                }
                if matches!(state, State::Degraded | State::Emergency) {
                    let reason = status.node.quorum_reason;
                    settled.insert(id, (cut_at.elapsed(), state.to_string(), reason));
                }
            }
            if settled.len() == 5 {
                Ok(())
            } else {
                Err(format!("settled: {:?}", settled.keys().collect::<Vec<_>>()))
            }
        })
        .await?;
        for (id, (at, state, reason)) in &settled {
            let seen = noticed.get(id).copied().unwrap_or(*at);
            self.out.say(format!(
                "  node {id} ({}): noticed after {}, {state} after {}: {reason}",
                side_of(*id),
                secs(seen),
                secs(*at)
            ));
            self.out.event(
                2,
                "detected",
                json!({"node": id, "side": side_of(*id), "state": state, "noticed_ms": ms(seen),
                       "settled_ms": ms(*at), "quorum": reason}),
            );
        }
        let slowest = settled
            .values()
            .map(|(at, _, _)| *at)
            .max()
            .unwrap_or_default();
        self.findings.row(
            "failure detection (phi accrual)",
            format!("all 5 nodes classified the split within {}", secs(slowest)),
        );

        // CP: West asks, East asks.
        let west_put = cp_put("account/alice", "0", "west-drain", None);
        let west = self.cluster.post(4, "/v1/cp/put", &west_put).await;
        let refused = west.error().and_then(|e| e.kind).as_deref() == Some("NoQuorum");
        self.out.say(format!(
            "  CP  West: put account/alice = 0 via node 4: {} in {} ms: {}",
            if west.ok() { "ACCEPTED" } else { "refused" },
            ms(west.took),
            west.sentence()
        ));
        self.out.event(
            2,
            "cp_write_minority",
            json!({"asked": "put account/alice=0 via node 4 (West, 2 of 5)",
                   "answered": west.json(), "kind": west.kind(),
                   "outcome": if west.ok() { "accepted" } else { "refused" }}),
        );
        if west.ok() {
            self.findings
                .broken("the minority (West) accepted a CP write during the split");
        }
        let east_put = cp_put("account/alice", "70", "east-pay", None);
        let before = Instant::now();
        let east = self.cp_put_settled(2, &east_put).await?;
        self.out.say(format!(
            "  CP  East: put account/alice = 70 via node 2: {} (revision {}) after {}",
            if east.ok() { "accepted" } else { "REFUSED" },
            east.revision(),
            secs(before.elapsed())
        ));
        self.out.event(
            2,
            "cp_write_majority",
            json!({"asked": "put account/alice=70 via node 2 (East, 3 of 5)",
                   "answered": east.json(), "kind": east.kind(), "waited_ms": ms(before.elapsed()),
                   "outcome": if east.ok() { "accepted" } else { "refused" }}),
        );
        if !east.ok() {
            self.findings
                .broken("the majority (East) could not write during the split");
        }
        self.findings.row(
            "quorum (CP writes)",
            format!(
                "West refused ({}) in {} ms; East accepted (revision {})",
                west.kind(),
                ms(west.took),
                east.revision()
            ),
        );
        if !refused && !west.ok() {
            self.out.say(format!(
                "      (West's refusal was {}, not NoQuorum)",
                west.kind()
            ));
        }

        // AP: both sides keep shopping and liking.
        let mut ap_refused = 0;
        for (via, item, by, rid) in [(1, "bread", 2, "likes-east"), (4, "milk", 3, "likes-west")] {
            let cart = self
                .ap_post(2, via, "default/cart/sadd", &members(&[item]))
                .await;
            let likes = self
                .ap_post(2, via, "default/likes/incr", &incr(by, rid))
                .await;
            ap_refused += usize::from(!cart.ok()) + usize::from(!likes.ok());
            self.out.say(format!(
                "  AP  {}: cart += {item} -> {} ({}); likes += {by} -> {} ({})",
                side_of(via),
                cart.written(),
                replicas(&cart),
                likes.written(),
                replicas(&likes)
            ));
        }
        let east_lww = self.ap_put(2, 1, "lww/banner", "east: bridge closed").await;
        // Later by the wall clock, so its hybrid timestamp is the higher one.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let west_lww = self.ap_put(2, 4, "lww/banner", "west: ferry at noon").await;
        self.out.say(format!(
            "  AP  lww/banner written on both sides: East {}, West {} (one will win at the heal)",
            short(&east_lww),
            short(&west_lww)
        ));
        let east_note = self
            .ap_put(2, 1, "default/meeting", "meet at the east pier")
            .await;
        let west_note = self
            .ap_put(2, 4, "default/meeting", "meet at the west pier")
            .await;
        self.out.say(format!(
            "  AP  default/meeting (siblings) written on both sides: East {}, West {}",
            short(&east_note),
            short(&west_note)
        ));
        ap_refused += [&east_lww, &west_lww, &east_note, &west_note]
            .iter()
            .filter(|a| !a.ok())
            .count();
        // Strict writes make no hints: only anti-entropy can carry them across after the heal.
        let mut strict = 0;
        for i in 0..12 {
            let path = format!("/v1/ap/default/tide-{i}?w=one&strict=true");
            let reading = ap::PutBody {
                value: format!("east reading {i}"),
                ..ap::PutBody::default()
            };
            let answer = self.cluster.put(1, &path, &reading).await;
            if answer.ok() {
                strict += 1;
                self.strict_keys.push(format!("tide-{i}"));
            }
        }
        self.out.say(format!(
            "  AP  East logs {strict} tide readings with strict=true (no hints: only Merkle \
             anti-entropy can carry them west)"
        ));
        let mut hints = BTreeMap::new();
        for id in 1..=5u64 {
            if let Ok(status) = self.cluster.status(id).await {
                hints.insert(id, status.ap.hints_pending);
            }
        }
        let total: u64 = hints.values().sum();
        self.out.say(format!(
            "  AP  {} AP writes refused; hints held for unreachable replicas: {total} ({})",
            ap_refused,
            hints
                .iter()
                .map(|(id, n)| format!("node {id}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.out.event(
            2,
            "ap_during_split",
            json!({"refused": ap_refused, "hints_pending": total, "strict_written": strict}),
        );
        if ap_refused > 0 {
            self.findings
                .broken(format!("{ap_refused} AP writes refused during the split"));
        }
        self.findings.row(
            "sloppy quorum (AP writes)",
            format!(
                "both sides kept writing ({ap_refused} refused); {total} hints held for the \
                 other side"
            ),
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Act 3.

    async fn act_reopen(&mut self) -> anyhow::Result<()> {
        self.out.say("\nAct 3: the bridge reopens");
        let all = [1, 2, 3, 4, 5];
        let names = [
            "isle_ap_hints_delivered_total",
            "isle_ap_aae_exchanges_total",
            "isle_ap_aae_keys_diverged_total",
            "isle_ap_aae_keys_repaired_total",
            "isle_ap_aae_bytes_total",
            "isle_ap_read_repairs_total",
        ];
        let mut before = BTreeMap::new();
        for name in names {
            before.insert(name, self.cluster.metric_sum(&all, name).await);
        }
        let leader_commit = {
            let (leader, _) = agreed_leader(&self.cluster, &EAST, None, 0)
                .await
                .map_err(anyhow::Error::msg)?;
            let status = self
                .cluster
                .status(leader)
                .await
                .map_err(anyhow::Error::msg)?;
            status.cp.commit_index.unwrap_or(0)
        };
        let healed_at = Instant::now();
        for id in all {
            if let Some(net) = &self.net {
                net.set_rules(id, &BTreeSet::new(), &BTreeSet::new(), &[])?;
                continue;
            }
            let answer = self
                .cluster
                .call(
                    reqwest::Method::DELETE,
                    id,
                    "/v1/faults",
                    NO_BODY,
                    Duration::from_secs(2),
                )
                .await;
            if answer.code != Some(204) {
                bail!("healing node {id}: {}", answer.describe());
            }
        }
        let (_, mesh) = self
            .wait("every node to hear every other", async |c: &Cluster| {
                for id in 1..=5 {
                    let heard = reachable(&c.status(id).await?);
                    if heard.len() < 4 {
                        return Err(format!("node {id} hears {heard:?}"));
                    }
                }
                Ok(())
            })
            .await?;
        self.out.say(format!(
            "  all links back after {} (heartbeats heard again)",
            secs(mesh)
        ));

        // CP: West catches up on the log it missed.
        let (value, _) = self
            .wait("West to catch up on the CP log", async |c: &Cluster| {
                let mut value = String::new();
                for id in WEST {
                    let status = c.status(id).await?;
                    let applied = status.cp.applied_index.unwrap_or(0);
                    if applied < leader_commit {
                        return Err(format!("node {id} applied {applied} < {leader_commit}"));
                    }
                    let answer = c
                        .get(id, "/v1/cp/get?key=account/alice&consistency=stale")
                        .await;
                    value = first_value(&answer).unwrap_or_default();
                }
                Ok(value)
            })
            .await?;
        let caught_up = healed_at.elapsed();
        self.out.say(format!(
            "  CP  West caught up on the Raft log {} after the heal: node 4 and 5 now read \
             account/alice = {value} (East's write; West's was never applied)",
            secs(caught_up)
        ));
        self.out.event(
            3,
            "cp_caught_up",
            json!({"ms": ms(caught_up), "account_alice_on_west": value, "commit_index": leader_commit}),
        );
        self.findings.row(
            "Raft log catch-up",
            format!(
                "West applied East's writes {} after the heal",
                secs(caught_up)
            ),
        );

        // AP: hinted handoff, then anti-entropy, with no client reading.
        let (_, _) = self
            .wait("every hint to be handed off", async |c: &Cluster| {
                let mut pending = 0;
                for id in 1..=5 {
                    pending += c.status(id).await?.ap.hints_pending;
                }
                if pending == 0 {
                    Ok(())
                } else {
                    Err(format!("{pending} hints pending"))
                }
            })
            .await?;
        let handed = healed_at.elapsed();
        let mut keys: Vec<(String, String)> = [
            ("default", "cart"),
            ("default", "likes"),
            ("lww", "banner"),
            ("default", "meeting"),
        ]
        .iter()
        .map(|(b, k)| (b.to_string(), k.to_string()))
        .collect();
        keys.extend(
            self.strict_keys
                .iter()
                .map(|key| ("default".to_string(), key.clone())),
        );
        let (_, _) = self
            .wait(
                "every replica of every key to agree",
                async |c: &Cluster| {
                    for (bucket, key) in &keys {
                        converged(c, bucket, key).await?;
                    }
                    Ok(())
                },
            )
            .await?;
        let converged_in = healed_at.elapsed();
        let (_, _) = self
            .wait("every node back to Normal", async |c: &Cluster| {
                for id in 1..=5 {
                    let status = c.status(id).await?;
                    if status.node.state != State::Normal {
                        return Err(format!("node {id}: {}", status.node.state));
                    }
                }
                Ok(())
            })
            .await?;
        let normal = healed_at.elapsed();
        let mut delta = BTreeMap::new();
        for name in names {
            let after = self.cluster.metric_sum(&all, name).await;
            delta.insert(name, after - before.get(name).copied().unwrap_or(0.0));
        }
        let d = |name: &str| delta.get(name).copied().unwrap_or(0.0) as u64;
        self.out.say(format!(
            "  AP  hinted handoff: {} hints delivered, none pending {} after the heal",
            d("isle_ap_hints_delivered_total"),
            secs(handed)
        ));
        self.out.say(format!(
            "  AP  Merkle anti-entropy: {} exchanges, {} keys found different, {} keys repaired, \
             {} bytes; every replica of the {} keys equal {} after the heal",
            d("isle_ap_aae_exchanges_total"),
            d("isle_ap_aae_keys_diverged_total"),
            d("isle_ap_aae_keys_repaired_total"),
            d("isle_ap_aae_bytes_total"),
            keys.len(),
            secs(converged_in)
        ));
        self.out.say(format!(
            "  every node Normal again {} after the heal (Reconciling until hints and repairs \
             were done)",
            secs(normal)
        ));
        self.out.event(
            3,
            "ap_reconciled",
            json!({"hints_delivered": d("isle_ap_hints_delivered_total"),
                   "hints_done_ms": ms(handed),
                   "aae_exchanges": d("isle_ap_aae_exchanges_total"),
                   "aae_keys_diverged": d("isle_ap_aae_keys_diverged_total"),
                   "aae_keys_repaired": d("isle_ap_aae_keys_repaired_total"),
                   "aae_bytes": d("isle_ap_aae_bytes_total"),
                   "converged_ms": ms(converged_in), "normal_ms": ms(normal)}),
        );
        self.findings.row(
            "hinted handoff",
            format!(
                "{} hints delivered, none left {} after the heal",
                d("isle_ap_hints_delivered_total"),
                secs(handed)
            ),
        );
        self.findings.row(
            "Merkle anti-entropy",
            format!(
                "{} keys found different, {} repaired, {} bytes; replicas equal after {}",
                d("isle_ap_aae_keys_diverged_total"),
                d("isle_ap_aae_keys_repaired_total"),
                d("isle_ap_aae_bytes_total"),
                secs(converged_in)
            ),
        );

        // What the reconciled keys hold, read through a West node.
        let cart = self.cluster.get(5, "/v1/ap/default/cart").await;
        let likes = self.cluster.get(5, "/v1/ap/default/likes").await;
        let banner = self.cluster.get(5, "/v1/ap/lww/banner").await;
        let meeting = self.cluster.get(5, "/v1/ap/default/meeting").await;
        let read = |answer: &Answer| answer.parse::<ap::ReadReply>().map(|reply| reply.data);
        let (cart_data, likes_data) = (read(&cart), read(&likes));
        let (banner_data, meeting_data) = (read(&banner), read(&meeting));
        let members = strings(cart_data.as_ref().map(ap::Data::members));
        let want_cart = strings(Some(
            ["apples", "bread", "milk"].map(String::from).as_slice(),
        ));
        let likes_value = likes_data.as_ref().and_then(ap::Data::counter);
        let cart_ok = members == want_cart;
        let likes_ok = likes_value == Some(6);
        self.out.say(format!(
            "  cart  = {members:?}: {}",
            if cart_ok {
                "the union of both sides (add-wins set)"
            } else {
                "NOT the union of both sides"
            }
        ));
        self.out.say(format!(
            "  likes = {}: {}",
            shown(likes_value),
            if likes_ok {
                "1 + 2 + 3, the sum of both sides (PN-counter)"
            } else {
                "NOT the sum 1 + 2 + 3 = 6"
            }
        ));
        let kept = strings(banner_data.as_ref().map(ap::Data::values));
        let lost: Vec<&str> = ["east: bridge closed", "west: ferry at noon"]
            .into_iter()
            .filter(|v| !kept.iter().any(|k| k == v))
            .collect();
        self.out.say(format!(
            "  lww/banner = {kept:?}: last write wins, so the write {lost:?} was LOST \
             (acknowledged, then overwritten by a later stamp)"
        ));
        let siblings = strings(meeting_data.as_ref().map(ap::Data::values));
        self.out.say(format!(
            "  meeting = {siblings:?}: both concurrent writes kept as siblings for the app \
             to resolve"
        ));
        self.out.event(
            3,
            "ap_converged",
            json!({"cart": members, "cart_expected": want_cart, "cart_union": cart_ok,
                   "likes": likes_value, "likes_expected": 6, "likes_sum": likes_ok,
                   "lww_kept": kept, "lww_lost": lost, "siblings": siblings,
                   "answers": {"cart": cart.json(), "likes": likes.json(),
                               "banner": banner.json(), "meeting": meeting.json()}}),
        );
        if !cart_ok {
            self.findings
                .broken(format!("cart {members:?} is not the union"));
        }
        if !likes_ok {
            self.findings
                .broken(format!("likes {:?} is not 6", likes_value));
        }
        self.findings.row(
            "CRDT merges",
            format!(
                "cart {} (union), likes {} (sum)",
                members.join("+"),
                shown(likes_value)
            ),
        );
        self.findings
            .row("last write wins", format!("kept {kept:?}, lost {lost:?}"));
        self.findings.row(
            "siblings",
            format!("kept {} concurrent values", siblings.len()),
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Act 4.

    async fn act_zombie(&mut self) -> anyhow::Result<()> {
        self.out.say("\nAct 4: a zombie leader");
        self.out.say(
            "  (after the heal on purpose: with the bridge down East holds exactly 3 of 5 votes, \
             so pausing its leader would leave no majority anywhere to elect a successor)",
        );
        let ((leader, term), _) = self
            .wait("the CP leader", async |c: &Cluster| {
                agreed_leader(c, &[1, 2, 3, 4, 5], None, 0).await
            })
            .await?;
        let others: Vec<u64> = (1..=5).filter(|id| *id != leader).collect();
        // Client A, through the leader: a short lease, the lock, one fenced write.
        let grant = cp::LeaseGrantBody { id: 0, ttl_secs: 2 };
        let lease_a = self
            .cp_ok::<cp::LeaseGrantReply>(leader, "/v1/cp/lease/grant", &grant)
            .await?
            .id;
        let lock = lock_body(lease_a, 5000);
        let token_a = self
            .cp_ok::<cp::LockReply>(leader, "/v1/cp/lock", &lock)
            .await?
            .token;
        let fence_a = fence(token_a);
        let put = cp_put("ledger", "A", "A:1", Some(fence_a.clone()));
        self.cp_ok::<IgnoredAny>(leader, "/v1/cp/put", &put).await?;
        let keep_alive = cp::LeaseIdBody { id: lease_a };
        self.cp_ok::<IgnoredAny>(leader, "/v1/cp/lease/keepalive", &keep_alive)
            .await?;
        self.out.say(format!(
            "  client A, via leader node {leader} (term {term}), holds lock payments with \
             fencing token {token_a} (2 s lease) and writes ledger = A"
        ));
        self.out.event(
            4,
            "lock_a",
            json!({"leader": leader, "term": term, "token": token_a}),
        );

        let zombie = self.cluster.node(leader)?;
        let pid = zombie.pid().context("the leader's pid")?;
        zombie.pause()?;
        let paused = Instant::now();
        self.out.say(format!(
            "  SIGSTOP node {leader} (pid {pid}): the leader freezes, as in a long GC pause"
        ));
        let ((new_leader, new_term), _) = self
            .wait("a new leader", async |c: &Cluster| {
                agreed_leader(c, &others, Some(leader), term).await
            })
            .await?;
        let elected = paused.elapsed();
        self.out.say(format!(
            "  node {new_leader} leads in term {new_term}, {} after the pause",
            secs(elected)
        ));
        let via_b = others
            .iter()
            .copied()
            .find(|id| *id != new_leader)
            .context("a second survivor")?;
        let grant = cp::LeaseGrantBody {
            id: 0,
            ttl_secs: 60,
        };
        let lease_b = self
            .cp_ok::<cp::LeaseGrantReply>(via_b, "/v1/cp/lease/grant", &grant)
            .await?
            .id;
        let lock = lock_body(lease_b, 4000);
        let (lock_b, _) = self
            .wait(
                "client B to be granted the lock (A's lease expires)",
                async |c: &Cluster| {
                    let answer = c.post(via_b, "/v1/cp/lock", &lock).await;
                    match answer.parse::<cp::LockReply>() {
                        Some(held) if answer.ok() => Ok(held),
                        _ => Err(answer.describe()),
                    }
                },
            )
            .await?;
        let token_b = lock_b.token;
        let granted = paused.elapsed();
        let put = cp_put("ledger", "B", "B:1", Some(fence(token_b)));
        self.cp_ok::<IgnoredAny>(via_b, "/v1/cp/put", &put).await?;
        self.out.say(format!(
            "  client B, via node {via_b}, is granted lock payments with token {token_b} \
             ({} after the pause, once A's lease expired) and writes ledger = B",
            secs(granted)
        ));
        self.out.event(
            4,
            "lock_b",
            json!({"new_leader": new_leader, "new_term": new_term, "token": token_b,
                   "elected_ms": ms(elected), "granted_ms": ms(granted)}),
        );

        // What the fencing hook did: the new leader's record, and the hook's own output.
        let fences = self
            .cluster
            .status(new_leader)
            .await
            .map(|s| s.cp.fences)
            .unwrap_or_default();
        let record = fences.iter().rfind(|f| f.target == leader).cloned();
        let hook_said = std::fs::read_to_string(self.dir.join("stonith.log"))
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or("")
            .to_string();
        match &record {
            Some(r) => self.out.say(format!(
                "  fencing hook: node {new_leader} ran it against node {leader} on taking \
                 office (term {}): {} in {} ms; it wrote: {hook_said}",
                r.term, r.outcome, r.took_ms
            )),
            None => self.out.say(format!(
                "  fencing hook: node {new_leader} has no record of fencing node {leader} \
                 ({fences:?})"
            )),
        }
        self.out.event(
            4,
            "stonith",
            json!({"record": record, "hook_output": hook_said}),
        );

        self.cluster.node(leader)?.resume()?;
        self.out.say(format!(
            "  SIGCONT node {leader}: the zombie wakes up and client A, unaware, writes ledger \
             = A2 with its old token {token_a}"
        ));
        let zombie_write = cp_put("ledger", "A2", "A:2", Some(fence_a));
        let resumed = Instant::now();
        let (answer, _) = self
            .wait(
                "a definite answer to the zombie's write",
                async |c: &Cluster| {
                    let answer = c.post(leader, "/v1/cp/put", &zombie_write).await;
                    if answer.transient() {
                        Err(answer.describe())
                    } else {
                        Ok(answer)
                    }
                },
            )
            .await?;
        let reason = answer.error().and_then(|error| error.reason);
        let rejected = answer.code == Some(409) && reason.as_deref() == Some("FencingTokenStale");
        self.out.say(format!(
            "  the zombie's write: {} after {}: {}",
            if rejected {
                "REJECTED"
            } else if answer.ok() {
                "ACCEPTED (a stale token got through!)"
            } else {
                "refused"
            },
            secs(resumed.elapsed()),
            answer.sentence()
        ));
        let ledger = self
            .cluster
            .call(
                reqwest::Method::GET,
                leader,
                "/v1/cp/get?key=ledger&consistency=linearizable",
                NO_BODY,
                CP_TIMEOUT,
            )
            .await;
        let value = first_value(&ledger).unwrap_or_else(|| "?".to_string());
        self.out.say(format!(
            "  ledger read linearizably through the old leader: {value}"
        ));
        self.out.event(
            4,
            "zombie_write",
            json!({"asked": format!("put ledger=A2 fenced with token {token_a} via node {leader} (resumed)"),
                   "answered": answer.json(), "kind": answer.kind(), "token_a": token_a,
                   "token_b": token_b, "ledger_after": value,
                   "outcome": if rejected { "rejected" } else if answer.ok() { "accepted" } else { "refused" }}),
        );
        if answer.ok() {
            self.findings
                .broken("the zombie's stale-token write was accepted");
        }
        self.findings.row(
            "fencing tokens",
            format!(
                "zombie's write with token {token_a} {} (current {token_b}); new leader {} after \
                 the pause",
                if rejected { "rejected" } else { "NOT rejected" },
                secs(elected)
            ),
        );
        self.findings.row(
            "STONITH hook",
            match &record {
                Some(r) => format!(
                    "node {new_leader} fenced node {leader}: {} in {} ms (recorded, not killed)",
                    r.outcome, r.took_ms
                ),
                None => "no fence record".to_string(),
            },
        );
        Ok(())
    }

    /// A CP request that must succeed (retrying transient refusals); its answer.
    async fn cp_ok<T: DeserializeOwned>(
        &mut self,
        via: u64,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> anyhow::Result<T> {
        let what = format!("POST {path} via node {via}");
        let (answer, _) = self
            .wait(&what, async |c: &Cluster| {
                let answer = c.post(via, path, body).await;
                if answer.ok() {
                    Ok(answer)
                } else if answer.transient() {
                    Err(answer.describe())
                } else {
                    Ok(answer)
                }
            })
            .await?;
        if !answer.ok() {
            bail!("{what}: {}", answer.describe());
        }
        serde_json::from_value(answer.body).with_context(|| format!("{what}: unexpected answer"))
    }

    // -----------------------------------------------------------------------------------------
    // Act 5.

    fn act_summary(&mut self) {
        let total = self.out.start.elapsed();
        self.out.say("\nAct 5: what each mechanism did");
        let width = self
            .findings
            .rows
            .iter()
            .map(|(m, _)| m.len())
            .max()
            .unwrap_or(0);
        let mut lines = Vec::new();
        for (mechanism, what) in &self.findings.rows {
            lines.push(format!("  {mechanism:<width$}  {what}"));
        }
        for line in lines {
            self.out.say(line);
        }
        let verdict = if self.findings.broken.is_empty() {
            "every promise kept".to_string()
        } else {
            format!("BROKEN: {}", self.findings.broken.join("; "))
        };
        self.out.say(format!(
            "  {:<width$}  {} from start to finish; {verdict}",
            "whole story",
            secs(total)
        ));
        let rows: Vec<Value> = self
            .findings
            .rows
            .iter()
            .map(|(m, w)| json!({"mechanism": m, "what": w}))
            .collect();
        self.out.event(
            5,
            "summary",
            json!({"rows": rows, "total_ms": ms(total), "broken": self.findings.broken}),
        );
    }

    /// Stops every node (a paused one too), SIGKILL after 5 s.
    fn stop(&mut self) {
        crate::stop_all(&mut self.cluster.nodes, Duration::from_secs(5));
    }
}

// ---------------------------------------------------------------------------------------------
// Reading answers.

fn reachable(status: &StatusReport) -> BTreeSet<u64> {
    status.node.reachable.iter().map(|id| id.0).collect()
}

/// No body, for the calls that send none.
const NO_BODY: Option<&()> = None;

/// A value that may be missing, for the narration.
fn shown(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "?".to_string(), |value| value.to_string())
}

/// Sorted copies of `values` (none: empty).
fn strings(values: Option<&[String]>) -> Vec<String> {
    let mut out = values.unwrap_or_default().to_vec();
    out.sort();
    out
}

/// The first value a CP get answered with.
fn first_value(answer: &Answer) -> Option<String> {
    let read = answer.parse::<cp::GetReply>()?;
    read.kvs.into_iter().next().map(|kv| kv.value)
}

fn cp_put(key: &str, value: &str, request_id: &str, fence: Option<Fence>) -> cp::PutBody {
    cp::PutBody {
        fence,
        key: key.to_string(),
        request_id: Some(request_id.to_string()),
        value: value.to_string(),
        ..cp::PutBody::default()
    }
}

/// The fence of a `payments` lock holder.
fn fence(token: i64) -> Fence {
    Fence {
        lock: "payments".to_string(),
        token,
    }
}

/// Asks for the `payments` lock under `lease`.
fn lock_body(lease: i64, timeout_ms: u64) -> cp::LockBody {
    cp::LockBody {
        lease,
        name: "payments".to_string(),
        timeout_ms,
    }
}

fn members(items: &[&str]) -> ap::MembersBody {
    ap::MembersBody {
        members: items.iter().map(|item| item.to_string()).collect(),
        ..ap::MembersBody::default()
    }
}

fn incr(by: i64, request_id: &str) -> ap::IncrBody {
    ap::IncrBody {
        by,
        request_id: Some(request_id.to_string()),
    }
}

fn replicas(answer: &Answer) -> String {
    if !answer.ok() {
        return format!("refused: {}", answer.kind());
    }
    let Some(reply) = answer.parse::<ap::WriteReply>() else {
        return format!("answer not understood: {}", answer.describe());
    };
    let fallbacks = reply.replicas.fallbacks;
    format!(
        "acked by {} replicas, {} needed{}",
        reply.replicas.answered,
        reply.replicas.needed,
        if fallbacks > 0 {
            format!(", {fallbacks} as hints on fallbacks")
        } else {
            String::new()
        }
    )
}

fn short(answer: &Answer) -> String {
    if answer.ok() {
        "accepted".to_string()
    } else {
        format!("refused ({})", answer.kind())
    }
}

/// The leader every node of `among` names, which is one of them, calls itself leader, is not
/// `not`, and leads a term above `after_term`: (leader, term).
async fn agreed_leader(
    c: &Cluster,
    among: &[u64],
    not: Option<u64>,
    after_term: u64,
) -> Result<(u64, u64), String> {
    let mut named = BTreeSet::new();
    for id in among {
        let status = c.status(*id).await?;
        let leader = status
            .cp
            .leader
            .ok_or_else(|| format!("node {id} knows no leader"))?;
        named.insert(leader);
    }
    let [leader] = named.iter().copied().collect::<Vec<_>>()[..] else {
        return Err(format!("nodes {among:?} name leaders {named:?}"));
    };
    if Some(leader) == not || !among.contains(&leader) {
        return Err(format!("leader {leader} is not one of {among:?}"));
    }
    let cp = c.status(leader).await?.cp;
    if cp.role != "leader" || cp.term <= after_term {
        return Err(format!(
            "node {leader} is named leader but says role {}, term {}",
            cp.role, cp.term
        ));
    }
    Ok((leader, cp.term))
}

/// Ok once exactly three nodes hold a copy of the key and all copies are equal.
async fn converged(c: &Cluster, bucket: &str, key: &str) -> Result<(), String> {
    let mut digests = BTreeMap::new();
    for id in 1..=5 {
        let answer = c.get(id, &format!("/v1/ap-local/{bucket}/{key}")).await;
        match answer.code {
            Some(200) => {
                let copy = answer.parse::<ap::LocalReply>();
                digests.insert(id, copy.and_then(|copy| copy.digest).unwrap_or_default());
            }
            Some(404) => {}
            _ => return Err(format!("node {id}: {}", answer.describe())),
        }
    }
    let distinct: BTreeSet<&String> = digests.values().collect();
    if digests.len() == 3 && distinct.len() == 1 {
        Ok(())
    } else {
        Err(format!("{bucket}/{key}: {digests:?}"))
    }
}
