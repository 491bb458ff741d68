//! `isle put`, `isle get`, `isle del`: the CP keyspace from the command line.

use clap::Args;
use isle_api::wire::cp::{
    Consistency, DeleteBody, DeleteReply, Fence, GetQuery, GetReply, PutBody, PutReply, WatchEvent,
    WatchEventType,
};

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
    /// The fence the flags give, if any.
    fn fence(&self) -> Option<Fence> {
        match (&self.fence_lock, self.fence_token) {
            (Some(lock), Some(token)) => Some(Fence {
                lock: lock.clone(),
                token,
            }),
            _ => None,
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
    let body = PutBody {
        fence: args.fence.fence(),
        key: args.key,
        request_id: args.fence.request_id,
        value: args.value,
        ..PutBody::default()
    };
    let answer: PutReply = client::post(&client::http()?, &args.http, "/v1/cp/put", &body).await?;
    println!("OK revision {}", answer.revision);
    Ok(())
}

/// `isle get KEY`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let (consistency, said) = if args.stale {
        (Consistency::Stale, "stale")
    } else {
        (Consistency::Linearizable, "linearizable")
    };
    let query = GetQuery {
        consistency,
        key: args.key,
        prefix: args.prefix,
        revision: args.revision,
        ..GetQuery::default()
    };
    let answer: GetReply =
        client::get_with(&client::http()?, &args.http, "/v1/cp/get", &query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for kv in &answer.kvs {
        println!("{} = {}", kv.key, kv.value);
    }
    eprintln!(
        "({} key(s) at revision {}, {said} read served by node {})",
        answer.count, answer.revision, answer.served_by
    );
    Ok(())
}

/// `isle del KEY`.
pub async fn del(args: DelArgs) -> anyhow::Result<()> {
    let body = DeleteBody {
        fence: args.fence.fence(),
        key: args.key,
        prefix: args.prefix,
        request_id: args.fence.request_id,
        ..DeleteBody::default()
    };
    let answer: DeleteReply =
        client::post(&client::http()?, &args.http, "/v1/cp/delete", &body).await?;
    println!("deleted {} at revision {}", answer.deleted, answer.revision);
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
                match serde_json::from_str::<WatchEvent>(line) {
                    Ok(event) if event.kind == WatchEventType::Put => println!(
                        "PUT {} = {} (revision {})",
                        event.key, event.value, event.revision
                    ),
                    Ok(event) => println!("DELETE {} (revision {})", event.key, event.revision),
                    // An `error` event, or one this client does not know.
                    Err(_) => println!("{line}"),
                }
            }
        }
    }
    Ok(())
}
