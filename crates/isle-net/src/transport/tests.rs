//! Transport tests over real loopback TCP. Every wait has a deadline; sleeps only pace polling.

use std::time::Duration;

use isle_env::{Clock, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::fault::{Direction, FaultAction, FaultError, FaultRule};
use crate::tcp::TcpNetwork;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
}

/// Upper bound on any wait; generous because CI machines stall.
const WAIT: Duration = Duration::from_secs(10);

struct Node {
    transport: Transport<Msg>,
    inbound: mpsc::Receiver<Inbound<Msg>>,
    metrics: Arc<NetMetrics>,
    faults: Faults,
    /// How other nodes address this one.
    addr: PeerAddr,
}

fn fast_config() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_millis(300),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_millis(100),
        ..TransportConfig::default()
    }
}

async fn start(id: u64, listen: &str, config: TransportConfig, allow_faults: bool) -> Node {
    let metrics = Arc::new(NetMetrics::new());
    let faults = Faults::new(allow_faults);
    let started = Transport::start(
        Arc::new(TcpNetwork::new()),
        Arc::new(SystemClock::new()),
        SeededRandom::new(id),
        NodeId(id),
        listen,
        config,
        faults.clone(),
        Arc::clone(&metrics),
    )
    .await;
    let (transport, inbound) = match started {
        Ok(started) => started,
        Err(error) => panic!("node {id} failed to start on {listen}: {error}"),
    };
    let addr = PeerAddr::new(transport.local_addr(), NodeId(id));
    Node {
        transport,
        inbound,
        metrics,
        faults,
        addr,
    }
}

async fn pair(config: TransportConfig) -> (Node, Node) {
    let a = start(1, "127.0.0.1:0", config.clone(), true).await;
    let b = start(2, "127.0.0.1:0", config, true).await;
    (a, b)
}

/// An address where nothing listens (bound once, then released).
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0");
    let addr = listener.and_then(|l| l.local_addr());
    match addr {
        Ok(addr) => addr.to_string(),
        Err(error) => panic!("cannot reserve a port: {error}"),
    }
}

async fn recv_within(node: &mut Node, within: Duration) -> Option<Inbound<Msg>> {
    let clock = SystemClock::new();
    tokio::select! {
        biased;
        message = node.inbound.recv() => message,
        () = clock.sleep(within) => None,
    }
}

async fn recv(node: &mut Node) -> Inbound<Msg> {
    match recv_within(node, WAIT).await {
        Some(message) => message,
        None => panic!("nothing received within {WAIT:?}"),
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let clock = SystemClock::new();
    let deadline = clock.now() + WAIT;
    while !condition() {
        assert!(clock.now() < deadline, "timed out waiting for {what}");
        clock.sleep(Duration::from_millis(5)).await;
    }
}

fn send(from: &Node, to: &PeerAddr, n: u64) {
    if let Err(error) = from.transport.send(to, Msg::Ping(n)) {
        panic!("send of {n} failed: {error}");
    }
}

fn rule(peer: u64, direction: Direction, action: FaultAction) -> FaultRule {
    FaultRule {
        peer: NodeId(peer),
        direction,
        action,
        probability: 1.0,
    }
}

/// Sends until `to` receives something (peers may be down or behind an open breaker meanwhile).
async fn send_until_received(from: &Node, to: &mut Node) -> Inbound<Msg> {
    let clock = SystemClock::new();
    let deadline = clock.now() + WAIT;
    for n in 0.. {
        assert!(
            clock.now() < deadline,
            "no message got through within {WAIT:?}"
        );
        let _ = from.transport.send(&to.addr, Msg::Ping(n));
        if let Some(message) = recv_within(to, Duration::from_millis(50)).await {
            return message;
        }
    }
    unreachable!("the loop only ends by returning or failing the deadline")
}

#[tokio::test]
async fn two_transports_exchange_messages_both_ways() {
    let (mut a, mut b) = pair(TransportConfig::default()).await;
    for n in 0..100 {
        send(&a, &b.addr, n);
    }
    for n in 0..100 {
        let got = recv(&mut b).await;
        assert_eq!((got.from, got.msg), (NodeId(1), Msg::Ping(n)));
    }
    send(&b, &a.addr, 7);
    let got = recv(&mut a).await;
    assert_eq!((got.from, got.msg), (NodeId(2), Msg::Ping(7)));
    eventually("sent counter", || a.metrics.snapshot().sent == 100).await;
    assert_eq!(b.metrics.snapshot().received, 100);
    let states = a.transport.peer_states();
    assert_eq!(states.len(), 1);
    assert!(states[0].connected && states[0].breaker == BreakerState::Closed);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn dead_peer_does_not_block_a_live_one() {
    let (a, mut b) = pair(TransportConfig::default()).await;
    let dead = PeerAddr::new(dead_addr(), NodeId(3));
    for n in 0..1000 {
        // Some of these fail fast (queue full, breaker open); none may block.
        let _ = a.transport.send(&dead, Msg::Ping(n));
    }
    send(&a, &b.addr, 42);
    let got = recv_within(&mut b, Duration::from_secs(2)).await;
    assert_eq!(got.map(|m| m.msg), Some(Msg::Ping(42)));
    a.transport.shutdown().await;
}

#[tokio::test]
async fn breaker_opens_after_failures_and_closes_when_peer_comes_up() {
    let a = start(1, "127.0.0.1:0", fast_config(), false).await;
    let addr = dead_addr();
    let dead = PeerAddr::new(addr.clone(), NodeId(2));
    send(&a, &dead, 0);
    let open = |t: &Transport<Msg>| {
        t.peer_states()
            .iter()
            .any(|p| p.breaker == BreakerState::Open)
    };
    eventually("breaker to open", || open(&a.transport)).await;
    // Sends are refused while it is open (it may flip to half-open any moment, so retry).
    let mut refused = false;
    for _ in 0..100 {
        if let Err(SendError::BreakerOpen { .. }) = a.transport.send(&dead, Msg::Ping(1)) {
            refused = true;
            break;
        }
        eventually("breaker to reopen", || open(&a.transport)).await;
    }
    assert!(refused, "send was never refused by the open breaker");
    assert!(a.metrics.dropped_total(DropReason::BreakerOpen) >= 1);
    assert!(a.metrics.snapshot().connect_failures >= 3);

    let mut b = start(2, &addr, fast_config(), false).await;
    let got = send_until_received(&a, &mut b).await;
    assert_eq!(got.from, NodeId(1));
    let closed = |t: &Transport<Msg>| {
        let states = t.peer_states();
        states
            .iter()
            .all(|p| p.breaker == BreakerState::Closed && p.connected)
    };
    eventually("breaker to close", || closed(&a.transport)).await;
    assert_eq!(a.transport.peer_states()[0].consecutive_failures, 0);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn reconnects_after_remote_restarts_on_the_same_port() {
    let (a, mut b) = pair(fast_config()).await;
    send(&a, &b.addr, 1);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(1));
    let addr = b.addr.addr.clone();
    b.transport.shutdown().await;
    eventually("disconnect to be noticed", || {
        a.transport.peer_states().iter().all(|p| !p.connected)
    })
    .await;

    let mut b = start(2, &addr, fast_config(), false).await;
    let got = send_until_received(&a, &mut b).await;
    assert_eq!(got.from, NodeId(1));
    assert!(a.metrics.snapshot().connects >= 2);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn reset_redials_and_keeps_delivering() {
    let (a, mut b) = pair(fast_config()).await;
    send(&a, &b.addr, 1);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(1));
    a.transport.reset(&b.addr.addr);
    a.transport.reset("127.0.0.1:1"); // unknown address: nothing to do
    eventually("redial", || a.metrics.snapshot().connects >= 2).await;
    send(&a, &b.addr, 2);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(2));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn full_queue_refuses_without_blocking() {
    let config = TransportConfig {
        queue_capacity: 4,
        breaker_failures: 1_000,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        ..TransportConfig::default()
    };
    let a = start(1, "127.0.0.1:0", config, false).await;
    let dead = PeerAddr::seed(dead_addr());
    let refused = (0..20)
        .filter(|n| {
            let sent = a.transport.send(&dead, Msg::Ping(*n));
            matches!(sent, Err(SendError::QueueFull { capacity: 4, .. }))
        })
        .count();
    assert!(refused >= 15, "only {refused} of 20 refused");
    assert_eq!(
        a.metrics.dropped_total(DropReason::QueueFull),
        refused as u64
    );
    assert!(a.transport.peer_states()[0].queue_len <= 4);
    a.transport.shutdown().await;
}

#[tokio::test]
async fn outbound_and_inbound_drop_faults() {
    let (a, mut b) = pair(TransportConfig::default()).await;
    let cases = [
        (
            a.faults.clone(),
            Arc::clone(&a.metrics),
            2,
            Direction::Outbound,
        ),
        (
            b.faults.clone(),
            Arc::clone(&b.metrics),
            1,
            Direction::Inbound,
        ),
    ];
    for (faults, metrics, peer, direction) in cases {
        let before = metrics.dropped_total(DropReason::Fault);
        assert!(faults.add(rule(peer, direction, FaultAction::Drop)).is_ok());
        for n in 0..10 {
            send(&a, &b.addr, n);
        }
        eventually("drops", || {
            metrics.dropped_total(DropReason::Fault) == before + 10
        })
        .await;
        assert!(faults.clear().is_ok());
        send(&a, &b.addr, 99);
        assert_eq!(recv(&mut b).await.msg, Msg::Ping(99), "{direction:?}");
    }
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn faults_do_not_apply_to_peers_of_unknown_id() {
    let (a, mut b) = pair(TransportConfig::default()).await;
    assert!(
        a.faults
            .add(rule(2, Direction::Both, FaultAction::Drop))
            .is_ok()
    );
    let seed = PeerAddr::seed(b.addr.addr.clone());
    send(&a, &seed, 5);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(5));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn duplicate_fault_delivers_twice() {
    let (a, mut b) = pair(TransportConfig::default()).await;
    assert!(
        a.faults
            .add(rule(2, Direction::Outbound, FaultAction::Duplicate))
            .is_ok()
    );
    send(&a, &b.addr, 5);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(5));
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(5));
    assert!(a.faults.clear().is_ok());
    send(&a, &b.addr, 6);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(6));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn corrupt_faults_are_counted_by_the_receiver_and_not_delivered() {
    let (a, mut b) = pair(TransportConfig::default()).await;
    let cases = [
        (a.faults.clone(), 2, Direction::Outbound),
        (b.faults.clone(), 1, Direction::Inbound),
    ];
    for (round, (faults, peer, direction)) in cases.into_iter().enumerate() {
        assert!(
            faults
                .add(rule(peer, direction, FaultAction::Corrupt))
                .is_ok()
        );
        send(&a, &b.addr, 5);
        let want = round as u64 + 1;
        eventually("corrupt count", || b.metrics.snapshot().corrupt == want).await;
        assert!(faults.clear().is_ok());
        send(&a, &b.addr, 6);
        assert_eq!(recv(&mut b).await.msg, Msg::Ping(6), "{direction:?}");
    }
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn delay_fault_delivers_later_without_holding_up_later_messages() {
    let (a, mut b) = pair(TransportConfig::default()).await;
    let clock = SystemClock::new();
    let delay = FaultAction::Delay { ms: 300 };
    assert!(a.faults.add(rule(2, Direction::Outbound, delay)).is_ok());
    let sent_at = clock.now();
    send(&a, &b.addr, 1);
    eventually("message to be held", || a.metrics.snapshot().delayed == 1).await;
    assert!(a.faults.clear().is_ok());
    send(&a, &b.addr, 2);
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(2));
    assert_eq!(recv(&mut b).await.msg, Msg::Ping(1));
    assert!(clock.now() - sent_at >= Duration::from_millis(300));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn raw_corrupt_frame_is_skipped_and_the_next_one_delivered() {
    let mut b = start(2, "127.0.0.1:0", TransportConfig::default(), false).await;
    let frame = |n| crate::frame::encode(&Envelope::new(NodeId(9), Msg::Ping(n)));
    let (Ok(mut bad), Ok(good)) = (frame(1), frame(2)) else {
        panic!("test frames must encode");
    };
    crate::frame::flip_payload_bit(&mut bad, 3);
    bad.extend_from_slice(&good);
    let mut stream = match tokio::net::TcpStream::connect(b.transport.local_addr()).await {
        Ok(stream) => stream,
        Err(error) => panic!("connect: {error}"),
    };
    assert!(stream.write_all(&bad).await.is_ok());
    let got = recv(&mut b).await;
    assert_eq!((got.from, got.msg), (NodeId(9), Msg::Ping(2)));
    assert_eq!(b.metrics.snapshot().corrupt, 1);
    b.transport.shutdown().await;
}

#[tokio::test]
async fn oversized_length_prefix_closes_the_connection() {
    let config = TransportConfig {
        max_frame_bytes: 1024,
        ..TransportConfig::default()
    };
    let b = start(2, "127.0.0.1:0", config, false).await;
    let mut stream = match tokio::net::TcpStream::connect(b.transport.local_addr()).await {
        Ok(stream) => stream,
        Err(error) => panic!("connect: {error}"),
    };
    let mut header = 1025u32.to_be_bytes().to_vec();
    header.extend_from_slice(&[0; 4]);
    assert!(stream.write_all(&header).await.is_ok());
    let clock = SystemClock::new();
    let mut buf = [0u8; 16];
    let closed = tokio::select! {
        biased;
        read = stream.read(&mut buf) => matches!(read, Ok(0) | Err(_)),
        () = clock.sleep(WAIT) => false,
    };
    assert!(closed, "the transport kept the connection open");
    assert_eq!(b.metrics.snapshot().oversized, 1);
    b.transport.shutdown().await;
}

#[tokio::test]
async fn silent_inbound_connection_is_closed_after_the_idle_timeout() {
    let config = TransportConfig {
        inbound_idle_timeout: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let b = start(2, "127.0.0.1:0", config, false).await;
    let mut stream = match tokio::net::TcpStream::connect(b.transport.local_addr()).await {
        Ok(stream) => stream,
        Err(error) => panic!("connect: {error}"),
    };
    let clock = SystemClock::new();
    let started = clock.now();
    let mut buf = [0u8; 16];
    let closed = tokio::select! {
        biased;
        read = stream.read(&mut buf) => matches!(read, Ok(0) | Err(_)),
        () = clock.sleep(WAIT) => false,
    };
    assert!(closed, "a silent inbound connection was kept open");
    assert!(
        clock.now().since(started) >= Duration::from_millis(200),
        "closed before the timeout"
    );
    b.transport.shutdown().await;
}

#[tokio::test]
async fn faults_refused_when_not_allowed() {
    let a = start(1, "127.0.0.1:0", TransportConfig::default(), false).await;
    let added = a.faults.add(rule(2, Direction::Both, FaultAction::Drop));
    assert_eq!(added, Err(FaultError::NotAllowed));
    a.transport.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_and_sends_after_shutdown_are_refused() {
    let config = TransportConfig {
        max_frame_bytes: 8,
        ..TransportConfig::default()
    };
    let a = start(1, "127.0.0.1:0", config, false).await;
    let to = PeerAddr::new(dead_addr(), NodeId(2));
    let sent = a.transport.send(&to, Msg::Ping(u64::MAX));
    assert!(matches!(
        sent,
        Err(SendError::Frame(FrameError::TooLarge { max: 8, .. }))
    ));
    let other = a.transport.clone();
    a.transport.shutdown().await;
    assert_eq!(other.send(&to, Msg::Ping(1)), Err(SendError::ShutDown));
}

#[tokio::test]
async fn bad_config_and_busy_port_are_reported() {
    let config = TransportConfig {
        inbound_capacity: 0,
        ..TransportConfig::default()
    };
    let started = Transport::<Msg>::start(
        Arc::new(TcpNetwork::new()),
        Arc::new(SystemClock::new()),
        SeededRandom::new(1),
        NodeId(1),
        "127.0.0.1:0",
        config,
        Faults::new(false),
        Arc::new(NetMetrics::new()),
    )
    .await;
    assert!(matches!(started, Err(NetError::BadConfig(_))));

    let a = start(1, "127.0.0.1:0", TransportConfig::default(), false).await;
    let again = Transport::<Msg>::start(
        Arc::new(TcpNetwork::new()),
        Arc::new(SystemClock::new()),
        SeededRandom::new(2),
        NodeId(2),
        a.transport.local_addr(),
        TransportConfig::default(),
        Faults::new(false),
        Arc::new(NetMetrics::new()),
    )
    .await;
    match again {
        Err(error @ NetError::Bind { .. }) => assert!(error.to_string().contains("port")),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("bound a port that is in use"),
    }
    a.transport.shutdown().await;
}
