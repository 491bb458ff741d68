//! The dashboard: a self-contained page every node serves at `/dashboard` (and `/`), showing
//! the cluster as a graph and live charts, with a control panel that cuts and heals links.
//!
//! - `GET /dashboard` — the page (HTML, CSS and JS in one embedded asset; no external requests).
//! - `GET /v1/dashboard/events` — server-sent events: a `snapshot` every 500 ms with this node's
//!   status (as `/v1/status`), its fault rules, a few metrics and its API answers by code.
//!
//! The page opens one event stream per member (their HTTP addresses come from this node's
//! status), so each node's own view is drawn — a partition looks different from each side.
//! Those requests are cross-origin, so answers carry `Access-Control-Allow-Origin` for the
//! origins of member nodes only (not `*`: no other web page may drive the cluster), and
//! preflight `OPTIONS` requests from those origins are answered here.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use isle_node::NodeHandle;

use crate::wire::admin::{DashboardMetrics, DashboardSnapshot};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// How often a snapshot is sent.
const PERIOD: Duration = Duration::from_millis(500);

/// The dashboard's state: the node, and its API answers counted by keyspace and status code.
#[derive(Clone)]
pub struct Dashboard {
    node: NodeHandle,
    answers: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Dashboard {
    /// The dashboard of `node`.
    pub fn new(node: NodeHandle) -> Dashboard {
        Dashboard {
            node,
            answers: Arc::default(),
        }
    }

    fn count(&self, key: String) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        *answers.entry(key).or_default() += 1;
    }

    fn answers(&self) -> BTreeMap<String, u64> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `origin` (e.g. `http://127.0.0.1:8402`) is this node's or a member's HTTP origin.
    fn member_origin(&self, origin: &str) -> bool {
        let Some(addr) = origin.strip_prefix("http://") else {
            return false;
        };
        let status = self.node.status.borrow();
        status.http_addr == addr || status.peers.iter().any(|p| p.http_addr == addr)
    }
}

/// The dashboard's routes, their state applied: `.merge` them into the node's router.
pub fn routes(dashboard: Dashboard) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(page))
        .route("/v1/dashboard/events", get(events))
        .with_state(dashboard)
}

async fn page() -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(PAGE),
    )
        .into_response()
}

/// Middleware for the whole router: counts API answers (for the error chart), answers CORS
/// preflights from member origins and marks their answers readable.
pub async fn layer(State(dashboard): State<Dashboard>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| dashboard.member_origin(o))
        .map(str::to_string);
    if request.method() == Method::OPTIONS
        && let Some(origin) = &origin
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        allow(response.headers_mut(), origin);
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let keyspace = keyspace(request.uri().path());
    let mut response = next.run(request).await;
    if let Some(keyspace) = keyspace {
        dashboard.count(format!("{keyspace} {}", response.status().as_u16()));
    }
    if let Some(origin) = &origin {
        allow(response.headers_mut(), origin);
    }
    response
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// The keyspace a path belongs to, for counting answers (`None`: not a client request).
fn keyspace(path: &str) -> Option<&'static str> {
    if path.starts_with("/v1/cp/") {
        Some("cp")
    } else if path.starts_with("/v1/ap/") {
        Some("ap")
    } else {
        None
    }
}

async fn events(State(dashboard): State<Dashboard>) -> Response {
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(
        stream::unfold((dashboard, true), |(dashboard, first)| async move {
            if !first {
                dashboard.node.clock.sleep(PERIOD).await;
            }
            // The status channel closes when the node stops: end the stream, so the HTTP
            // server's graceful shutdown is not held up by an open page.
            if dashboard.node.status.has_changed().is_err() {
                return None;
            }
            // Plain data only: encoding cannot fail.
            let data = serde_json::to_string(&snapshot(&dashboard)).unwrap_or_default();
            let event = Event::default().event("snapshot").data(data);
            Some((Ok(event), (dashboard, false)))
        }),
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What the page needs from this node, in one JSON object.
fn snapshot(dashboard: &Dashboard) -> DashboardSnapshot {
    let node = &dashboard.node;
    let mut status = node.status.borrow().as_ref().clone();
    // Transitions are history the page does not chart; drop them to keep events small.
    status.transitions.clear();
    let mut text = String::new();
    let metrics = match prometheus_client::encoding::text::encode(&mut text, &node.registry) {
        Ok(()) => metrics(&text),
        Err(_) => DashboardMetrics::default(),
    };
    DashboardSnapshot {
        answers: dashboard.answers(),
        faults: crate::fault_list(node),
        metrics,
        status: isle_node::StatusReport {
            node: status,
            cp: node.cp.raft_status(),
            ap: node.ap.status(),
        },
    }
}

/// The metrics the charts use, from the text exposition: AP requests by outcome and the
/// hinted-handoff and anti-entropy counters, summed over their labels.
fn metrics(text: &str) -> DashboardMetrics {
    const SUMMED: [&str; 7] = [
        "isle_ap_hints_pending",
        "isle_ap_hints_delivered_total",
        "isle_ap_aae_exchanges_total",
        "isle_ap_aae_keys_diverged_total",
        "isle_ap_aae_keys_repaired_total",
        "isle_ap_aae_bytes_total",
        "isle_ap_aae_in_sync",
    ];
    let mut out = DashboardMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        if name == "isle_ap_requests_total" {
            let outcome = labels
                .split(',')
                .find_map(|l| l.strip_prefix("outcome="))
                .map(|o| o.trim_matches('"'))
                .unwrap_or("unknown");
            *out.ap_requests.entry(outcome.to_string()).or_default() += value;
        } else if SUMMED.contains(&name) {
            *out.summed.entry(name.to_string()).or_default() += value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_sum_labels_and_split_requests_by_outcome() {
        let text = "# TYPE x counter\n\
            isle_ap_requests_total{op=\"put\",outcome=\"ok\"} 3\n\
            isle_ap_requests_total{op=\"get\",outcome=\"ok\"} 2\n\
            isle_ap_requests_total{op=\"put\",outcome=\"unavailable\"} 1\n\
            isle_ap_aae_bytes_total 100\n\
            isle_ap_hints_pending 4\n\
            isle_net_frames_sent_total{peer=\"2\"} 9\n";
        let m = serde_json::to_value(metrics(text)).expect("encodes");
        assert_eq!(m["ap_requests"], json!({"ok": 5.0, "unavailable": 1.0}));
        assert_eq!(m["isle_ap_aae_bytes_total"], json!(100.0));
        assert_eq!(m["isle_ap_hints_pending"], json!(4.0));
        assert!(m.get("isle_net_frames_sent_total").is_none());
    }

    #[test]
    fn only_client_paths_are_counted() {
        assert_eq!(keyspace("/v1/cp/put"), Some("cp"));
        assert_eq!(keyspace("/v1/ap/default/k"), Some("ap"));
        assert_eq!(keyspace("/v1/status"), None);
        assert_eq!(keyspace("/v1/ap-local/default/k"), None);
    }

    #[test]
    fn the_page_needs_nothing_from_the_network() {
        for external in ["http://", "https://", "//cdn", "@import"] {
            let hits: Vec<&str> = PAGE
                .lines()
                .filter(|l| l.contains(external))
                // Member nodes' addresses, and the SVG namespace (a name, never fetched).
                .filter(|l| !l.contains("'http://'") && !l.contains("www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "external reference {external}: {hits:?}");
        }
    }
}
