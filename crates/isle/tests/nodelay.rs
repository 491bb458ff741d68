//! No Nagle anywhere: every TCP socket a running node holds — the ones it accepted on each
//! listener (HTTP, etcd gRPC, RESP, peer transport) and the ones it dialled to its peers — has
//! TCP_NODELAY set. With Nagle on, a small reply waits for the client's delayed ACK (~40 ms).
//!
//! The sockets are read from the real node process: each socket descriptor is duplicated into
//! this test with `pidfd_getfd(2)` (Linux ≥ 5.6; the node is this test's child) and asked for
//! its options.
#![allow(unsafe_code)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use common::{LocalCluster, cp_leader, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// A connected TCP socket of the node: its two ends and whether TCP_NODELAY is set.
#[derive(Debug)]
struct NodeSocket {
    local: SocketAddr,
    peer: SocketAddr,
    nodelay: bool,
}

/// Every connected inet socket held by process `pid`.
fn sockets_of(pid: u32) -> Result<Vec<NodeSocket>, String> {
    // SAFETY: plain syscalls with integer arguments; a returned descriptor is a new one owned
    // by this process, wrapped at once so it is closed exactly once.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        return Err(format!(
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        ));
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as libc::c_int) };
    let mut found = Vec::new();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| e.to_string())?;
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if dup < 0 {
            continue; // closed meanwhile
        }
        let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(dup as libc::c_int) });
        // Listeners, Unix sockets and unconnected sockets have no inet peer: not ours to check.
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
            continue;
        };
        let nodelay = stream
            .nodelay()
            .map_err(|e| format!("fd {fd} ({local} -> {peer}): {e}"))?;
        found.push(NodeSocket {
            local,
            peer,
            nodelay,
        });
    }
    Ok(found)
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn every_tcp_socket_of_a_node_has_nodelay() {
    let cluster = LocalCluster::start_with(3, &["--bootstrap-expect", "3"]);
    let _logs = cluster.logs_on_panic();
    wait_for("a CP leader", LIMIT, || cp_leader(&cluster, &[1, 2, 3]));
    let pid = cluster.node(1).pid().expect("node 1 runs");
    let listeners = [
        ("HTTP", cluster.http(1)),
        ("etcd gRPC", cluster.grpc(1)),
        ("RESP", cluster.resp(1)),
        ("peer transport", cluster.node(1).spec().peer.clone()),
    ];
    // One client connection to each listener, kept open while the node's sockets are read.
    let clients: Vec<(&str, u16, TcpStream)> = listeners
        .iter()
        .map(|(name, addr)| {
            let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{name} {addr}: {e}"));
            (*name, port(addr), stream)
        })
        .collect();
    let sockets = wait_for(
        "node 1 to accept a connection on every listener",
        LIMIT,
        || {
            let sockets = sockets_of(pid)?;
            for (name, listen_port, client) in &clients {
                let ours = client.local_addr().map_err(|e| e.to_string())?;
                if !sockets
                    .iter()
                    .any(|s| s.local.port() == *listen_port && s.peer == ours)
                {
                    return Err(format!("no accepted {name} socket yet: {sockets:?}"));
                }
            }
            Ok(sockets)
        },
    )
    .0;
    // Dialled sockets too: node 1's connections out to its peers' transports.
    let peer_ports: Vec<u16> = (2..=3)
        .map(|id| port(&cluster.node(id).spec().peer))
        .collect();
    assert!(
        sockets.iter().any(|s| peer_ports.contains(&s.peer.port())),
        "node 1 holds no connection to a peer: {sockets:?}"
    );
    let nagle: Vec<&NodeSocket> = sockets.iter().filter(|s| !s.nodelay).collect();
    assert!(nagle.is_empty(), "sockets without TCP_NODELAY: {nagle:#?}");
}
