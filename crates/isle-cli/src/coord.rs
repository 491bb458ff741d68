//! `isle lease`, `isle lock`, `isle txn`: leases, fenced locks and transactions of the CP
//! keyspace from the command line.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use isle_api::wire::cp::{
    CompactBody, FenceQuery, LeaseGrantBody, LeaseGrantReply, LeaseIdBody, LeaseKeepAliveReply,
    LeasesReply, LockBody, LockReply, Membership, MembershipChange, TxnBody, TxnReply, UnlockBody,
};
use serde::de::IgnoredAny;

use isle_lab::admin as client;

/// `isle lease ...`
#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease; keys attached to it vanish when it expires or is revoked.
    Grant {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
        /// Time to live in seconds.
        ttl_secs: i64,
    },
    /// Extend a lease by its TTL.
    KeepAlive {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
        /// Lease id.
        id: i64,
    },
    /// Revoke a lease and delete its keys.
    Revoke {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
        /// Lease id.
        id: i64,
    },
    /// List leases (remaining TTL is known to the leader).
    List {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
    },
}

/// Runs `isle lease ...`.
pub async fn lease(command: LeaseCommand) -> anyhow::Result<()> {
    let client = client::http()?;
    match command {
        LeaseCommand::Grant { http, ttl_secs } => {
            let body = LeaseGrantBody { id: 0, ttl_secs };
            let answer: LeaseGrantReply =
                client::post(&client, &http, "/v1/cp/lease/grant", &body).await?;
            println!("lease {} granted with TTL {}s", answer.id, answer.ttl_secs);
        }
        LeaseCommand::KeepAlive { http, id } => {
            let body = LeaseIdBody { id };
            let answer: LeaseKeepAliveReply =
                client::post(&client, &http, "/v1/cp/lease/keepalive", &body).await?;
            println!("lease {id} kept alive, TTL {}s", answer.ttl_secs);
        }
        LeaseCommand::Revoke { http, id } => {
            let body = LeaseIdBody { id };
            client::post::<_, IgnoredAny>(&client, &http, "/v1/cp/lease/revoke", &body).await?;
            println!("lease {id} revoked");
        }
        LeaseCommand::List { http } => {
            let answer: LeasesReply = client::get(&client, &http, "/v1/cp/leases").await?;
            println!("{}", serde_json::to_string_pretty(&answer.leases)?);
        }
    }
    Ok(())
}

/// Flags of `isle lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Lock name.
    name: String,
    /// TTL of the lease the lock is held under, seconds.
    #[arg(long, default_value_t = 10)]
    ttl_secs: i64,
    /// Give up waiting after this many milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

/// Acquires a lock, prints its fencing token, holds it (keeping the lease alive) until Ctrl-C,
/// then releases it.
pub async fn lock(args: LockArgs) -> anyhow::Result<()> {
    let client = client::http()?;
    let grant = LeaseGrantBody {
        id: 0,
        ttl_secs: args.ttl_secs,
    };
    let lease: LeaseGrantReply =
        client::post(&client, &args.http, "/v1/cp/lease/grant", &grant).await?;
    let lease_id = lease.id;
    let body = LockBody {
        lease: lease_id,
        name: args.name.clone(),
        timeout_ms: args.timeout_ms,
    };
    let waiting = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms + 5_000))
        .build()?;
    let held: LockReply = client::post(&waiting, &args.http, "/v1/cp/lock", &body).await?;
    // The key as JSON (quoted), as this line has always shown it.
    let key = serde_json::to_string(&held.key)?;
    println!(
        "locked {} key={key} token={} lease={lease_id}\n(present --fence-lock {} --fence-token {} \
         with protected writes; Ctrl-C releases)",
        args.name, held.token, args.name, held.token
    );
    let period = Duration::from_secs(u64::try_from(args.ttl_secs.max(3) / 3).unwrap_or(1));
    let keep_alive = LeaseIdBody { id: lease_id };
    loop {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(period) => {
                let path = "/v1/cp/lease/keepalive";
                if let Err(err) = client::post::<_, IgnoredAny>(&client, &args.http, path, &keep_alive).await {
                    eprintln!("keep-alive failed: {err:#}; the lock may be lost");
                }
            }
        }
    }
    let unlock = UnlockBody { key: held.key };
    client::post::<_, IgnoredAny>(&client, &args.http, "/v1/cp/unlock", &unlock).await?;
    client::post::<_, IgnoredAny>(&client, &args.http, "/v1/cp/lease/revoke", &keep_alive).await?;
    println!("released {}", args.name);
    Ok(())
}

/// Flags of `isle txn`.
#[derive(Args, Debug)]
pub struct TxnArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// The transaction as JSON (see `/v1/cp/txn`); `-` reads it from standard input.
    json: String,
}

/// Runs one transaction and prints the answer.
pub async fn txn(args: TxnArgs) -> anyhow::Result<()> {
    let text = if args.json == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the transaction from stdin")?
    } else {
        args.json
    };
    let body: TxnBody = serde_json::from_str(&text)
        .context("the transaction is not valid JSON or not a transaction (see /v1/cp/txn)")?;
    let answer: TxnReply = client::post(&client::http()?, &args.http, "/v1/cp/txn", &body).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// `isle member ...`
#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Voters and learners of the CP Raft group.
    List {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
    },
    /// Add a running node (started with --peers pointing here) as a learner; with --promote,
    /// make it a voter once it has caught up.
    Add {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
        /// The node's id.
        id: u64,
        /// Also promote it to voter.
        #[arg(long)]
        promote: bool,
    },
    /// Promote a learner to voter.
    Promote {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
        /// The node's id.
        id: u64,
    },
    /// Remove a voter from the group.
    Remove {
        /// HTTP address of any node.
        #[arg(long, default_value = "127.0.0.1:8401")]
        http: String,
        /// The node's id.
        id: u64,
    },
}

/// Runs `isle member ...`.
pub async fn member(command: MemberCommand) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let change = |http: &str, body: MembershipChange| {
        let client = client.clone();
        let http = http.to_string();
        async move { client::post(&client, &http, "/v1/cp/members", &body).await }
    };
    let answer: Membership = match command {
        MemberCommand::List { http } => client::get(&client, &http, "/v1/cp/members").await?,
        MemberCommand::Add { http, id, promote } => {
            let added = change(&http, MembershipChange::AddLearner(id)).await?;
            if promote {
                change(&http, MembershipChange::Promote(id)).await?
            } else {
                added
            }
        }
        MemberCommand::Promote { http, id } => change(&http, MembershipChange::Promote(id)).await?,
        MemberCommand::Remove { http, id } => change(&http, MembershipChange::Remove(id)).await?,
    };
    // As JSON lists, as this line has always shown them.
    println!(
        "voters: {}  learners: {}",
        serde_json::to_string(&answer.voters)?,
        serde_json::to_string(&answer.learners)?
    );
    Ok(())
}

/// Flags of `isle recover`.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// The stopped survivor's data dir (the one with the highest last log index).
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Confirm that the other voters are permanently lost and their data may be discarded.
    #[arg(long)]
    yes_the_others_are_gone: bool,
}

/// `isle recover`: makes a stopped survivor the sole voter of the CP group (etcd's
/// `--force-new-cluster`), after a permanent loss of quorum.
pub async fn recover(args: RecoverArgs) -> anyhow::Result<()> {
    use isle_env::MetaStore;
    let store = isle_storage::RedbStore::open(&args.data_dir)
        .with_context(|| format!("opening {} (is the node stopped?)", args.data_dir.display()))?;
    let identity = store
        .load_identity()?
        .context("this data dir was never initialised")?;
    let me = store
        .load_members()?
        .into_iter()
        .find(|m| m.id == identity.node_id)
        .context("this node's own member record is missing")?;
    println!(
        "Recovering the CP group on node {} ({}).\n\
         This node becomes the ONLY voter. What may be lost:\n\
         - writes that never reached this node's log (pick the survivor with the highest last log index);\n\
         - nothing it holds: entries it appended but had not committed become committed.\n\
         Afterwards: start this node, wipe the other survivors' data dirs, and re-add them with\n\
         `isle member add ID --promote`.",
        me.id, me.peer_addr
    );
    if !args.yes_the_others_are_gone {
        anyhow::bail!("nothing changed: re-run with --yes-the-others-are-gone to proceed");
    }
    let report = isle_node::cp::force_new_cluster(&store, me.id, me.peer_addr)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Flags of `isle compact`.
#[derive(Args, Debug)]
pub struct CompactArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Drop history below this revision (reads and watches before it are refused).
    revision: i64,
}

/// Runs `isle compact REV`.
pub async fn compact(args: CompactArgs) -> anyhow::Result<()> {
    let body = CompactBody {
        revision: args.revision,
    };
    client::post::<_, IgnoredAny>(&client::http()?, &args.http, "/v1/cp/compact", &body).await?;
    println!("compacted history below revision {}", args.revision);
    Ok(())
}

/// Flags of `isle fence-check`.
#[derive(Args, Debug)]
pub struct FenceCheckArgs {
    /// HTTP address of any node.
    #[arg(long, default_value = "127.0.0.1:8401")]
    http: String,
    /// Lock (resource) name.
    lock: String,
    /// The token presented to the external resource.
    token: i64,
}

/// Runs `isle fence-check LOCK TOKEN`: exits 0 if TOKEN is the newest granted for LOCK.
pub async fn fence_check(args: FenceCheckArgs) -> anyhow::Result<()> {
    let query = FenceQuery {
        lock: args.lock.clone(),
        token: args.token,
    };
    client::get_with::<_, IgnoredAny>(&client::http()?, &args.http, "/v1/cp/fence", &query).await?;
    println!(
        "token {} is the newest for {}: accept",
        args.token, args.lock
    );
    Ok(())
}
