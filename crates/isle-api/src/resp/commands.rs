//! The Redis commands Isle answers, mapped onto the AP keyspace's operations.
//!
//! Every key lives in the bucket the connection selected (`SELECT i` picks the i-th bucket the
//! node serves, 0 by default). Reads wait for R replicas and writes for W (quorum by default;
//! `ISLE.CONSISTENCY r w` changes them for the connection). The conflict semantics follow Redis
//! Enterprise's active-active databases (CRDB):
//!
//! - **Strings** (`GET`, `SET`, `MGET`, `MSET`, `DEL`/`UNLINK`, `EXISTS`, `TYPE`, `TTL`): a
//!   `SET` replaces what the coordinating replica holds. Concurrent `SET`s on two sides of a
//!   partition become siblings in a `siblings` bucket (`GET` returns the last of them) or the
//!   later stamp wins in an `lww` bucket. `SET` takes no options: keys never expire, and a
//!   conditional write (`NX`, `XX`, `GET`) cannot be atomic across replicas.
//! - **Counters** (`INCR`, `INCRBY`, `DECR`, `DECRBY`): PN-counters, so concurrent increments
//!   all count; `GET` reads the value. A key written by `SET` is not a counter (and vice versa):
//!   the first operation fixes a key's type, even across `DEL`.
//! - **Sets** (`SADD`, `SREM`, `SMEMBERS`, `SISMEMBER`, `SMISMEMBER`, `SCARD`): add-wins
//!   OR-sets.
//! - **Hashes** (`HSET`, `HMSET`, `HGET`, `HMGET`, `HDEL`, `HGETALL`, `HKEYS`, `HVALS`, `HLEN`,
//!   `HEXISTS`, `HINCRBY`): OR-maps whose fields are text (concurrent sets: the later stamp
//!   wins) or counters (`HINCRBY`: concurrent increments add up).
//! - **Connection and server**: `PING`, `ECHO`, `SELECT`, `QUIT`, `RESET`, `HELLO` (protocol 2
//!   only), `AUTH` (there are no passwords), `CLIENT`, `COMMAND`, `INFO`, `CONFIG GET`.
//!
//! Replies whose count depends on the previous state (`DEL`, `SADD`, `SREM`, `HSET`, `HDEL`)
//! read the key first (at R) and count against that read: a concurrent writer can make the
//! count stale, never the data. `SADD` of one member skips the read: it counts against the
//! coordinator's own copy, which the write itself reads. Multi-key commands (`MSET`, `DEL k1 k2`) are one operation per
//! key, not atomic. Errors: a too-small answer of replicas is `-NOQUORUM <why>` (a write may
//! still have been stored where it was acknowledged), a type mismatch `-WRONGTYPE ...`, anything
//! else `-ERR ...`; commands Isle knows but does not support say why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use isle_ap::{
    ApError, ApplyError, BucketInfo, FieldValue, Level, Op, ReadOptions, Value, WriteContext,
    WriteOptions, WriteReply,
};

use super::codec::{Command, Frame, parse_i64};
use crate::ap_backend::ApBackend;

/// The Redis version reported by `INFO` and `HELLO`: the command set Isle follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// State shared by every connection of one server.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
    connected: AtomicUsize,
    total_connections: AtomicU64,
    total_commands: AtomicU64,
    port: u16,
}

/// What `CLIENT LIST` shows of a connection.
#[derive(Debug, Clone, Default)]
struct ClientInfo {
    addr: String,
    name: String,
    db: usize,
    lib_name: String,
    lib_ver: String,
}

impl Shared {
    /// Shared state for a server listening on `port`.
    pub(crate) fn new(port: u16) -> Self {
        Shared {
            next_id: AtomicU64::new(1),
            port,
            ..Shared::default()
        }
    }

    fn clients(&self) -> MutexGuard<'_, BTreeMap<u64, ClientInfo>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection from `addr`; returns its session.
    pub(crate) fn connect(&self, addr: String) -> Session {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.total_connections.fetch_add(1, Ordering::Relaxed);
        self.clients().insert(
            id,
            ClientInfo {
                addr,
                ..ClientInfo::default()
            },
        );
        Session::new(id)
    }

    /// Forgets a closed connection.
    pub(crate) fn disconnect(&self, session: &Session) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
        self.clients().remove(&session.id);
    }

    fn update(&self, session: &Session, change: impl FnOnce(&mut ClientInfo)) {
        if let Some(info) = self.clients().get_mut(&session.id) {
            change(info);
        }
    }
}

/// One connection's state.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    id: u64,
    db: usize,
    name: Option<Vec<u8>>,
    read: ReadOptions,
    write: WriteOptions,
}

impl Session {
    fn new(id: u64) -> Self {
        Session {
            id,
            db: 0,
            name: None,
            read: ReadOptions::default(),
            write: WriteOptions::default(),
        }
    }
}

/// What the connection does after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Read the next command.
    Continue,
    /// Send the reply, then close (`QUIT`).
    Close,
}

/// A command's name, arity and keys, as `COMMAND` reports them.
struct Spec {
    name: &'static str,
    /// Redis's convention: `n` exactly n arguments (the name included), `-n` at least n.
    arity: i64,
    flags: &'static [&'static str],
    first_key: i64,
    last_key: i64,
    step: i64,
}

const R: &[&str] = &["readonly", "fast"];
const RS: &[&str] = &["readonly"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const WD: &[&str] = &["write"];
const C: &[&str] = &["fast", "stale", "loading"];
const CN: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth"];

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const KEY: (i64, i64, i64) = (1, 1, 1);
const KEYS: (i64, i64, i64) = (1, -1, 1);

/// Every command Isle answers.
const COMMANDS: &[Spec] = &[
    spec("get", 2, R, KEY),
    spec("set", -3, W, KEY),
    spec("mget", -2, R, KEYS),
    spec("mset", -3, W, (1, -1, 2)),
    spec("del", -2, WD, KEYS),
    spec("unlink", -2, WF, KEYS),
    spec("exists", -2, R, KEYS),
    spec("type", 2, R, KEY),
    spec("ttl", 2, R, KEY),
    spec("pttl", 2, R, KEY),
    spec("incr", 2, WF, KEY),
    spec("decr", 2, WF, KEY),
    spec("incrby", 3, WF, KEY),
    spec("decrby", 3, WF, KEY),
    spec("sadd", -3, WF, KEY),
    spec("srem", -3, WF, KEY),
    spec("smembers", 2, RS, KEY),
    spec("sismember", 3, R, KEY),
    spec("smismember", -3, R, KEY),
    spec("scard", 2, R, KEY),
    spec("hset", -4, WF, KEY),
    spec("hmset", -4, WF, KEY),
    spec("hget", 3, R, KEY),
    spec("hmget", -3, R, KEY),
    spec("hdel", -3, WF, KEY),
    spec("hgetall", 2, RS, KEY),
    spec("hkeys", 2, RS, KEY),
    spec("hvals", 2, RS, KEY),
    spec("hlen", 2, R, KEY),
    spec("hexists", 3, R, KEY),
    spec("hincrby", 4, WF, KEY),
    spec("ping", -1, C, NO_KEYS),
    spec("echo", 2, C, NO_KEYS),
    spec("select", 2, C, NO_KEYS),
    spec("quit", -1, CN, NO_KEYS),
    spec("reset", 1, CN, NO_KEYS),
    spec("hello", -1, CN, NO_KEYS),
    spec("auth", -2, CN, NO_KEYS),
    spec(
        "client",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
    ),
    spec("command", -1, &["loading", "stale"], NO_KEYS),
    spec("info", -1, &["loading", "stale"], NO_KEYS),
    spec(
        "config",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
    ),
    spec("flushall", -1, WD, NO_KEYS),
    spec("flushdb", -1, WD, NO_KEYS),
    spec("isle.consistency", -1, C, NO_KEYS),
];

/// Commands Isle knows and refuses, with the reason.
const UNSUPPORTED: &[(&[&str], &str)] = &[
    (
        &[
            "expire",
            "pexpire",
            "expireat",
            "pexpireat",
            "persist",
            "setex",
            "psetex",
            "getex",
            "expiretime",
            "pexpiretime",
        ],
        "keys in the AP keyspace do not expire",
    ),
    (
        &["keys", "scan", "randomkey", "dbsize"],
        "keys are spread over the ring and not enumerated",
    ),
    (
        &["multi", "exec", "discard", "watch", "unwatch"],
        "there are no transactions across the replicas of the AP keyspace; use the CP keyspace (etcd API) for transactions",
    ),
    (
        &[
            "setnx", "getset", "getdel", "msetnx", "append", "setrange", "rename", "renamenx",
            "copy", "move", "swapdb",
        ],
        "it would need an atomic read-modify-write across replicas; use the CP keyspace (etcd API) for conditional writes",
    ),
    (
        &[
            "subscribe",
            "psubscribe",
            "ssubscribe",
            "unsubscribe",
            "punsubscribe",
            "publish",
            "spublish",
            "pubsub",
        ],
        "there is no pub/sub; watch keys of the CP keyspace instead",
    ),
    (
        &[
            "eval",
            "evalsha",
            "eval_ro",
            "evalsha_ro",
            "script",
            "function",
            "fcall",
        ],
        "there is no scripting",
    ),
    (
        &[
            "lpush", "rpush", "lpop", "rpop", "lrange", "llen", "lindex", "lset", "linsert",
            "lrem", "ltrim", "zadd", "zrange", "zrem", "zscore", "zcard", "zincrby",
        ],
        "lists and sorted sets are not CRDTs of the AP keyspace (strings, counters, sets and hashes are)",
    ),
];

fn lookup(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|spec| spec.name == name)
}

fn arity_error(name: &str) -> Frame {
    Frame::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn syntax_error() -> Frame {
    Frame::error("ERR syntax error")
}

fn not_an_integer() -> Frame {
    Frame::error("ERR value is not an integer or out of range")
}

fn wrong_type() -> Frame {
    Frame::error("WRONGTYPE Operation against a key holding the wrong kind of value")
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Frame {
    Frame::error(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        String::from_utf8_lossy(sub),
        command.to_ascii_uppercase()
    ))
}

/// An AP refusal as Redis clients see it.
pub(crate) fn ap_error(err: ApError) -> Frame {
    match err {
        ApError::Unavailable { .. } => Frame::error(format!("NOQUORUM {err}")),
        ApError::Apply(ApplyError::WrongType { .. }) => Frame::error(err.to_string()),
        other => Frame::error(format!("ERR {other}")),
    }
}

fn integer(n: usize) -> Frame {
    Frame::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The keys a command names, if it may run concurrently with other commands of its
/// connection: it names keys (so it reads or writes data and changes no session state) and is
/// well-formed. `None`: run it alone, after every command before it.
pub(crate) fn concurrent_keys(args: &Command) -> Option<Vec<Vec<u8>>> {
    let spec = lookup(&text(args.first()?).to_ascii_lowercase())?;
    let count = i64::try_from(args.len()).ok()?;
    let arity_ok =
        (spec.arity > 0 && count == spec.arity) || (spec.arity < 0 && count >= -spec.arity);
    if spec.first_key <= 0 || spec.step <= 0 || !arity_ok {
        return None;
    }
    let last = if spec.last_key < 0 {
        count + spec.last_key
    } else {
        spec.last_key
    };
    let mut keys = Vec::new();
    let mut i = spec.first_key;
    while i <= last {
        keys.push(args.get(usize::try_from(i).ok()?)?.clone());
        i += spec.step;
    }
    Some(keys)
}

/// The reply to one command, and what the connection does next.
pub(crate) async fn execute<B: ApBackend>(
    backend: &B,
    shared: &Shared,
    session: &mut Session,
    args: Command,
) -> (Frame, After) {
    shared.total_commands.fetch_add(1, Ordering::Relaxed);
    let Some(first) = args.first() else {
        return (Frame::error("ERR empty command"), After::Continue);
    };
    let name = text(first).to_ascii_lowercase();
    let Some(spec) = lookup(&name) else {
        return (unknown(&name, &args), After::Continue);
    };
    let count = i64::try_from(args.len()).unwrap_or(i64::MAX);
    if (spec.arity > 0 && count != spec.arity) || (spec.arity < 0 && count < -spec.arity) {
        return (arity_error(&name), After::Continue);
    }
    let mut run = Run {
        backend,
        shared,
        session,
    };
    let reply = match run.command(&name, args).await {
        Ok(reply) | Err(reply) => reply,
    };
    let after = if name == "quit" {
        After::Close
    } else {
        After::Continue
    };
    (reply, after)
}

fn unknown(name: &str, args: &[Vec<u8>]) -> Frame {
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(names, _)| names.contains(&name)) {
        return Frame::error(format!("ERR Isle does not support '{name}': {why}"));
    }
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with: ",
        text(&args[0])
    );
    for arg in args.iter().skip(1).take(8) {
        let arg = text(arg);
        let arg: String = arg.chars().take(64).collect();
        message.push_str(&format!("'{arg}' "));
    }
    Frame::error(message)
}

/// One command being run: the backend, the server and the connection.
struct Run<'a, B> {
    backend: &'a B,
    shared: &'a Shared,
    session: &'a mut Session,
}

/// A reply, or an error reply.
type Reply = Result<Frame, Frame>;

impl<B: ApBackend> Run<'_, B> {
    async fn command(&mut self, name: &str, mut args: Command) -> Reply {
        match name {
            "get" => self.get(take(&mut args, 1)).await,
            "set" => self.set(args).await,
            "mget" => self.mget(args).await,
            "mset" => self.mset(name, args).await,
            "del" | "unlink" => self.del(args).await,
            "exists" => self.exists(args).await,
            "type" => self.kind(take(&mut args, 1)).await,
            "ttl" | "pttl" => {
                let exists = self.read(take(&mut args, 1)).await? != Value::Absent;
                Ok(Frame::Integer(if exists { -1 } else { -2 }))
            }
            "incr" => self.incr(take(&mut args, 1), 1).await,
            "decr" => self.incr(take(&mut args, 1), -1).await,
            "incrby" => {
                let by = parse_i64(&args[2]).ok_or_else(not_an_integer)?;
                self.incr(take(&mut args, 1), by).await
            }
            "decrby" => {
                let by = parse_i64(&args[2]).ok_or_else(not_an_integer)?;
                let by = by
                    .checked_neg()
                    .ok_or_else(|| Frame::error("ERR decrement would overflow"))?;
                self.incr(take(&mut args, 1), by).await
            }
            "sadd" => self.sadd(args).await,
            "srem" => self.srem(args).await,
            "smembers" => Ok(Frame::bulks(self.set_members(take(&mut args, 1)).await?)),
            "sismember" => {
                let members = self.set_members(take(&mut args, 1)).await?;
                Ok(Frame::Integer(i64::from(members.contains(&args[2]))))
            }
            "smismember" => {
                let members = self.set_members(take(&mut args, 1)).await?;
                Ok(Frame::Array(
                    args[2..]
                        .iter()
                        .map(|m| Frame::Integer(i64::from(members.contains(m))))
                        .collect(),
                ))
            }
            "scard" => Ok(integer(self.set_members(take(&mut args, 1)).await?.len())),
            "hset" | "hmset" => self.hset(name, args).await,
            "hget" => {
                let fields = self.hash(take(&mut args, 1)).await?;
                Ok(fields
                    .get(&args[2])
                    .map_or(Frame::Null, |v| Frame::Bulk(v.clone())))
            }
            "hmget" => {
                let fields = self.hash(take(&mut args, 1)).await?;
                Ok(Frame::Array(
                    args[2..]
                        .iter()
                        .map(|f| {
                            fields
                                .get(f)
                                .map_or(Frame::Null, |v| Frame::Bulk(v.clone()))
                        })
                        .collect(),
                ))
            }
            "hdel" => self.hdel(args).await,
            "hgetall" => {
                let fields = self.hash(take(&mut args, 1)).await?;
                Ok(Frame::bulks(fields.into_iter().flat_map(|(f, v)| [f, v])))
            }
            "hkeys" => Ok(Frame::bulks(
                self.hash(take(&mut args, 1)).await?.into_keys(),
            )),
            "hvals" => Ok(Frame::bulks(
                self.hash(take(&mut args, 1)).await?.into_values(),
            )),
            "hlen" => Ok(integer(self.hash(take(&mut args, 1)).await?.len())),
            "hexists" => {
                let fields = self.hash(take(&mut args, 1)).await?;
                Ok(Frame::Integer(i64::from(fields.contains_key(&args[2]))))
            }
            "hincrby" => self.hincrby(args).await,
            "ping" => match args.len() {
                1 => Ok(Frame::Simple("PONG".into())),
                2 => Ok(Frame::Bulk(take(&mut args, 1))),
                _ => Err(arity_error(name)),
            },
            "echo" => Ok(Frame::Bulk(take(&mut args, 1))),
            "select" => self.select(&args[1]),
            "quit" => Ok(Frame::ok()),
            "reset" => {
                let id = self.session.id;
                *self.session = Session::new(id);
                self.shared.update(self.session, |info| {
                    info.name.clear();
                    info.db = 0;
                });
                Ok(Frame::Simple("RESET".into()))
            }
            "hello" => self.hello(&args),
            "auth" => auth(&args),
            "client" => self.client(&args),
            "command" => command(&args),
            "info" => Ok(Frame::Bulk(self.info(&args).into_bytes())),
            "config" => self.config(&args),
            "flushall" | "flushdb" => Err(Frame::error(format!(
                "ERR Isle does not support '{name}': the AP keyspace cannot drop every key at once on every replica; delete keys with DEL"
            ))),
            "isle.consistency" => self.consistency(&args),
            _ => Err(unknown(name, &args)),
        }
    }

    fn bucket(&self) -> Result<String, Frame> {
        let buckets = self.backend.buckets();
        buckets
            .into_iter()
            .nth(self.session.db)
            .map(|b| b.name)
            .ok_or_else(|| {
                Frame::error(format!(
                    "ERR this node serves no bucket for db {}",
                    self.session.db
                ))
            })
    }

    async fn read(&self, key: Vec<u8>) -> Result<Value, Frame> {
        let bucket = self.bucket()?;
        let reply = self
            .backend
            .get(bucket, key, self.session.read.clone())
            .await
            .map_err(ap_error)?;
        Ok(reply.value)
    }

    async fn apply(&self, key: Vec<u8>, op: Op) -> Result<WriteReply, Frame> {
        let bucket = self.bucket()?;
        self.backend
            .apply(bucket, key, op, self.session.write.clone())
            .await
            .map_err(ap_error)
    }

    /// A string read: `Ok(None)` for an absent key, `Err` for another type.
    async fn string(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, Frame> {
        match self.read(key).await? {
            Value::Absent => Ok(None),
            Value::Values(mut values) => Ok(values.pop()),
            Value::Counter(n) => Ok(Some(n.to_string().into_bytes())),
            Value::Set(_) | Value::Map(_) => Err(wrong_type()),
        }
    }

    async fn get(&self, key: Vec<u8>) -> Reply {
        Ok(self.string(key).await?.map_or(Frame::Null, Frame::Bulk))
    }

    async fn set(&self, mut args: Command) -> Reply {
        if let Some(option) = args.get(3) {
            let option = text(option).to_ascii_uppercase();
            let why = match option.as_str() {
                "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" => {
                    "keys in the AP keyspace do not expire"
                }
                "NX" | "XX" | "GET" => {
                    "a conditional write cannot be atomic across the replicas of the AP keyspace; use the CP keyspace (etcd API) for create-if-absent and compare-and-set"
                }
                _ => return Err(syntax_error()),
            };
            return Err(Frame::error(format!(
                "ERR Isle does not support SET ... {option}: {why}"
            )));
        }
        let value = std::mem::take(&mut args[2]);
        let key = std::mem::take(&mut args[1]);
        self.apply(key, put(value)).await?;
        Ok(Frame::ok())
    }

    async fn mget(&self, args: Command) -> Reply {
        let mut values = Vec::with_capacity(args.len() - 1);
        for key in args.into_iter().skip(1) {
            values.push(match self.read(key).await? {
                Value::Values(mut values) => values.pop().map_or(Frame::Null, Frame::Bulk),
                Value::Counter(n) => Frame::bulk(n.to_string()),
                Value::Absent | Value::Set(_) | Value::Map(_) => Frame::Null,
            });
        }
        Ok(Frame::Array(values))
    }

    async fn mset(&self, name: &str, args: Command) -> Reply {
        if args.len().is_multiple_of(2) {
            return Err(arity_error(name));
        }
        let mut pairs = args.into_iter().skip(1);
        while let (Some(key), Some(value)) = (pairs.next(), pairs.next()) {
            self.apply(key, put(value)).await?;
        }
        Ok(Frame::ok())
    }

    async fn del(&self, args: Command) -> Reply {
        let mut deleted = 0;
        for key in args.into_iter().skip(1) {
            if self.read(key.clone()).await? != Value::Absent {
                let context = WriteContext::Local;
                self.apply(key, Op::Delete { context }).await?;
                deleted += 1;
            }
        }
        Ok(integer(deleted))
    }

    async fn exists(&self, args: Command) -> Reply {
        let mut found = 0;
        for key in args.into_iter().skip(1) {
            if self.read(key).await? != Value::Absent {
                found += 1;
            }
        }
        Ok(integer(found))
    }

    async fn kind(&self, key: Vec<u8>) -> Reply {
        let kind = match self.read(key).await? {
            Value::Absent => "none",
            Value::Values(_) | Value::Counter(_) => "string",
            Value::Set(_) => "set",
            Value::Map(_) => "hash",
        };
        Ok(Frame::Simple(kind.into()))
    }

    async fn incr(&self, key: Vec<u8>, by: i64) -> Reply {
        let op = Op::Incr {
            by,
            request_id: None,
        };
        match self.apply(key, op).await?.value {
            Value::Counter(n) => Ok(Frame::Integer(n)),
            other => Err(Frame::error(format!(
                "ERR the counter's value did not come back ({other:?})"
            ))),
        }
    }

    /// A set's members: empty for an absent key, `Err` for another type.
    async fn set_members(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, Frame> {
        match self.read(key).await? {
            Value::Absent => Ok(Vec::new()),
            Value::Set(members) => Ok(members),
            _ => Err(wrong_type()),
        }
    }

    async fn sadd(&self, args: Command) -> Reply {
        let mut args = args.into_iter().skip(1);
        let key = args.next().unwrap_or_default();
        let members: BTreeSet<Vec<u8>> = args.collect();
        if members.len() == 1 {
            // One member: the write says whether it was new on the coordinator's copy, so no
            // read is needed first (half the round trips of the common case).
            let members = members.into_iter().collect();
            let reply = self.apply(key, Op::SetAdd { members }).await?;
            return Ok(integer(usize::from(reply.applied)));
        }
        let before: BTreeSet<Vec<u8>> = self.set_members(key.clone()).await?.into_iter().collect();
        let added = members.difference(&before).count();
        let members = members.into_iter().collect();
        self.apply(key, Op::SetAdd { members }).await?;
        Ok(integer(added))
    }

    async fn srem(&self, args: Command) -> Reply {
        let mut args = args.into_iter().skip(1);
        let key = args.next().unwrap_or_default();
        let members: BTreeSet<Vec<u8>> = args.collect();
        let before: BTreeSet<Vec<u8>> = self.set_members(key.clone()).await?.into_iter().collect();
        let present: Vec<Vec<u8>> = members.intersection(&before).cloned().collect();
        let removed = present.len();
        if removed > 0 {
            self.apply(key, Op::SetRemove { members: present }).await?;
        }
        Ok(integer(removed))
    }

    /// A hash's fields as Redis shows them: empty for an absent key, `Err` for another type.
    async fn hash(&self, key: Vec<u8>) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Frame> {
        match self.read(key).await? {
            Value::Absent => Ok(BTreeMap::new()),
            Value::Map(fields) => Ok(fields
                .into_iter()
                .map(|(field, value)| (field, value.to_bytes()))
                .collect()),
            _ => Err(wrong_type()),
        }
    }

    async fn hset(&self, name: &str, args: Command) -> Reply {
        if !args.len().is_multiple_of(2) {
            return Err(arity_error(name));
        }
        let mut args = args.into_iter().skip(1);
        let key = args.next().unwrap_or_default();
        let mut set = Vec::new();
        while let (Some(field), Some(value)) = (args.next(), args.next()) {
            set.push((field, value));
        }
        let before = self.hash(key.clone()).await?;
        let fields: BTreeSet<&Vec<u8>> = set.iter().map(|(f, _)| f).collect();
        let added = fields.iter().filter(|f| !before.contains_key(**f)).count();
        let op = Op::MapUpdate {
            set,
            incr: Vec::new(),
            remove: Vec::new(),
            request_id: None,
        };
        self.apply(key, op).await?;
        Ok(if name == "hmset" {
            Frame::ok()
        } else {
            integer(added)
        })
    }

    async fn hdel(&self, args: Command) -> Reply {
        let mut args = args.into_iter().skip(1);
        let key = args.next().unwrap_or_default();
        let fields: BTreeSet<Vec<u8>> = args.collect();
        let before = self.hash(key.clone()).await?;
        let remove: Vec<Vec<u8>> = fields
            .into_iter()
            .filter(|f| before.contains_key(f))
            .collect();
        let removed = remove.len();
        if removed > 0 {
            let op = Op::MapUpdate {
                set: Vec::new(),
                incr: Vec::new(),
                remove,
                request_id: None,
            };
            self.apply(key, op).await?;
        }
        Ok(integer(removed))
    }

    async fn hincrby(&self, mut args: Command) -> Reply {
        let by = parse_i64(&args[3]).ok_or_else(not_an_integer)?;
        let field = std::mem::take(&mut args[2]);
        let key = std::mem::take(&mut args[1]);
        let op = Op::MapUpdate {
            set: Vec::new(),
            incr: vec![(field.clone(), by)],
            remove: Vec::new(),
            request_id: None,
        };
        let reply = self.apply(key, op).await?;
        let value = match reply.value {
            Value::Map(fields) => fields.into_iter().find(|(f, _)| *f == field),
            _ => None,
        };
        match value {
            Some((_, FieldValue::Int(n))) => Ok(Frame::Integer(n)),
            Some((_, FieldValue::Text(text))) => parse_i64(&text)
                .map(Frame::Integer)
                .ok_or_else(|| Frame::error("ERR hash value is not an integer")),
            None => Err(Frame::error("ERR the field's value did not come back")),
        }
    }

    fn select(&mut self, index: &[u8]) -> Reply {
        let index = parse_i64(index).ok_or_else(not_an_integer)?;
        let buckets = self.backend.buckets().len();
        match usize::try_from(index) {
            Ok(db) if db < buckets => {
                self.session.db = db;
                self.shared.update(self.session, |info| info.db = db);
                Ok(Frame::ok())
            }
            _ => Err(Frame::error("ERR DB index is out of range")),
        }
    }

    fn set_name(&mut self, name: &[u8]) -> Result<(), Frame> {
        if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
            return Err(Frame::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        self.session.name = (!name.is_empty()).then(|| name.to_vec());
        self.shared
            .update(self.session, |info| info.name = text(name));
        Ok(())
    }

    fn hello(&mut self, args: &[Vec<u8>]) -> Reply {
        if let Some(version) = args.get(1) {
            let version = parse_i64(version).ok_or_else(|| {
                Frame::error("ERR Protocol version is not an integer or out of range")
            })?;
            if version != 2 {
                return Err(Frame::error(
                    "NOPROTO sorry, this protocol version is not supported (Isle speaks RESP2)",
                ));
            }
        }
        let mut i = 2;
        let mut name = None;
        while i < args.len() {
            let option = text(&args[i]).to_ascii_uppercase();
            match (option.as_str(), args.len() - i) {
                ("AUTH", 3..) => {
                    auth(&args[i..i + 3])?;
                    i += 3;
                }
                ("SETNAME", 2..) => {
                    name = Some(args[i + 1].clone());
                    i += 2;
                }
                _ => {
                    return Err(Frame::error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        text(&args[i])
                    )));
                }
            }
        }
        if let Some(name) = name {
            self.set_name(&name)?;
        }
        let id = i64::try_from(self.session.id).unwrap_or(i64::MAX);
        Ok(Frame::Array(vec![
            Frame::bulk("server"),
            Frame::bulk("redis"),
            Frame::bulk("version"),
            Frame::bulk(REDIS_VERSION),
            Frame::bulk("proto"),
            Frame::Integer(2),
            Frame::bulk("id"),
            Frame::Integer(id),
            Frame::bulk("mode"),
            Frame::bulk("standalone"),
            Frame::bulk("role"),
            Frame::bulk("master"),
            Frame::bulk("modules"),
            Frame::Array(Vec::new()),
        ]))
    }

    fn client(&mut self, args: &[Vec<u8>]) -> Reply {
        let sub = text(&args[1]).to_ascii_lowercase();
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(Frame::error(format!(
                    "ERR wrong number of arguments for 'client|{sub}' command"
                )))
            }
        };
        match sub.as_str() {
            "id" => {
                arity(2)?;
                Ok(Frame::Integer(
                    i64::try_from(self.session.id).unwrap_or(i64::MAX),
                ))
            }
            "getname" => {
                arity(2)?;
                Ok(self.session.name.clone().map_or(Frame::Null, Frame::Bulk))
            }
            "setname" => {
                arity(3)?;
                self.set_name(&args[2])?;
                Ok(Frame::ok())
            }
            "setinfo" => {
                arity(4)?;
                let value = text(&args[3]);
                match text(&args[2]).to_ascii_lowercase().as_str() {
                    "lib-name" => self.shared.update(self.session, |i| i.lib_name = value),
                    "lib-ver" => self.shared.update(self.session, |i| i.lib_ver = value),
                    other => {
                        return Err(Frame::error(format!("ERR Unrecognized option '{other}'")));
                    }
                }
                Ok(Frame::ok())
            }
            "list" | "info" => {
                if sub == "info" {
                    arity(2)?;
                }
                let ids: Option<BTreeSet<u64>> = match args.get(2) {
                    None => None,
                    Some(filter) if text(filter).eq_ignore_ascii_case("id") && args.len() > 3 => {
                        let ids: Option<BTreeSet<u64>> =
                            args[3..].iter().map(|id| text(id).parse().ok()).collect();
                        Some(ids.ok_or_else(|| Frame::error("ERR Invalid client ID"))?)
                    }
                    Some(_) => {
                        return Err(Frame::error(
                            "ERR Isle's CLIENT LIST takes no filter but ID id [id ...]",
                        ));
                    }
                };
                let clients = self.shared.clients();
                let mut list = String::new();
                for (id, info) in clients.iter() {
                    let shown = if sub == "info" {
                        *id == self.session.id
                    } else {
                        ids.as_ref().is_none_or(|ids| ids.contains(id))
                    };
                    if shown {
                        list.push_str(&format!(
                            "id={id} addr={} name={} db={} flags=N user=default lib-name={} lib-ver={}\n",
                            info.addr, info.name, info.db, info.lib_name, info.lib_ver
                        ));
                    }
                }
                Ok(Frame::Bulk(list.into_bytes()))
            }
            "no-evict" | "no-touch" => {
                arity(3)?;
                match text(&args[2]).to_ascii_lowercase().as_str() {
                    // Isle neither evicts keys nor tracks their access time: both hold already.
                    "on" | "off" => Ok(Frame::ok()),
                    _ => Err(syntax_error()),
                }
            }
            "help" => Ok(Frame::Array(
                [
                    "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
                    "ID",
                    "GETNAME",
                    "SETNAME <name>",
                    "SETINFO <LIB-NAME|LIB-VER> <value>",
                    "LIST [ID <id> ...]",
                    "INFO",
                    "NO-EVICT <ON|OFF>",
                    "NO-TOUCH <ON|OFF>",
                    "HELP",
                ]
                .into_iter()
                .map(|line| Frame::Simple(line.into()))
                .collect(),
            )),
            _ => Err(unknown_subcommand(&args[1], "client")),
        }
    }

    fn config(&self, args: &[Vec<u8>]) -> Reply {
        let sub = text(&args[1]).to_ascii_lowercase();
        match sub.as_str() {
            "get" if args.len() >= 3 => {
                let buckets = self.backend.buckets().len().to_string();
                let table: [(&str, &str); 6] = [
                    ("save", ""),
                    ("appendonly", "no"),
                    ("databases", &buckets),
                    ("maxmemory", "0"),
                    ("maxmemory-policy", "noeviction"),
                    ("timeout", "0"),
                ];
                let mut reply = Vec::new();
                for (name, value) in table {
                    if args[2..]
                        .iter()
                        .any(|p| glob(&text(p).to_ascii_lowercase(), name))
                    {
                        reply.push(Frame::bulk(name));
                        reply.push(Frame::bulk(value));
                    }
                }
                Ok(Frame::Array(reply))
            }
            "get" => Err(Frame::error(
                "ERR wrong number of arguments for 'config|get' command",
            )),
            "set" | "resetstat" | "rewrite" => Err(Frame::error(format!(
                "ERR Isle does not support CONFIG {}: configure the node with its flags or TOML file",
                sub.to_ascii_uppercase()
            ))),
            "help" => Ok(Frame::Array(vec![
                Frame::Simple("CONFIG <subcommand> [<arg> ...]. Subcommands are:".into()),
                Frame::Simple("GET <pattern>".into()),
                Frame::Simple("HELP".into()),
            ])),
            _ => Err(unknown_subcommand(&args[1], "config")),
        }
    }

    fn consistency(&mut self, args: &[Vec<u8>]) -> Reply {
        match args.len() {
            1 => Ok(Frame::bulks([
                self.session.read.r.to_string(),
                self.session.write.w.to_string(),
            ])),
            3 => {
                let level = |arg: &[u8]| {
                    text(arg)
                        .parse::<Level>()
                        .map_err(|e| Frame::error(format!("ERR {e}")))
                };
                let (r, w) = (level(&args[1])?, level(&args[2])?);
                self.session.read.r = r;
                self.session.write.w = w;
                Ok(Frame::ok())
            }
            _ => Err(arity_error("isle.consistency")),
        }
    }

    fn info(&self, args: &[Vec<u8>]) -> String {
        let wanted: Vec<String> = args[1..]
            .iter()
            .map(|a| text(a).to_ascii_lowercase())
            .collect();
        let all = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
        let show = |section: &str| all || wanted.iter().any(|w| w == section);
        let buckets = self.backend.buckets();
        let mut out = String::new();
        let mut section = |name: &str, lines: Vec<String>| {
            if show(&name.to_ascii_lowercase()) {
                if !out.is_empty() {
                    out.push_str("\r\n");
                }
                out.push_str(&format!("# {name}\r\n"));
                for line in lines {
                    out.push_str(&line);
                    out.push_str("\r\n");
                }
            }
        };
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        section(
            "Server",
            vec![
                format!("redis_version:{REDIS_VERSION}"),
                "redis_mode:standalone".into(),
                format!("server_name:isle"),
                format!("isle_version:{}", env!("CARGO_PKG_VERSION")),
                format!("isle_node_id:{}", self.backend.node_id()),
                format!("os:{} {}", std::env::consts::OS, std::env::consts::ARCH),
                format!("arch_bits:{}", usize::BITS),
                format!("process_id:{}", std::process::id()),
                format!("tcp_port:{}", self.shared.port),
            ],
        );
        section(
            "Clients",
            vec![format!(
                "connected_clients:{}",
                self.shared.connected.load(Ordering::Relaxed)
            )],
        );
        section(
            "Persistence",
            vec!["loading:0".into(), "aof_enabled:0".into()],
        );
        section(
            "Stats",
            vec![
                format!(
                    "total_connections_received:{}",
                    count(&self.shared.total_connections)
                ),
                format!(
                    "total_commands_processed:{}",
                    count(&self.shared.total_commands)
                ),
            ],
        );
        section(
            "Replication",
            vec!["role:master".into(), "connected_slaves:0".into()],
        );
        // Key counts are not known without listing every replica's keys: the section is empty,
        // as Redis's is for empty databases; `# Isle` names the bucket behind each db.
        section("Keyspace", Vec::new());
        section(
            "Isle",
            buckets
                .iter()
                .enumerate()
                .map(|(i, BucketInfo { name, rule, n })| {
                    format!("db{i}:bucket={name},rule={rule},n={n}")
                })
                .chain([
                    format!("read_level:{}", self.session.read.r),
                    format!("write_level:{}", self.session.write.w),
                ])
                .collect(),
        );
        out
    }
}

fn take(args: &mut Command, i: usize) -> Vec<u8> {
    std::mem::take(&mut args[i])
}

fn put(value: Vec<u8>) -> Op {
    Op::Put {
        value,
        context: WriteContext::Local,
    }
}

fn auth(args: &[Vec<u8>]) -> Reply {
    match args.len() {
        2 => Err(Frame::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        )),
        3 if args[1] == b"default" => Ok(Frame::ok()),
        3 => Err(Frame::error(
            "WRONGPASS invalid username-password pair or user is disabled.",
        )),
        _ => Err(syntax_error()),
    }
}

/// `COMMAND`'s description of one command, in Redis 7's ten-element shape.
fn describe(spec: &Spec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity),
        Frame::Array(
            spec.flags
                .iter()
                .map(|f| Frame::Simple((*f).into()))
                .collect(),
        ),
        Frame::Integer(spec.first_key),
        Frame::Integer(spec.last_key),
        Frame::Integer(spec.step),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

fn command(args: &[Vec<u8>]) -> Reply {
    let Some(sub) = args.get(1) else {
        return Ok(Frame::Array(COMMANDS.iter().map(describe).collect()));
    };
    match text(sub).to_ascii_lowercase().as_str() {
        "count" => Ok(integer(COMMANDS.len())),
        "list" => Ok(Frame::bulks(COMMANDS.iter().map(|s| s.name))),
        "info" => Ok(Frame::Array(
            args[2..]
                .iter()
                .map(|name| {
                    lookup(&text(name).to_ascii_lowercase()).map_or(Frame::NullArray, describe)
                })
                .collect(),
        )),
        // No documentation is served: clients (redis-cli's hints) do without it.
        "docs" => Ok(Frame::Array(Vec::new())),
        "help" => Ok(Frame::Array(
            [
                "COMMAND <subcommand> [<arg> ...]. Subcommands are:",
                "(no subcommand)",
                "COUNT",
                "LIST",
                "INFO [<command-name> ...]",
                "DOCS [<command-name> ...]",
                "HELP",
            ]
            .into_iter()
            .map(|line| Frame::Simple(line.into()))
            .collect(),
        )),
        _ => Err(unknown_subcommand(sub, "command")),
    }
}

/// Redis-style glob matching of `name` against `pattern` (`*`, `?`, literal characters).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // matches[i][j]: pattern[..i] matches name[..j]
    let mut matches = vec![vec![false; n.len() + 1]; p.len() + 1];
    matches[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=n.len() {
            matches[i][j] = match p[i - 1] {
                '*' => matches[i - 1][j] || (j > 0 && matches[i][j - 1]),
                '?' => j > 0 && matches[i - 1][j - 1],
                c => j > 0 && matches[i - 1][j - 1] && n[j - 1] == c,
            };
        }
    }
    matches[p.len()][n.len()]
}
