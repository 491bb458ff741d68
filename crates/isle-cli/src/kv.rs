//! `isle put`, `isle get`, `isle del`: the CP keyspace from the command line.

use clap::Args;
use serde_json::{Value, json};

use isle_lab::admin as client;

/// Fencing flags shared by writes.
#[derive(Args, Debug)]
pub struct FenceArgs {
    /// Lock whose fencing token this write presents.
    #[arg(long, requires = "fence_token")]
    fence_lock: Option<String>,
    /// The fencing token granted with that lock.
    #[arg(long, requires = "fence_lock")]
    fence_token: Option<i64>,
    /// Idempotency key: a retry with the same id is applied once.
    #[arg(long)]
    request_id: Option<String>,
}

impl FenceArgs {
    fn add_to(&self, body: &mut Value) {
        if let (Some(lock), Some(token)) = (&self.fence_lock, self.fence_token) {
            body["fence"] = json!({"lock": lock, "token": token});
        }
        if let Some(id) = &self.request_id {
            body["request_id"] = json!(id);
        }
    }
}

/// Flags of `isle put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Key.
    key: String,
    /// Value.
    value: String,
    #[command(flatten)]
    fence: FenceArgs,
}

/// Flags of `isle get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Key (or prefix with --prefix).
    key: String,
    /// Every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Serve from this node's replica without asking the leader (may be stale; says how).
    #[arg(long)]
    stale: bool,
    /// Read at a past revision.
    #[arg(long, default_value_t = 0)]
    revision: i64,
    /// Print the JSON answer.
    #[arg(long)]
    json: bool,
}

/// Flags of `isle del`.
#[derive(Args, Debug)]
pub struct DelArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Key (or prefix with --prefix).
    key: String,
    /// Every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    #[command(flatten)]
    fence: FenceArgs,
}

/// `isle put KEY VALUE`.
pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let mut body = json!({"key": args.key, "value": args.value});
    args.fence.add_to(&mut body);
    let answer = client::post(&client::http()?, &args.http, "/v1/cp/put", &body).await?;
    println!("OK revision {}", answer["revision"]);
    Ok(())
}

/// `isle get KEY`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let consistency = if args.stale { "stale" } else { "linearizable" };
    let key: String = url_encode(&args.key);
    let path = format!(
        "/v1/cp/get?key={key}&prefix={}&revision={}&consistency={consistency}",
        args.prefix, args.revision
    );
    let answer = client::get(&client::http()?, &args.http, &path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for kv in answer["kvs"].as_array().into_iter().flatten() {
        println!(
            "{} = {}",
            kv["key"].as_str().unwrap_or(""),
            kv["value"].as_str().unwrap_or("")
        );
    }
    eprintln!(
        "({} key(s) at revision {}, {} read served by node {})",
        answer["count"], answer["revision"], consistency, answer["served_by"]
    );
    Ok(())
}

/// `isle del KEY`.
pub async fn del(args: DelArgs) -> anyhow::Result<()> {
    let mut body = json!({"key": args.key, "prefix": args.prefix});
    args.fence.add_to(&mut body);
    let answer = client::post(&client::http()?, &args.http, "/v1/cp/delete", &body).await?;
    println!(
        "deleted {} at revision {}",
        answer["deleted"], answer["revision"]
    );
    Ok(())
}

/// Percent-encodes a query value (keys may hold `/`, `&`, spaces).
pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Flags of `isle watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Key (or prefix with --prefix).
    key: String,
    /// Every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Start at this revision (replays history from it); default: changes from now on.
    #[arg(long, default_value_t = 0)]
    rev: i64,
}

/// `isle watch KEY`: prints each change as it is applied, until Ctrl-C.
pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let url = format!(
        "http://{}/v1/cp/watch?key={}&prefix={}&start_revision={}",
        args.http,
        url_encode(&args.key),
        args.prefix,
        args.rev
    );
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .build()?;
    let mut response = client.get(&url).send().await?.error_for_status()?;
    let mut buffer = String::new();
    while let Some(chunk) = response.chunk().await? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let data: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                match data["type"].as_str() {
                    Some("put") => println!(
                        "PUT {} = {} (revision {})",
                        data["key"].as_str().unwrap_or(""),
                        data["value"].as_str().unwrap_or(""),
                        data["revision"]
                    ),
                    Some("delete") => println!(
                        "DELETE {} (revision {})",
                        data["key"].as_str().unwrap_or(""),
                        data["revision"]
                    ),
                    _ => println!("{line}"),
                }
            }
        }
    }
    Ok(())
}
