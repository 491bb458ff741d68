//! How one node process runs, and a cluster's layout on loopback.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::LabError;

/// How to run one `isle node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id.
    pub id: u64,
    /// Peer transport address (`--listen`).
    pub peer: String,
    /// HTTP address: API, admin, dashboard, `/metrics`.
    pub http: String,
    /// etcd v3 gRPC address, if served.
    pub grpc: Option<String>,
    /// Redis (RESP) address, if served.
    pub resp: Option<String>,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Log file, appended to across restarts.
    pub log: PathBuf,
    /// Seed peers (`--peers`).
    pub peers: Vec<String>,
    /// `--bootstrap-expect`: the CP group forms once this many nodes are seen.
    pub bootstrap_expect: Option<u64>,
    /// `--allow-fault-injection`.
    pub fault_injection: bool,
    /// Further flags, after the ones above.
    pub flags: Vec<String>,
    /// Environment variables for the process.
    pub env: Vec<(String, String)>,
    /// What runs the binary, e.g. `ip netns exec NS` (empty: run it directly).
    pub prefix: Vec<String>,
    /// Start it in a process group of its own, so a Ctrl-C at the terminal reaches only the
    /// launching program, which then stops the nodes in order.
    pub own_process_group: bool,
}

impl NodeSpec {
    /// Node `id` at these addresses, logging to `<data_dir>.log`, nothing else set.
    pub fn new(
        id: u64,
        peer: impl Into<String>,
        http: impl Into<String>,
        data_dir: PathBuf,
    ) -> Self {
        NodeSpec {
            id,
            peer: peer.into(),
            http: http.into(),
            grpc: None,
            resp: None,
            log: data_dir.with_extension("log"),
            data_dir,
            peers: Vec::new(),
            bootstrap_expect: None,
            fault_injection: false,
            flags: Vec::new(),
            env: Vec::new(),
            prefix: Vec::new(),
            own_process_group: false,
        }
    }

    /// The command that runs this node with the `isle` binary at `exe`.
    pub fn command(&self, exe: &Path) -> Command {
        let mut command = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        command
            .arg("node")
            .args(["--id", &self.id.to_string()])
            .args(["--listen", &self.peer, "--http", &self.http])
            .arg("--data-dir")
            .arg(&self.data_dir);
        if let Some(grpc) = &self.grpc {
            command.args(["--grpc", grpc]);
        }
        if let Some(resp) = &self.resp {
            command.args(["--resp", resp]);
        }
        if !self.peers.is_empty() {
            command.args(["--peers", &self.peers.join(",")]);
        }
        if let Some(expect) = self.bootstrap_expect {
            command.args(["--bootstrap-expect", &expect.to_string()]);
        }
        if self.fault_injection {
            command.arg("--allow-fault-injection");
        }
        command.args(&self.flags);
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.stdin(Stdio::null());
        if self.own_process_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        command
    }

    /// Creates the data dir and opens the log for appending.
    pub(crate) fn prepare(&self) -> Result<std::fs::File, LabError> {
        std::fs::create_dir_all(&self.data_dir).map_err(LabError::io(format!(
            "creating data dir {}",
            self.data_dir.display()
        )))?;
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent)
                .map_err(LabError::io(format!("creating {}", parent.display())))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(LabError::io(format!("opening log {}", self.log.display())))
    }
}

/// Where a loopback cluster's ports come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Node i: peer BASE+i, HTTP BASE+1000+i, gRPC BASE+2000+i, RESP BASE+3000+i; each must
    /// be free.
    Base(u16),
    /// Spare ports picked at random (see [`crate::spare_port`]).
    Spare,
}

/// The specs of an `n`-node cluster on loopback under `dir` (data dirs `dir/n<i>`, logs
/// `dir/n<i>.log`), every node serving HTTP, etcd gRPC and RESP and seeded with every other
/// ([`mesh`]). Callers set the rest (flags, bootstrap, fault injection).
pub fn plan(n: u64, dir: &Path, ports: Ports) -> Result<Vec<NodeSpec>, LabError> {
    if n == 0 || n > 99 {
        return Err(LabError::Plan(format!(
            "a cluster has 1 to 99 nodes, not {n}"
        )));
    }
    let mut taken = BTreeSet::new();
    let mut specs = Vec::new();
    for id in 1..=n {
        let [peer, http, grpc, resp] = match ports {
            Ports::Base(base) => base_ports(base, id, n)?,
            Ports::Spare => [(); 4].map(|()| {
                loop {
                    let port = crate::spare_port();
                    if taken.insert(port) {
                        break port;
                    }
                }
            }),
        };
        let address = |port: u16| format!("127.0.0.1:{port}");
        let mut spec = NodeSpec::new(id, address(peer), address(http), dir.join(format!("n{id}")));
        spec.grpc = Some(address(grpc));
        spec.resp = Some(address(resp));
        specs.push(spec);
    }
    mesh(&mut specs);
    Ok(specs)
}

fn base_ports(base: u16, id: u64, n: u64) -> Result<[u16; 4], LabError> {
    let offset = u16::try_from(id).map_err(|_| LabError::Plan(format!("node id {id}")))?;
    let mut ports = [0; 4];
    for (slot, block) in ports.iter_mut().zip([0u16, 1000, 2000, 3000]) {
        *slot = base
            .checked_add(block)
            .and_then(|p| p.checked_add(offset))
            .ok_or_else(|| {
                LabError::Plan(format!("--base-port {base} is too high for {n} nodes"))
            })?;
        if std::net::TcpListener::bind(("127.0.0.1", *slot)).is_err() {
            return Err(LabError::Plan(format!(
                "port {slot} is in use (another cluster or demo?): stop what holds it or pass \
                 another --base-port"
            )));
        }
    }
    Ok(ports)
}

/// Seeds every node with every other node's peer address.
pub fn mesh(specs: &mut [NodeSpec]) {
    let all: Vec<(u64, String)> = specs.iter().map(|s| (s.id, s.peer.clone())).collect();
    for spec in specs {
        spec.peers = all
            .iter()
            .filter(|(id, _)| *id != spec.id)
            .map(|(_, peer)| peer.clone())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_spec_becomes_the_node_command_line() {
        let mut spec = NodeSpec::new(2, "127.0.0.1:1", "127.0.0.1:2", "/d/n2".into());
        spec.resp = Some("127.0.0.1:3".into());
        spec.peers = vec!["a:1".into(), "b:1".into()];
        spec.bootstrap_expect = Some(3);
        spec.fault_injection = true;
        spec.flags = vec!["--zone".into(), "east".into()];
        spec.prefix = vec!["ip".into(), "netns".into(), "exec".into(), "ns2".into()];
        let command = spec.command(Path::new("/bin/isle"));
        assert_eq!(command.get_program(), "ip");
        assert_eq!(
            args(&command),
            [
                "netns",
                "exec",
                "ns2",
                "/bin/isle",
                "node",
                "--id",
                "2",
                "--listen",
                "127.0.0.1:1",
                "--http",
                "127.0.0.1:2",
                "--data-dir",
                "/d/n2",
                "--resp",
                "127.0.0.1:3",
                "--peers",
                "a:1,b:1",
                "--bootstrap-expect",
                "3",
                "--allow-fault-injection",
                "--zone",
                "east"
            ]
        );
        assert_eq!(spec.log, Path::new("/d/n2.log"));
    }

    #[test]
    fn a_plan_meshes_distinct_ports() {
        let specs = plan(3, Path::new("/tmp/x"), Ports::Spare).expect("plan");
        let mut ports = BTreeSet::new();
        for spec in &specs {
            assert_eq!(spec.peers.len(), 2);
            assert!(!spec.peers.contains(&spec.peer));
            for address in [&spec.peer, &spec.http, spec.grpc.as_ref().expect("grpc")] {
                assert!(ports.insert(address.clone()), "{address} twice");
            }
        }
        assert!(plan(0, Path::new("/tmp/x"), Ports::Spare).is_err());
        assert!(plan(3, Path::new("/tmp/x"), Ports::Base(65_000)).is_err());
    }
}
