//! The namespace harness (`isle chaos run --engine netns`, `isle demo --netns`, the netns
//! tests): every node in its own Linux network namespace, joined by veth pairs to a bridge in one more namespace, and a client namespace
//! for the workload. Nothing is added to the root namespace and no namespace has a default
//! route, so no packet leaves the bridge. Faults are made by the kernel: an nftables table in a
//! node's namespace drops (never rejects) what is cut, and drops a random share of what crosses
//! a flaky link (`numgen random`).
//!
//! Every namespace is named `islc<pid><suffix>` after the process that made it, so a later run
//! recognises the leftovers of a run that died (its pid gone, or reused by something that is not
//! `isle`) and deletes them, after killing whatever still runs inside. No other namespace is
//! ever touched. Needs root and the `ip` (iproute2) and `nft` (nftables) tools.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Prefix of every namespace this harness makes.
const PREFIX: &str = "islc";
/// The nodes' subnet (inside the run's own bridge namespace, so runs never clash).
const SUBNET: &str = "10.77.0";
/// The client namespace's host number in [`SUBNET`].
const CLIENT_HOST: u64 = 200;
/// The nftables table each node namespace holds.
const TABLE: &str = "isle_chaos";

/// Runs a command; its stdout if it exits 0, else an error naming it with its stderr.
pub fn sh(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let (program, rest) = args.split_first().context("an empty command")?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running `{}`", args.join(" ")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("writing to `{}`", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with what to install or how to run when the harness cannot work here.
pub fn preflight() -> anyhow::Result<()> {
    if effective_uid() != Some(0) {
        bail!("the netns engine needs root (network namespaces, nftables)");
    }
    sh(&["ip", "-V"], None).context("the netns engine needs `ip`: install iproute2")?;
    sh(&["nft", "--version"], None).context("the netns engine needs `nft`: install nftables")?;
    Ok(())
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Every network namespace by name (`ip netns list` prints `name (id: N)`).
pub fn namespaces() -> anyhow::Result<Vec<String>> {
    Ok(sh(&["ip", "netns", "list"], None)?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The pid encoded in one of our namespace names (`islc1234n1` → 1234).
fn pid_of(ns: &str) -> Option<u32> {
    let digits: String = ns
        .strip_prefix(PREFIX)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether the run that owns namespaces named after `pid` may still be alive: some process
/// has that pid (an `isle` run, or a test binary using this harness). A reused pid only keeps
/// a dead run's leftovers until it exits.
fn owner_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process inside `ns` (an orphaned node would keep it alive) and deletes it.
fn delete_ns(ns: &str) -> anyhow::Result<()> {
    let pids = sh(&["ip", "netns", "pids", ns], None).unwrap_or_default();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    sh(&["ip", "netns", "del", ns], None).map(|_| ())
}

/// Deletes the namespaces of earlier runs whose process is gone. Returns their names.
pub fn delete_stale() -> anyhow::Result<Vec<String>> {
    let own = std::process::id();
    let mut deleted = Vec::new();
    for ns in namespaces()? {
        let Some(pid) = pid_of(&ns) else { continue };
        if pid == own || owner_alive(pid) {
            continue;
        }
        delete_ns(&ns).with_context(|| format!("deleting stale namespace {ns}"))?;
        deleted.push(ns);
    }
    Ok(deleted)
}

/// One run's namespaces; deleted (with everything running in them) on drop.
#[derive(Debug)]
pub struct Netns {
    stem: String,
    made: Vec<String>,
    nodes: u64,
}

impl Netns {
    /// Deletes stale namespaces, then builds the bridge, one namespace per node and the client
    /// namespace. On an error, what was made is deleted again.
    pub fn create(nodes: u64) -> anyhow::Result<Netns> {
        for ns in delete_stale()? {
            eprintln!("netns: deleted stale namespace {ns} of an earlier run");
        }
        let mut net = Netns {
            stem: format!("{PREFIX}{}", std::process::id()),
            made: Vec::new(),
            nodes,
        };
        net.build()?;
        Ok(net)
    }

    fn bridge_ns(&self) -> String {
        format!("{}br", self.stem)
    }

    /// Every namespace this run made, in creation order.
    pub fn made(&self) -> Vec<String> {
        self.made.clone()
    }

    /// The client namespace's name.
    pub fn client_ns(&self) -> String {
        format!("{}c", self.stem)
    }

    /// Node `id`'s namespace.
    pub fn node_ns(&self, id: u64) -> String {
        format!("{}n{id}", self.stem)
    }

    /// Node `id`'s address.
    pub fn node_ip(id: u64) -> String {
        format!("{SUBNET}.{id}")
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        sh(&["ip", "netns", "add", ns], None)?;
        self.made.push(ns.to_string());
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"], None)?;
        Ok(())
    }

    /// A veth pair from the bridge to `ns` with `ip/24` on the far end. Both ends are created
    /// inside the bridge namespace, so their names never meet the root namespace's.
    fn attach(&self, ns: &str, n: u64, ip: &str) -> anyhow::Result<()> {
        let bridge = self.bridge_ns();
        let (near, far) = (format!("b{n}"), format!("eth{n}"));
        sh(
            &[
                "ip", "-n", &bridge, "link", "add", &near, "type", "veth", "peer", "name", &far,
                "netns", ns,
            ],
            None,
        )?;
        sh(
            &["ip", "-n", &bridge, "link", "set", &near, "master", "br0"],
            None,
        )?;
        sh(&["ip", "-n", &bridge, "link", "set", &near, "up"], None)?;
        let cidr = format!("{ip}/24");
        sh(&["ip", "-n", ns, "addr", "add", &cidr, "dev", &far], None)?;
        sh(&["ip", "-n", ns, "link", "set", &far, "up"], None)?;
        Ok(())
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let bridge = self.bridge_ns();
        self.add_ns(&bridge)?;
        sh(
            &["ip", "-n", &bridge, "link", "add", "br0", "type", "bridge"],
            None,
        )?;
        sh(&["ip", "-n", &bridge, "link", "set", "br0", "up"], None)?;
        for id in 1..=self.nodes {
            let ns = self.node_ns(id);
            self.add_ns(&ns)?;
            self.attach(&ns, id, &Self::node_ip(id))?;
        }
        let client = self.client_ns();
        self.add_ns(&client)?;
        self.attach(&client, CLIENT_HOST, &format!("{SUBNET}.{CLIENT_HOST}"))?;
        Ok(())
    }

    /// Moves the calling thread into the client namespace: every socket it opens from now on
    /// is there (the workload's runtime lives on such a thread).
    pub fn enter_client(&self) -> anyhow::Result<()> {
        let path = format!("/var/run/netns/{}", self.client_ns());
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns into {}", self.client_ns()))
    }

    /// The nodes' specs: node `id` at its namespace's own address (peer port 7000, HTTP 8000),
    /// run through `ip netns exec` (which execs in place: the child's pid is the node's), data
    /// dir `dir/n<id>`, every node seeded with every other.
    pub fn specs(&self, dir: &std::path::Path) -> Vec<crate::NodeSpec> {
        let mut specs: Vec<crate::NodeSpec> = (1..=self.nodes)
            .map(|id| {
                let ip = Self::node_ip(id);
                let mut spec = crate::NodeSpec::new(
                    id,
                    format!("{ip}:7000"),
                    format!("{ip}:8000"),
                    dir.join(format!("n{id}")),
                );
                spec.prefix = self.exec_prefix(id);
                spec
            })
            .collect();
        crate::mesh(&mut specs);
        specs
    }

    /// The command prefix that runs a program in node `id`'s namespace.
    pub fn exec_prefix(&self, id: u64) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.node_ns(id)]
    }

    /// Replaces node `id`'s nftables table: drop everything from `cut_from` and to `cut_to`,
    /// and the given share (per mille) of what arrives from each of `lossy`.
    pub fn set_rules(
        &self,
        id: u64,
        cut_from: &BTreeSet<u64>,
        cut_to: &BTreeSet<u64>,
        lossy: &[(u64, u32)],
    ) -> anyhow::Result<()> {
        let set = |ids: &BTreeSet<u64>| {
            ids.iter()
                .map(|o| Self::node_ip(*o))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut input = String::new();
        let mut output = String::new();
        if !cut_from.is_empty() {
            input.push_str(&format!(" ip saddr {{ {} }} drop;", set(cut_from)));
        }
        for (peer, per_mille) in lossy {
            input.push_str(&format!(
                " ip saddr {} numgen random mod 1000 < {per_mille} drop;",
                Self::node_ip(*peer)
            ));
        }
        if !cut_to.is_empty() {
            output.push_str(&format!(" ip daddr {{ {} }} drop;", set(cut_to)));
        }
        // Declaring, deleting and redefining the table in one transaction replaces it
        // atomically, whether it existed or not.
        let script = format!(
            "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n\
             table inet {TABLE} {{\n\
             \tchain input {{ type filter hook input priority 0; policy accept;{input} }}\n\
             \tchain output {{ type filter hook output priority 0; policy accept;{output} }}\n\
             }}\n"
        );
        let ns = self.node_ns(id);
        sh(
            &["ip", "netns", "exec", &ns, "nft", "-f", "-"],
            Some(&script),
        )
        .with_context(|| format!("setting the nftables rules of node {id}"))?;
        Ok(())
    }

    /// Kills everything in this run's namespaces and deletes them; reports what failed.
    pub fn cleanup(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(ns) = self.made.pop() {
            if let Err(err) = delete_ns(&ns) {
                errors.push(format!("{err:#}"));
            }
        }
        errors
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for error in self.cleanup() {
            eprintln!("netns: cleanup: {error}");
        }
    }
}

/// Deletes every namespace of this process (for a signal handler that cannot reach the
/// [`Netns`] value, which lives on the workload's thread).
pub fn delete_own() -> Vec<String> {
    let own = format!("{PREFIX}{}", std::process::id());
    let mut errors = Vec::new();
    for ns in namespaces().unwrap_or_default() {
        let ours = ns
            .strip_prefix(&own)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()));
        if ours && let Err(err) = delete_ns(&ns) {
            errors.push(format!("{err:#}"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_pid() {
        assert_eq!(pid_of("islc1234n1"), Some(1234));
        assert_eq!(pid_of("islc77br"), Some(77));
        assert_eq!(pid_of("islt1234n1"), None);
        assert_eq!(pid_of("other"), None);
    }
}
