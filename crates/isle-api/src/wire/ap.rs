//! `/v1/ap/...` and `/v1/ap-local/...`: the AP keyspace's requests and answers.
//!
//! Byte strings (values, members, map fields) are UTF-8 text in JSON; a request body may say
//! `"encoding": "base64"` to send them base64-encoded, and an answer holding any byte string
//! that is not UTF-8 says so and encodes all of its byte strings that way.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

pub use isle_ap::{BucketInfo, Replicas, Rule};
pub use isle_crdt::Stamp;

/// How the byte strings of a body are spelled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// As they are (JSON strings are UTF-8).
    #[default]
    Utf8,
    /// Base64, standard alphabet.
    Base64,
}

impl Encoding {
    /// Whether this is the default, left out of bodies.
    pub fn is_utf8(&self) -> bool {
        *self == Encoding::Utf8
    }

    /// The bytes `text` spells in this encoding.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
            Encoding::Base64 => STANDARD.decode(text),
        }
    }

    /// `bytes` spelled in this encoding (lossy UTF-8 for [`Encoding::Utf8`]).
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Base64 => STANDARD.encode(bytes),
        }
    }
}

/// Query of a read: `r` (a level: `one`, `quorum`, `all`, `local_quorum`, `each_quorum` or a
/// number; default `quorum`) and `strict` (count only primaries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    /// Replicas that must answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
    /// `true` or `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<String>,
}

/// Query of a write: `w` (a level, default `quorum`) and `strict`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    /// `true` or `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<String>,
    /// Replicas that must acknowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
}

/// Query of a delete: a write's, plus the context of the read it deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete only what this context covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `true` or `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<String>,
    /// Replicas that must acknowledge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w: Option<String>,
}

/// Body of a put.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The context of the read this write replaces; none makes the write blind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// How `value` is spelled.
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    /// The value.
    pub value: String,
}

fn one() -> i64 {
    1
}

/// Body of `incr` (an empty body adds 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrBody {
    /// Amount to add (negative subtracts).
    #[serde(default = "one")]
    pub by: i64,
    /// Idempotency key: a retry with the same id, through any node, counts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Body of `sadd` and `srem`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    /// How `members` are spelled.
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    /// The members.
    pub members: Vec<String>,
}

/// Body of `map-update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapBody {
    /// How fields and texts are spelled.
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    /// Counter fields to add to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incr: BTreeMap<String, i64>,
    /// Fields to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Idempotency key for the increments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Text fields to set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
}

/// A map field's value: text, or a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Field {
    /// A counter field.
    Int(i64),
    /// A text field.
    Text(String),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Int(n) => write!(f, "{n}"),
            Field::Text(text) => f.write_str(text),
        }
    }
}

/// A key's value in an answer: on the wire its `type` and one payload field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RawData", try_from = "RawData")]
pub enum Data {
    /// Never written, or deleted: `"type": null, "values": []`.
    Absent,
    /// `"type": "value", "values": [...]`: one value, or several siblings.
    Values(Vec<String>),
    /// `"type": "counter", "value": n`.
    Counter(i64),
    /// `"type": "set", "members": [...]`.
    Set(Vec<String>),
    /// `"type": "map", "fields": {field: text or number}`.
    Map(BTreeMap<String, Field>),
}

impl Data {
    /// The plain values (siblings), if this is a plain value.
    pub fn values(&self) -> &[String] {
        match self {
            Data::Values(values) => values,
            _ => &[],
        }
    }

    /// The members, if this is a set.
    pub fn members(&self) -> &[String] {
        match self {
            Data::Set(members) => members,
            _ => &[],
        }
    }

    /// The count, if this is a counter.
    pub fn counter(&self) -> Option<i64> {
        match self {
            Data::Counter(n) => Some(*n),
            _ => None,
        }
    }
}

/// [`Data`] as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<BTreeMap<String, Field>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    members: Option<Vec<String>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

impl From<Data> for RawData {
    fn from(data: Data) -> RawData {
        let mut raw = RawData {
            fields: None,
            members: None,
            kind: None,
            value: None,
            values: None,
        };
        let kind = match data {
            Data::Absent => {
                raw.values = Some(Vec::new());
                return raw;
            }
            Data::Values(values) => {
                raw.values = Some(values);
                "value"
            }
            Data::Counter(n) => {
                raw.value = Some(n);
                "counter"
            }
            Data::Set(members) => {
                raw.members = Some(members);
                "set"
            }
            Data::Map(fields) => {
                raw.fields = Some(fields);
                "map"
            }
        };
        raw.kind = Some(kind.to_string());
        raw
    }
}

impl TryFrom<RawData> for Data {
    type Error = String;

    fn try_from(raw: RawData) -> Result<Data, String> {
        let missing = |field: &str, kind: &str| format!("type {kind} without {field:?}");
        match raw.kind.as_deref() {
            None => Ok(Data::Absent),
            Some("value") => raw
                .values
                .map(Data::Values)
                .ok_or_else(|| missing("values", "value")),
            Some("counter") => raw
                .value
                .map(Data::Counter)
                .ok_or_else(|| missing("value", "counter")),
            Some("set") => raw
                .members
                .map(Data::Set)
                .ok_or_else(|| missing("members", "set")),
            Some("map") => raw
                .fields
                .map(Data::Map)
                .ok_or_else(|| missing("fields", "map")),
            Some(other) => Err(format!("unknown value type {other:?}")),
        }
    }
}

/// Answer to a read (200, or 404 for an absent key, which still carries a context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The bucket.
    pub bucket: String,
    /// The causal context to write back with (opaque).
    pub context: String,
    /// `base64` when the byte strings are base64-encoded.
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    /// Whether the key holds a value.
    pub found: bool,
    /// The key.
    pub key: String,
    /// Who answered.
    pub replicas: Replicas,
    /// The bucket's merge rule.
    pub rule: Rule,
    /// In `lww` buckets, the winning write's hybrid timestamp.
    pub stamp: Option<Stamp>,
    /// The value.
    #[serde(flatten)]
    pub data: Data,
}

/// Answer to a write (put, delete, incr, sadd, srem, map-update): the value after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    /// False when an idempotent retry found its request already applied.
    pub applied: bool,
    /// The bucket.
    pub bucket: String,
    /// The context after the write.
    pub context: String,
    /// `base64` when the byte strings are base64-encoded.
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    /// The key.
    pub key: String,
    /// Who acknowledged.
    pub replicas: Replicas,
    /// The bucket's merge rule.
    pub rule: Rule,
    /// In `lww` buckets, the write's hybrid timestamp.
    pub stamp: Option<Stamp>,
    /// The value on the coordinator after the write.
    #[serde(flatten)]
    pub data: Data,
}

/// Answer to `GET /v1/ap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketsReply {
    /// The buckets, in configuration order.
    pub buckets: Vec<BucketInfo>,
    /// The node answering.
    pub node: u64,
}

/// One node's own copy of a key, as `/v1/ap-local` shows it (bytes as lossy UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalValue {
    /// `{"absent": true}`: never written, or deleted.
    Absent(bool),
    /// `{"values": [...]}`.
    Values(Vec<String>),
    /// `{"counter": n}`.
    Counter(i64),
    /// `{"members": [...]}`.
    Members(Vec<String>),
    /// `{"fields": {...}}`.
    Fields(BTreeMap<String, Field>),
}

/// Answer to `GET /v1/ap-local/{bucket}/{key}` (404 with only `found: false` when this node
/// holds no copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalReply {
    /// The copy's digest (hex), equal on replicas that agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether this node holds a copy.
    pub found: bool,
    /// The copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<LocalValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas() -> Replicas {
        Replicas {
            answered: 2,
            asked: 3,
            needed: 2,
            level: "quorum".into(),
            fallbacks: 0,
        }
    }

    #[test]
    fn a_read_reply_round_trips_for_every_type() {
        let cases = [
            (Data::Absent, r#""type":null,"values":[]"#),
            (
                Data::Values(vec!["a".into()]),
                r#""type":"value","values":["a"]"#,
            ),
            (Data::Counter(-3), r#""type":"counter","value":-3"#),
            (
                Data::Set(vec!["x".into()]),
                r#""members":["x"],"type":"set""#,
            ),
            (
                Data::Map(BTreeMap::from([
                    ("n".to_string(), Field::Int(2)),
                    ("t".to_string(), Field::Text("ann".into())),
                ])),
                r#""fields":{"n":2,"t":"ann"},"type":"map""#,
            ),
        ];
        for (data, payload) in cases {
            let reply = ReadReply {
                bucket: "default".into(),
                context: "CTX".into(),
                encoding: Encoding::Utf8,
                found: data != Data::Absent,
                key: "k".into(),
                replicas: replicas(),
                rule: Rule::Siblings,
                stamp: None,
                data,
            };
            let text = serde_json::to_string(&reply).expect("encodes");
            assert!(text.ends_with(&format!("{payload}}}")), "{text}");
            assert!(!text.contains("encoding"), "{text}");
            let back: ReadReply = serde_json::from_str(&text).expect("decodes");
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn base64_is_said_and_decoded() {
        let text = r#"{"applied":true,"bucket":"b","context":"","encoding":"base64","key":"k","replicas":{"answered":1,"asked":1,"needed":1,"level":"one","fallbacks":0},"rule":"siblings","stamp":null,"type":"value","values":["/wA="]}"#;
        let reply: WriteReply = serde_json::from_str(text).expect("decodes");
        assert_eq!(reply.encoding, Encoding::Base64);
        assert_eq!(
            reply.encoding.decode(&reply.data.values()[0]),
            Ok(vec![0xff, 0])
        );
        assert!(serde_json::from_str::<WriteReply>(&text.replace("values", "vals")).is_err());
    }

    #[test]
    fn local_copies_are_tagged_by_their_payload() {
        let found = LocalReply {
            digest: Some("00ff".into()),
            found: true,
            value: Some(LocalValue::Absent(true)),
        };
        let text = serde_json::to_string(&found).expect("encodes");
        assert_eq!(
            text,
            r#"{"digest":"00ff","found":true,"value":{"absent":true}}"#
        );
        let missing = LocalReply {
            digest: None,
            found: false,
            value: None,
        };
        assert_eq!(
            serde_json::to_string(&missing).expect("encodes"),
            r#"{"found":false}"#
        );
    }
}
