//! `isle ap ...`: the AP keyspace from the command line, over a node's `/v1/ap` HTTP API.
//!
//! Reads print the value(s) on stdout — one per line; several values are siblings — and what
//! the request saw on stderr: the context to write back with, and how many replicas answered
//! (`context=... replicas 3/3 (quorum needs 2)`). `--json` prints the server's answer instead.
//! Writes print the new context (puts), the counter (incr), the members (sadd/srem) or the
//! fields (hset/hdel). Refusals print the server's sentence and exit non-zero.

use std::io::{Read, Write};
use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use isle_api::wire::ErrorBody;
use isle_api::wire::ap::{
    BucketsReply, Data, DeleteQuery, Encoding, Field, IncrBody, MapBody, MembersBody, PutBody,
    ReadQuery, ReadReply, Replicas, Rule, WriteQuery, WriteReply,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kv::url_encode;

/// `isle ap ...`
#[derive(Subcommand, Debug)]
pub enum ApCommand {
    /// Read a key: values (siblings one per line), a counter, set members or map fields.
    Get(GetArgs),
    /// Write a plain value. Without --context the write is blind: it becomes a sibling.
    Put(PutArgs),
    /// Delete a key (what --context covers, or what the coordinating replica holds).
    Del(DelArgs),
    /// Add to a counter (default 1); --request-id makes retries count once.
    Incr(IncrArgs),
    /// Add members to a set.
    Sadd(MembersArgs),
    /// Remove members from a set.
    Srem(MembersArgs),
    /// Set text fields of a map: FIELD VALUE [FIELD VALUE ...].
    Hset(HsetArgs),
    /// Add to a counter field of a map.
    Hincr(HincrArgs),
    /// Remove fields from a map.
    Hdel(HdelArgs),
    /// List the buckets a node serves, with their merge rule and replica count.
    Buckets(Target),
}

/// Where to send the request and how to print the answer.
#[derive(Args, Debug)]
pub struct Target {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

/// Bucket and key.
#[derive(Args, Debug)]
pub struct Key {
    /// Bucket (`default` unless the cluster configures others; see `isle ap buckets`).
    bucket: String,
    /// Key.
    key: String,
}

/// Write consistency.
#[derive(Args, Debug)]
pub struct WriteLevel {
    /// Replicas that must acknowledge: one, quorum, all, local_quorum, each_quorum or a number.
    #[arg(long, default_value = "quorum")]
    w: String,
    /// Count only primary replicas (no sloppy quorum: fallbacks holding hints do not count).
    #[arg(long)]
    strict: bool,
}

impl WriteLevel {
    fn query(&self) -> WriteQuery {
        WriteQuery {
            strict: Some(self.strict.to_string()),
            w: Some(self.w.clone()),
        }
    }
}

/// Flags of `isle ap get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// Replicas that must answer: one, quorum, all, local_quorum, each_quorum or a number.
    #[arg(long, default_value = "quorum")]
    r: String,
    /// Count only primary replicas.
    #[arg(long)]
    strict: bool,
}

/// Flags of `isle ap put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// The value; `-` reads it from stdin (any bytes).
    value: String,
    /// The context of the read this write replaces (printed by `isle ap get`).
    #[arg(long)]
    context: Option<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// Flags of `isle ap del`.
#[derive(Args, Debug)]
pub struct DelArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// Delete only what this context covers (a concurrent write survives as a sibling).
    #[arg(long)]
    context: Option<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// Flags of `isle ap incr`.
#[derive(Args, Debug)]
pub struct IncrArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// Amount to add (negative subtracts).
    #[arg(default_value_t = 1, allow_negative_numbers = true)]
    by: i64,
    /// Idempotency key: a retry with the same id, through any node, counts once.
    #[arg(long)]
    request_id: Option<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// Flags of `isle ap sadd` and `isle ap srem`.
#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// Members.
    #[arg(required = true)]
    members: Vec<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// Flags of `isle ap hset`.
#[derive(Args, Debug)]
pub struct HsetArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// FIELD VALUE pairs.
    #[arg(required = true, num_args = 2.., value_names = ["FIELD", "VALUE"])]
    pairs: Vec<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// Flags of `isle ap hincr`.
#[derive(Args, Debug)]
pub struct HincrArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// Field.
    field: String,
    /// Amount to add (negative subtracts).
    #[arg(default_value_t = 1, allow_negative_numbers = true)]
    by: i64,
    /// Idempotency key: a retry with the same id, through any node, counts once.
    #[arg(long)]
    request_id: Option<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// Flags of `isle ap hdel`.
#[derive(Args, Debug)]
pub struct HdelArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    key: Key,
    /// Fields.
    #[arg(required = true)]
    fields: Vec<String>,
    #[command(flatten)]
    level: WriteLevel,
}

/// A client that outwaits the coordinator's own request timeout, so its refusal is what shows.
fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("building HTTP client")
}

fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

fn key_path(key: &Key, suffix: &str) -> String {
    format!(
        "/v1/ap/{}/{}{suffix}",
        url_encode(&key.bucket),
        url_encode(&key.key)
    )
}

/// Sends a request (with `query` and a JSON `body`, if given); returns the answer of a success
/// or of a 404 for an absent key (a read's answer all the same), decoded as `T`, and turns any
/// other answer into an error carrying the server's sentence.
async fn call<T: DeserializeOwned>(
    method: reqwest::Method,
    addr: &str,
    path: &str,
    query: &(impl Serialize + ?Sized),
    body: Option<&(impl Serialize + ?Sized)>,
) -> anyhow::Result<T> {
    let what = format!("{method} {path} on {addr}");
    let mut request = http()?
        .request(method, format!("{}{path}", base_url(addr)))
        .query(query);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.with_context(|| what.clone())?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to {what}"))?;
    let absent = status == reqwest::StatusCode::NOT_FOUND
        && serde_json::from_str::<ReadReply>(&text).is_ok_and(|read| !read.found);
    if !status.is_success() && !absent {
        let message = serde_json::from_str::<ErrorBody>(&text).map_or(text, |body| body.error);
        bail!("{what}: HTTP {status}: {message}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: unexpected answer {text}"))
}

/// No body, for the requests that send none.
const NO_BODY: Option<&()> = None;

/// No query parameters.
const NO_QUERY: &[(&str, &str)] = &[];

/// The bytes a string of an answer spells in its `encoding`.
fn bytes(encoding: Encoding, text: &str) -> Vec<u8> {
    encoding
        .decode(text)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}

fn print_lines(encoding: Encoding, items: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for item in items {
        out.write_all(&bytes(encoding, item))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn print_fields(encoding: Encoding, fields: &BTreeMap<String, Field>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for (field, value) in fields {
        out.write_all(&bytes(encoding, field))?;
        out.write_all(b" = ")?;
        match value {
            Field::Text(text) => out.write_all(&bytes(encoding, text))?,
            Field::Int(n) => out.write_all(n.to_string().as_bytes())?,
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The value of an answer on stdout, by its type.
fn print_value(encoding: Encoding, data: &Data) -> anyhow::Result<()> {
    match data {
        Data::Values(values) => print_lines(encoding, values),
        Data::Counter(n) => {
            println!("{n}");
            Ok(())
        }
        Data::Set(members) => print_lines(encoding, members),
        Data::Map(fields) => print_fields(encoding, fields),
        Data::Absent => Ok(()),
    }
}

/// `replicas 2/3 (quorum needs 2), 1 fallback`.
fn replicas_line(replicas: &Replicas) -> String {
    let mut line = format!(
        "replicas {}/{} ({} needs {})",
        replicas.answered, replicas.asked, replicas.level, replicas.needed
    );
    match replicas.fallbacks {
        0 => {}
        1 => line.push_str(", 1 fallback"),
        n => line.push_str(&format!(", {n} fallbacks")),
    }
    line
}

/// `context=... replicas 3/3 (quorum needs 2)` plus what else a reader should know.
fn summary(answer: &ReadReply) -> String {
    let mut line = format!(
        "context={} {}",
        answer.context,
        replicas_line(&answer.replicas)
    );
    if answer.rule == Rule::Lww
        && let Some(stamp) = &answer.stamp
    {
        line.push_str(&format!(
            " lww stamp={}.{}@{}",
            stamp.physical_ms, stamp.logical, stamp.node
        ));
    }
    let siblings = answer.data.values().len();
    if siblings > 1 {
        line.push_str(&format!(
            "\n{siblings} siblings: concurrent or blind writes; resolve with `isle ap put ... --context <this context>`"
        ));
    }
    line
}

fn print_json(answer: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(answer)?);
    Ok(())
}

async fn post(
    target: &Target,
    key: &Key,
    op: &str,
    level: &WriteLevel,
    body: &impl Serialize,
) -> anyhow::Result<Option<WriteReply>> {
    let path = key_path(key, &format!("/{op}"));
    let answer: WriteReply = call(
        reqwest::Method::POST,
        &target.http,
        &path,
        &level.query(),
        Some(body),
    )
    .await?;
    if target.json {
        print_json(&answer)?;
        return Ok(None);
    }
    Ok(Some(answer))
}

/// Runs `isle ap ...`.
pub async fn run(command: ApCommand) -> anyhow::Result<()> {
    match command {
        ApCommand::Get(args) => get(args).await,
        ApCommand::Put(args) => put(args).await,
        ApCommand::Del(args) => del(args).await,
        ApCommand::Incr(args) => {
            let body = IncrBody {
                by: args.by,
                request_id: args.request_id.clone(),
            };
            let Some(answer) = post(&args.target, &args.key, "incr", &args.level, &body).await?
            else {
                return Ok(());
            };
            match answer.data.counter() {
                Some(n) => println!("{n}"),
                None => println!("null"),
            }
            let applied = if answer.applied {
                ""
            } else {
                " (not applied again: this request id was applied before)"
            };
            eprintln!("{}{applied}", replicas_line(&answer.replicas));
            Ok(())
        }
        ApCommand::Sadd(args) => members(args, "sadd").await,
        ApCommand::Srem(args) => members(args, "srem").await,
        ApCommand::Hset(args) => {
            if args.pairs.len() % 2 != 0 {
                bail!("hset takes FIELD VALUE pairs; got an odd number of arguments");
            }
            let set = args
                .pairs
                .chunks(2)
                .filter_map(|pair| match pair {
                    [field, value] => Some((field.clone(), value.clone())),
                    _ => None,
                })
                .collect();
            let body = MapBody {
                set,
                ..MapBody::default()
            };
            map_update(&args.target, &args.key, &args.level, &body, None).await
        }
        ApCommand::Hincr(args) => {
            let body = MapBody {
                incr: BTreeMap::from([(args.field.clone(), args.by)]),
                request_id: args.request_id.clone(),
                ..MapBody::default()
            };
            let field = Some(args.field.as_str());
            map_update(&args.target, &args.key, &args.level, &body, field).await
        }
        ApCommand::Hdel(args) => {
            let body = MapBody {
                remove: args.fields.clone(),
                ..MapBody::default()
            };
            map_update(&args.target, &args.key, &args.level, &body, None).await
        }
        ApCommand::Buckets(target) => {
            let answer: BucketsReply = call(
                reqwest::Method::GET,
                &target.http,
                "/v1/ap",
                NO_QUERY,
                NO_BODY,
            )
            .await?;
            if target.json {
                return print_json(&answer);
            }
            println!("{:<24} {:<9} {:>3}", "BUCKET", "RULE", "N");
            for bucket in &answer.buckets {
                println!(
                    "{:<24} {:<9} {:>3}",
                    bucket.name,
                    bucket.rule.to_string(),
                    bucket.n
                );
            }
            Ok(())
        }
    }
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let path = key_path(&args.key, "");
    let query = ReadQuery {
        r: Some(args.r.clone()),
        strict: Some(args.strict.to_string()),
    };
    let answer: ReadReply = call(
        reqwest::Method::GET,
        &args.target.http,
        &path,
        &query,
        NO_BODY,
    )
    .await?;
    if args.target.json {
        return print_json(&answer);
    }
    if !answer.found {
        eprintln!("(not found) {}", summary(&answer));
        return Ok(());
    }
    print_value(answer.encoding, &answer.data)?;
    eprintln!("{}", summary(&answer));
    Ok(())
}

async fn put(args: PutArgs) -> anyhow::Result<()> {
    let (value, encoding) = if args.value == "-" {
        let mut value = Vec::new();
        std::io::stdin()
            .read_to_end(&mut value)
            .context("reading the value from stdin")?;
        match String::from_utf8(value) {
            Ok(text) => (text, Encoding::Utf8),
            Err(err) => (STANDARD.encode(err.as_bytes()), Encoding::Base64),
        }
    } else {
        (args.value.clone(), Encoding::Utf8)
    };
    let body = PutBody {
        context: args.context.clone(),
        encoding,
        value,
    };
    let path = key_path(&args.key, "");
    let query = args.level.query();
    let answer: WriteReply = call(
        reqwest::Method::PUT,
        &args.target.http,
        &path,
        &query,
        Some(&body),
    )
    .await?;
    if args.target.json {
        return print_json(&answer);
    }
    println!("{}", answer.context);
    let mut line = replicas_line(&answer.replicas);
    let siblings = answer.data.values().len();
    if siblings > 1 {
        line.push_str(&format!(
            "; the key now holds {siblings} siblings (this write was blind or concurrent)"
        ));
    }
    eprintln!("{line}");
    Ok(())
}

async fn del(args: DelArgs) -> anyhow::Result<()> {
    let path = key_path(&args.key, "");
    let WriteQuery { strict, w } = args.level.query();
    let query = DeleteQuery {
        context: args.context.clone(),
        strict,
        w,
    };
    let answer: WriteReply = call(
        reqwest::Method::DELETE,
        &args.target.http,
        &path,
        &query,
        NO_BODY,
    )
    .await?;
    if args.target.json {
        return print_json(&answer);
    }
    let left = answer.data.values().len();
    if left > 0 {
        println!("deleted; {left} concurrent value(s) survive as siblings");
    } else {
        println!("deleted");
    }
    eprintln!("{}", replicas_line(&answer.replicas));
    Ok(())
}

async fn members(args: MembersArgs, op: &str) -> anyhow::Result<()> {
    let body = MembersBody {
        members: args.members.clone(),
        ..MembersBody::default()
    };
    let Some(answer) = post(&args.target, &args.key, op, &args.level, &body).await? else {
        return Ok(());
    };
    print_value(answer.encoding, &answer.data)?;
    eprintln!("{}", replicas_line(&answer.replicas));
    Ok(())
}

async fn map_update(
    target: &Target,
    key: &Key,
    level: &WriteLevel,
    body: &MapBody,
    field: Option<&str>,
) -> anyhow::Result<()> {
    let Some(answer) = post(target, key, "map-update", level, body).await? else {
        return Ok(());
    };
    let fields = match &answer.data {
        Data::Map(fields) => fields.clone(),
        _ => BTreeMap::new(),
    };
    match field {
        // The field as JSON (`null` when gone), as this line has always shown it.
        Some(field) => println!("{}", serde_json::to_string(&fields.get(field))?),
        None => print_fields(answer.encoding, &fields)?,
    }
    eprintln!("{}", replicas_line(&answer.replicas));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// `isle ap ...` alone, for parsing tests.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        ap: ApCommand,
    }

    fn parse(args: &[&str]) -> ApCommand {
        let argv = std::iter::once("ap").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .ap
    }

    #[test]
    fn the_command_tree_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_parse() {
        let ApCommand::Get(get) = parse(&["get", "default", "k", "--r", "all", "--strict"]) else {
            panic!("get")
        };
        assert_eq!((get.r.as_str(), get.strict), ("all", true));
        let ApCommand::Put(put) = parse(&["put", "b", "k", "v", "--context", "AQ", "--w", "one"])
        else {
            panic!("put")
        };
        assert_eq!(
            (put.context.as_deref(), put.level.w.as_str()),
            (Some("AQ"), "one")
        );
        let ApCommand::Incr(incr) = parse(&["incr", "b", "k", "-3", "--request-id", "r"]) else {
            panic!("incr")
        };
        assert_eq!((incr.by, incr.request_id.as_deref()), (-3, Some("r")));
        let ApCommand::Incr(incr) = parse(&["incr", "b", "k"]) else {
            panic!("incr")
        };
        assert_eq!(incr.by, 1);
        let ApCommand::Hset(hset) = parse(&["hset", "b", "k", "f1", "v1", "f2", "v2"]) else {
            panic!("hset")
        };
        assert_eq!(hset.pairs, ["f1", "v1", "f2", "v2"]);
        assert!(
            Cli::try_parse_from(["ap", "sadd", "b", "k"]).is_err(),
            "members required"
        );
        assert!(
            Cli::try_parse_from(["ap", "hset", "b", "k", "f"]).is_err(),
            "a pair"
        );
    }

    #[test]
    fn the_summary_reads_as_a_sentence() {
        let answer: ReadReply = serde_json::from_value(serde_json::json!({
            "type": "value", "values": ["a", "b"], "context": "CTX", "rule": "siblings",
            "bucket": "b", "key": "k", "found": true, "stamp": null,
            "replicas": {"answered": 2, "asked": 3, "needed": 2, "level": "quorum", "fallbacks": 1},
        }))
        .expect("a read's answer");
        let line = summary(&answer);
        assert!(
            line.starts_with("context=CTX replicas 2/3 (quorum needs 2), 1 fallback\n2 siblings"),
            "{line}"
        );
        assert_eq!(bytes(Encoding::Base64, "/wA="), [0xff, 0]);
    }
}
