//! A node's configuration: command-line flags or the same keys in a TOML file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use isle_detect::{PhiConfig, StateConfig};
use isle_net::TransportConfig;
use isle_quorum::Policy;
use isle_types::{NodeId, ZoneId};
use serde::{Deserialize, Serialize};

/// Everything one `isle node` needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (positive integer); fixed for the life of its data dir.
    pub id: NodeId,
    /// Address the peer transport listens on.
    pub listen: String,
    /// Address peers should dial; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Address of the client/admin HTTP API.
    pub http: String,
    /// Address of the etcd v3 gRPC API; `None` serves none.
    #[serde(default)]
    pub grpc: Option<String>,
    /// Peer addresses to contact at start (any subset of the cluster; gossip finds the rest).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Directory for durable state.
    pub data_dir: PathBuf,
    /// Failure domain of this node.
    #[serde(default)]
    pub zone: ZoneId,
    /// Vote weight in weighted quorums.
    #[serde(default = "one")]
    pub weight: u32,
    /// Whether `/v1/faults` may inject faults into this node's transport.
    #[serde(default)]
    pub allow_fault_injection: bool,
    /// How this cluster judges quorum; every node must use the same policy.
    #[serde(default)]
    pub quorum_policy: Policy,
    /// Failure detection and partition state timings.
    #[serde(default)]
    pub detection: DetectionConfig,
    /// Peer transport tuning.
    #[serde(default)]
    pub transport: TransportConfig,
    /// CP keyspace (Raft) settings.
    #[serde(default)]
    pub cp: crate::cp::CpConfig,
    /// AP keyspace settings.
    #[serde(default)]
    pub ap: crate::ap::ApConfig,
}

fn one() -> u32 {
    1
}

/// Timings of heartbeats, the phi-accrual detector and the partition state machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Interval between heartbeats to every peer.
    #[serde(with = "millis")]
    pub heartbeat_interval: Duration,
    /// Phi above which a peer is considered unreachable.
    pub phi_threshold: f64,
    /// A pause this long is tolerated before phi climbs steeply.
    #[serde(with = "millis")]
    pub acceptable_pause: Duration,
    /// Floor on the heartbeat interval's standard deviation, so a very regular peer is not
    /// declared dead on its first hiccup.
    #[serde(with = "millis")]
    pub min_std_dev: Duration,
    /// After start, a member never heard from is not yet counted as lost for this long.
    #[serde(with = "millis")]
    pub boot_grace: Duration,
    /// A relayed view not refreshed for this long no longer describes the present. Keep it
    /// below the detection time, so a cut side's last views expire before it is declared lost.
    #[serde(with = "millis")]
    pub view_stale_after: Duration,
    /// How long a detected partition must persist before the node enters Degraded/Emergency.
    #[serde(with = "millis")]
    pub settle: Duration,
    /// Minimum time in Reconciling before returning to Normal (damps flapping links).
    #[serde(with = "millis")]
    pub reconcile_min: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let phi = PhiConfig::default();
        let state = StateConfig::default();
        DetectionConfig {
            heartbeat_interval: Duration::from_millis(100),
            phi_threshold: phi.threshold,
            acceptable_pause: phi.acceptable_pause,
            min_std_dev: phi.min_std_dev,
            boot_grace: Duration::from_secs(3),
            view_stale_after: Duration::from_millis(500),
            settle: state.settle,
            reconcile_min: state.reconcile_min,
        }
    }
}

impl DetectionConfig {
    /// The phi-accrual detector's configuration.
    pub fn phi(&self) -> PhiConfig {
        PhiConfig {
            threshold: self.phi_threshold,
            min_std_dev: self.min_std_dev,
            acceptable_pause: self.acceptable_pause,
            first_interval: self.heartbeat_interval,
            ..PhiConfig::default()
        }
    }

    /// The partition state machine's configuration.
    pub fn state(&self) -> StateConfig {
        StateConfig {
            settle: self.settle,
            reconcile_min: self.reconcile_min,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config.
    #[error("invalid config file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// A value is out of range.
    #[error("invalid setting {field}: {detail}")]
    Invalid {
        /// The offending key.
        field: &'static str,
        /// What is wrong and what is allowed.
        detail: String,
    },
}

impl NodeConfig {
    /// Reads a TOML file with the same keys as the command-line flags.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The address peers dial to reach this node.
    pub fn advertised(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, detail: &str| {
            Err(ConfigError::Invalid {
                field,
                detail: detail.into(),
            })
        };
        if self.weight == 0 {
            return invalid("weight", "must be at least 1");
        }
        if self.detection.heartbeat_interval < Duration::from_millis(5) {
            return invalid("detection.heartbeat_interval", "must be at least 5 ms");
        }
        if !(self.detection.phi_threshold > 0.0 && self.detection.phi_threshold.is_finite()) {
            return invalid(
                "detection.phi_threshold",
                "must be a positive number (default 8)",
            );
        }
        let advertised = self.advertised();
        if advertised.starts_with("0.0.0.0") || advertised.starts_with("[::]") {
            return invalid(
                "advertise",
                "listening on a wildcard address needs --advertise HOST:PORT",
            );
        }
        Ok(())
    }
}

/// Durations in config files are written as integer milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_defaults() {
        let text = r#"
            id = 2
            listen = "127.0.0.1:7002"
            http = "127.0.0.1:8002"
            peers = ["127.0.0.1:7001"]
            data_dir = "/tmp/x"
            zone = "west"
            [detection]
            heartbeat_interval = 50
        "#;
        let config: NodeConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.id, NodeId(2));
        assert_eq!(config.weight, 1);
        assert_eq!(
            config.detection.heartbeat_interval,
            Duration::from_millis(50)
        );
        assert_eq!(config.detection.phi_threshold, 8.0);
        assert!(!config.allow_fault_injection);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let text = "id = 1\nlisten = \"a:1\"\nhttp = \"a:2\"\ndata_dir = \"d\"\nwieght = 2\n";
        assert!(toml::from_str::<NodeConfig>(text).is_err());
        let text = "id = 1\nlisten = \"0.0.0.0:1\"\nhttp = \"a:2\"\ndata_dir = \"d\"\n";
        let config: NodeConfig = toml::from_str(text).unwrap();
        assert!(config.validate().is_err());
    }
}
