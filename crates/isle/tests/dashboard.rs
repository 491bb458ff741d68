//! The dashboard in a real browser: `isle demo --keep` plays its story and keeps its five nodes
//! up; headless Chromium loads node 1's dashboard, must draw five answering nodes, then cuts
//! the link 1–4 by clicking the control panel's button and must see the graph mark that link
//! cut. A screenshot is saved as a test artifact (its path is printed; `ISLE_SCREENSHOT=path`
//! copies it there too, which is how `docs/dashboard.png` is made).
//!
//! The browser is driven over the Chrome DevTools Protocol with a minimal WebSocket client
//! written here (RFC 6455 text frames only), so the test needs no extra crates. Without a
//! `chromium` binary the test is skipped with a message, unless `CI` is set (then it fails).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A minimal WebSocket client (client-to-server frames masked, as RFC 6455 requires).

struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    fn connect(url: &str) -> WebSocket {
        let rest = url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_once('/').expect("a path in the ws URL");
        let mut stream = TcpStream::connect(host).expect("connect to the DevTools socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let key = base64::engine::general_purpose::STANDARD.encode(nonce());
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("send the handshake");
        // Read the answer's head byte by byte: the first frame may follow it directly.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("read the handshake");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "WebSocket handshake refused: {head}"
        );
        WebSocket { stream }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8]; // FIN, text
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = nonce()[..4].try_into().expect("4 bytes");
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send a frame");
    }

    /// The next whole text message (continuations joined; pings answered).
    fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).expect("read a frame");
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0F;
            let len = match head[1] & 0x7F {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).expect("length");
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).expect("length");
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).expect("payload");
            match opcode {
                0x8 => panic!("the browser closed the DevTools socket"),
                0x9 => {
                    // Ping: answer with a pong carrying the same payload (masked, short).
                    let mask = [0u8; 4];
                    let mut pong = vec![0x8A, 0x80 | payload.len().min(125) as u8];
                    pong.extend_from_slice(&mask);
                    pong.extend_from_slice(&payload[..payload.len().min(125)]);
                    self.stream.write_all(&pong).expect("pong");
                }
                0xA => {}
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("UTF-8 message");
                    }
                }
            }
        }
    }
}

/// 16 bytes that differ from call to call (WebSocket keys and masks need no cryptography).
fn nonce() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The DevTools Protocol over it.

/// Kills (and reaps) the browser when dropped, also when a panic cuts its launch short.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Browser {
    _child: Killed,
    socket: WebSocket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(chromium: &str) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1440,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let stderr = child.stderr.take().expect("chromium stderr");
        let child = Killed(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let browser_url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium printed no DevTools address within 30 s");
        let host = browser_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_string();
        // The page target (about:blank) from the HTTP listing.
        let (_, listing) = http_get(&host, "/json/list");
        let targets: Value = serde_json::from_str(&listing).expect("target list");
        let page = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        Browser {
            _child: child,
            socket: WebSocket::connect(&page),
            next_id: 1,
            _profile: profile,
        }
    }

    /// Sends one command and returns its `result` (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.socket
            .send(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let message: Value =
                serde_json::from_str(&self.socket.receive()).expect("a JSON message");
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
        }
    }

    /// Evaluates a JS expression in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// A real mouse click at the centre of the element `selector`.
    fn click(&mut self, selector: &str) {
        let rect = self.eval(&format!(
            "(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (rect[0].as_f64().expect("x"), rect[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    fn wait_until(&mut self, what: &str, limit: Duration, expression: &str) -> Value {
        let start = Instant::now();
        loop {
            let value = self.eval(expression);
            if value == json!(true) {
                return value;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; last: {value}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A blocking GET: (status code, body).
fn http_get(host: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    // Read the head, then Content-Length bytes (DevTools' server may keep the socket open).
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).expect("read the body");
        }
        None => {
            reader.read_to_end(&mut body).expect("read the body");
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    (code, body)
}

/// A blocking POST of a JSON body; the status code (0: no answer).
fn http_post(host: &str, path: &str, body: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(host) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn chromium() -> Option<String> {
    let candidates = [
        std::env::var("ISLE_CHROMIUM").unwrap_or_default(),
        "chromium".into(),
        "chromium-browser".into(),
    ];
    candidates.into_iter().filter(|c| !c.is_empty()).find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A base port whose ten demo ports are free right now (below the ephemeral range).
fn free_base() -> u16 {
    let seed = u64::from(std::process::id());
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed * 6_151 + attempt * 99_991) % 8_000) as u16;
        let free = (1..=5u16).all(|i| {
            [base + i, base + 1000 + i]
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no free base port for the demo");
}

/// The demo process; interrupted (as by Ctrl-C) and reaped when dropped.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_dashboard_shows_five_nodes_and_cuts_a_link_from_its_control_panel() {
    let browser = chromium();
    if !common::require(
        browser.is_some(),
        "chromium",
        "apt-get install chromium, or set ISLE_CHROMIUM",
    ) {
        return;
    }
    let Some(chromium) = browser else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_base();
    let mut child = Command::new(env!("CARGO_BIN_EXE_isle"))
        .args(["demo", "--json", "--keep", "--base-port", &base.to_string()])
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start isle demo");
    let stdout = child.stdout.take().expect("demo stdout");
    let demo = Demo(child);
    // The story runs to its summary; then the nodes stay up for us (--keep).
    let mut dashboard = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let event: Value = serde_json::from_str(&line).expect("a JSON event");
        if event["event"] == "started" {
            dashboard = event["dashboard"].as_str().map(String::from);
        }
        if event["event"] == "summary" {
            assert_eq!(event["broken"], json!([]), "the story: {event}");
            break;
        }
    }
    let dashboard = dashboard.expect("the demo printed its dashboard address");
    println!("dashboard: {dashboard}");

    let mut browser = Browser::launch(&chromium);
    browser.call("Page.enable", json!({}));
    browser.call("Page.navigate", json!({"url": dashboard}));
    let limit = Duration::from_secs(30);
    browser.wait_until(
        "five answering nodes in the graph",
        limit,
        "document.querySelectorAll('#graph [data-node]').length === 5 && \
         [...document.querySelectorAll('#graph [data-node]')].every(n => n.dataset.state === 'Normal')",
    );
    browser.wait_until(
        "link 1-4 drawn alive",
        limit,
        "document.querySelector('#graph [data-link=\"1-4\"]')?.dataset.state === 'alive'",
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#graph [data-link]').length"),
        json!(10),
        "five nodes, ten links"
    );

    // The control panel: pick nodes 1 and 4, click "Cut link".
    browser.eval(
        "document.getElementById('from').value = '1'; \
         document.getElementById('to').value = '4'; true",
    );
    browser.click("#cut");
    browser.wait_until(
        "link 1-4 drawn cut",
        limit,
        "document.querySelector('#graph [data-link=\"1-4\"]')?.dataset.state === 'cut'",
    );
    let states = browser.eval(
        "[...document.querySelectorAll('#graph [data-link]')].map(l => l.dataset.link + ':' + l.dataset.state).join(' ')",
    );
    println!("links after the cut: {states}");
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#graph [data-link]')].filter(l => l.dataset.state === 'cut').length"
        ),
        json!(1),
        "only the link 1-4 is cut: {states}"
    );
    // The cut is real: node 1's transport holds a drop rule for peer 4.
    let http1 = dashboard
        .trim_start_matches("http://")
        .trim_end_matches("/dashboard")
        .to_string();
    let (_, faults) = http_get(&http1, "/v1/faults");
    let faults: Value = serde_json::from_str(&faults).expect("faults JSON");
    assert!(
        faults["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["rule"]["peer"] == 4),
        "node 1 has no rule for peer 4: {faults}"
    );

    // Some traffic for the charts while phi climbs past the threshold on the cut link, then
    // the picture. (Answers are not checked here: the demo's own test checks outcomes.)
    let nodes: Vec<String> = (1..=5u16)
        .map(|i| format!("127.0.0.1:{}", base + 1000 + i))
        .collect();
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(4) {
        let node = &nodes[i % nodes.len()];
        let _ = http_post(node, "/v1/ap/default/visits/incr", r#"{"by": 1}"#);
        if i.is_multiple_of(4) {
            let body = format!(r#"{{"key": "visits", "value": "{i}"}}"#);
            let _ = http_post(node, "/v1/cp/put", &body);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(40));
    }
    let shot = browser.call(
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64 PNG");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    println!("screenshot: {} ({} bytes)", path.display(), png.len());
    if let Ok(copy) = std::env::var("ISLE_SCREENSHOT") {
        std::fs::write(&copy, &png).expect("write ISLE_SCREENSHOT");
        println!("screenshot copied to {copy}");
    }
    drop(browser);
    drop(demo);
}

// ---------------------------------------------------------------------------------------------
// Without a browser: the page, its event stream, and who may call the API cross-origin.

/// Sends `request` (a whole HTTP/1.1 request) to `addr` and reads the answer until it contains
/// `until` or the connection closes or 5 s pass.
fn raw(addr: &str, request: &str, until: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(5) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {} // read timeout: look again
        }
        if String::from_utf8_lossy(&answer).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn every_node_serves_the_page_and_its_events_and_allows_only_member_origins() {
    let cluster = common::LocalCluster::start(3);
    let _logs = cluster.logs_on_panic();
    let (a, b) = (cluster.http(1), cluster.http(2));
    common::wait_for("node 1 to know node 2", Duration::from_secs(30), || {
        let status = common::status(&a)?;
        let known = status["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["http_addr"] == json!(b));
        if known {
            Ok(())
        } else {
            Err(format!("{status}"))
        }
    });

    let page = raw(
        &a,
        &format!("GET /dashboard HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"),
        "</html>",
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<title>Isle dashboard</title>"), "{page}");
    let root = raw(
        &a,
        &format!("GET / HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n"),
        "\r\n\r\n",
    );
    assert!(
        root.starts_with("HTTP/1.1 307") && root.contains("location: /dashboard"),
        "{root}"
    );

    // The event stream, asked cross-origin by a page served from node 2.
    let events = raw(
        &a,
        &format!("GET /v1/dashboard/events HTTP/1.1\r\nHost: {a}\r\nOrigin: http://{b}\r\n\r\n"),
        "\n\n",
    );
    assert!(events.starts_with("HTTP/1.1 200"), "{events}");
    assert!(events.contains("text/event-stream"), "{events}");
    assert!(
        events
            .to_ascii_lowercase()
            .contains(&format!("access-control-allow-origin: http://{b}")),
        "{events}"
    );
    let data = events
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data line: {events}"));
    let snapshot: Value = serde_json::from_str(data).expect("snapshot JSON");
    assert_eq!(snapshot["node"], 1, "{snapshot}");
    assert_eq!(snapshot["faults"]["allowed"], true, "{snapshot}");
    assert!(
        snapshot["cp"].is_object() && snapshot["ap"].is_object(),
        "{snapshot}"
    );

    // A preflight from a member origin is answered; one from any other origin is not allowed.
    let preflight = |origin: &str| {
        raw(
            &a,
            &format!(
                "OPTIONS /v1/faults HTTP/1.1\r\nHost: {a}\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
            ),
            "\r\n\r\n",
        )
        .to_ascii_lowercase()
    };
    let member = preflight(&format!("http://{b}"));
    assert!(member.starts_with("http/1.1 204"), "{member}");
    assert!(member.contains("access-control-allow-methods"), "{member}");
    let stranger = preflight("http://evil.example");
    assert!(
        !stranger.contains("access-control-allow-origin"),
        "a foreign origin must not be allowed: {stranger}"
    );
}
