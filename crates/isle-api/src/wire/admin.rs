//! The operator's routes: transport fault injection (`/v1/faults`), clock skew
//! (`/v1/faults/clock`) and the dashboard's snapshot (`/v1/dashboard/events`).

use std::collections::BTreeMap;

use isle_net::FaultRule;
use isle_node::StatusReport;
use serde::{Deserialize, Serialize};

/// One installed fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    /// Its id, for `DELETE /v1/faults/{id}`.
    pub id: u64,
    /// The rule.
    pub rule: FaultRule,
}

/// Answer to `GET /v1/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultList {
    /// Whether the node was started with `--allow-fault-injection`.
    pub allowed: bool,
    /// The rules in force.
    pub rules: Vec<FaultEntry>,
}

/// Body of `POST /v1/faults`: one rule or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FaultRules {
    /// One rule.
    One(FaultRule),
    /// Several rules, added together.
    Many(Vec<FaultRule>),
}

/// Answer to `POST /v1/faults` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultIds {
    /// The new rules' ids, in the order given.
    pub ids: Vec<u64>,
}

/// Answer to `GET /v1/faults/clock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSkew {
    /// Whether fault injection (and so skewing) is allowed.
    pub allowed: bool,
    /// The skew in force, ms (`null`: this node's clock cannot be skewed).
    pub skew_ms: Option<i64>,
}

/// Body of `POST /v1/faults/clock`, and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewBody {
    /// Milliseconds added to the wall clock (negative: behind).
    pub skew_ms: i64,
}

/// The metrics the dashboard charts, summed over their labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DashboardMetrics {
    /// AP requests by outcome (`ok`, `unavailable`, ...).
    pub ap_requests: BTreeMap<String, f64>,
    /// Hinted-handoff and anti-entropy series by metric name (those the node exports).
    #[serde(flatten)]
    pub summed: BTreeMap<String, f64>,
}

/// One `snapshot` event of `/v1/dashboard/events`: the node's status as `/v1/status` serves
/// it (without its transition history), its fault rules, a few metrics and its API answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardSnapshot {
    /// API answers counted by `"<keyspace> <status code>"`.
    pub answers: BTreeMap<String, u64>,
    /// Fault rules in force.
    pub faults: FaultList,
    /// The charted metrics.
    pub metrics: DashboardMetrics,
    /// The status, its `transitions` emptied to keep events small.
    #[serde(flatten)]
    pub status: StatusReport,
}
