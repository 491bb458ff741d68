//! One running `isle node` process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::{LabError, NodeSpec};

/// Pids of every node process started and not yet reaped, for [`kill_all`].
static STARTED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

fn started() -> MutexGuard<'static, BTreeSet<u32>> {
    STARTED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills (SIGKILL) every node process the lab started and has not reaped — for a Ctrl-C
/// handler on another thread than the one that owns them.
pub fn kill_all() {
    for pid in started().iter() {
        if let Ok(pid) = i32::try_from(*pid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Stops `nodes` together: SIGCONT (a paused node must wake to exit) and SIGTERM to every one
/// at once, then each is waited for and killed if it outlives `grace`. Returns how each ended.
pub fn stop_all(nodes: &mut [Node], grace: Duration) -> Vec<(u64, Stopped)> {
    for node in nodes.iter() {
        let _ = node.resume();
        let _ = node.signal(Signal::SIGTERM);
    }
    nodes
        .iter_mut()
        .map(|node| (node.id(), node.terminate(grace)))
        .collect()
}

/// How [`Node::terminate`] ended the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited by itself after SIGTERM.
    Exited(ExitStatus),
    /// It outlived the grace period and was killed.
    Killed,
    /// It was not running.
    NotRunning,
}

/// A node process; killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Node {
    spec: NodeSpec,
    exe: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts `spec` with the `isle` binary at `exe`, output appended to its log.
    pub fn start(spec: NodeSpec, exe: &Path) -> Result<Node, LabError> {
        let mut node = Node {
            spec,
            exe: exe.to_path_buf(),
            child: None,
        };
        node.spawn()?;
        Ok(node)
    }

    fn spawn(&mut self) -> Result<(), LabError> {
        let log = self.spec.prepare()?;
        let err = log
            .try_clone()
            .map_err(LabError::io(format!("opening {}", self.spec.log.display())))?;
        let child = self
            .spec
            .command(&self.exe)
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(LabError::io(format!(
                "starting node {} ({})",
                self.spec.id,
                self.exe.display()
            )))?;
        started().insert(child.id());
        self.child = Some(child);
        Ok(())
    }

    /// How it runs.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// The process id while it has not been reaped (with `ip netns exec`, `exec` keeps it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status, once, if it has exited by itself (reaped: afterwards it is simply not
    /// running); `None` while it runs or when it is not running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.forget();
        Some(status)
    }

    /// Whether the process runs (a paused one does).
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// kill -9 and reap; nothing if it is not running. The data dir stays.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            started().remove(&child.id());
        }
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) -> Result<(), LabError> {
        let pid = self.pid().ok_or(LabError::NotRunning(self.spec.id))?;
        let raw = i32::try_from(pid).map_err(|_| LabError::NotRunning(self.spec.id))?;
        nix::sys::signal::kill(Pid::from_raw(raw), signal).map_err(|source| LabError::Signal {
            id: self.spec.id,
            pid,
            signal: signal.as_str(),
            source,
        })
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) -> Result<(), LabError> {
        self.signal(Signal::SIGSTOP)
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) -> Result<(), LabError> {
        self.signal(Signal::SIGCONT)
    }

    /// SIGTERM, so it shuts down cleanly; killed if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Stopped {
        let Some(child) = self.child.as_mut() else {
            return Stopped::NotRunning;
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.forget();
            return Stopped::Exited(status);
        }
        let _ = self.signal(Signal::SIGCONT);
        if self.signal(Signal::SIGTERM).is_err() {
            self.kill9();
            return Stopped::Killed;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Stopped::Exited(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        Stopped::Killed
    }

    fn forget(&mut self) {
        if let Some(child) = self.child.take() {
            started().remove(&child.id());
        }
    }

    /// Starts it again on the same data dir, ports and log (kill -9 first if it runs).
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.kill9();
        self.spawn()
    }

    /// Starts it again if it is not running (after [`Node::kill9`] or an exit).
    pub fn start_if_down(&mut self) -> Result<(), LabError> {
        if self.running() {
            return Ok(());
        }
        self.forget();
        self.spawn()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Waits until the process runs and its HTTP `/v1/status` names this node (not another
    /// process that holds the port), at most `limit`. Errs at once if the process exits (with
    /// the end of its log: "address in use" means the caller lost a port race).
    pub fn wait_serving(&mut self, limit: Duration) -> Result<(), LabError> {
        let url = format!("http://{}/v1/status", self.spec.http);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let deadline = Instant::now() + limit;
        loop {
            if !self.running() {
                return Err(LabError::NotReady {
                    id: self.spec.id,
                    why: format!("the process exited; its log ends:\n{}", self.log_tail(8)),
                });
            }
            let last = match agent.get(&url).call() {
                Ok(mut answer) => {
                    let body: Result<isle_node::StatusReport, _> = answer.body_mut().read_json();
                    match body.map(|status| status.node.node.0) {
                        Ok(id) if id == self.spec.id => return Ok(()),
                        Ok(other) => {
                            return Err(LabError::NotReady {
                                id: self.spec.id,
                                why: format!("{} serves node {other}", self.spec.http),
                            });
                        }
                        Err(err) => format!("status: {err}"),
                    }
                }
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    id: self.spec.id,
                    why: format!("not serving {url} after {limit:?}: {last}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec whose "binary" is `sh -c 'sleep 30'`: the lab's process handling without a node.
    fn sleeper(dir: &Path) -> Node {
        let mut spec = NodeSpec::new(1, "127.0.0.1:1", "127.0.0.1:1", dir.join("n1"));
        spec.prefix = vec!["sh".into(), "-c".into(), "exec sleep 30".into()];
        Node::start(spec, Path::new("/unused")).expect("start sh")
    }

    #[test]
    fn kill9_reaps_and_restart_starts_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = sleeper(dir.path());
        let first = node.pid().expect("pid");
        assert!(node.running());
        assert!(started().contains(&first));
        node.kill9();
        assert!(!node.running());
        assert!(!started().contains(&first));
        node.restart().expect("restart");
        assert!(node.running());
        assert_ne!(node.pid(), Some(first));
    }

    #[test]
    fn terminate_ends_even_a_paused_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = sleeper(dir.path());
        node.pause().expect("pause");
        assert!(node.running(), "a paused process still runs");
        let stopped = node.terminate(Duration::from_secs(5));
        assert!(matches!(stopped, Stopped::Exited(_)), "{stopped:?}");
        assert_eq!(node.terminate(Duration::from_secs(1)), Stopped::NotRunning);
        assert!(matches!(node.pause(), Err(LabError::NotRunning(1))));
    }

    #[test]
    fn an_exited_process_is_not_ready_and_its_log_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = NodeSpec::new(1, "127.0.0.1:1", "127.0.0.1:1", dir.path().join("n1"));
        spec.prefix = vec![
            "sh".into(),
            "-c".into(),
            "echo address in use; exit 3".into(),
        ];
        let mut node = Node::start(spec, Path::new("/unused")).expect("start sh");
        let err = node
            .wait_serving(Duration::from_secs(10))
            .expect_err("not ready");
        assert!(err.to_string().contains("address in use"), "{err}");
    }
}
