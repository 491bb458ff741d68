//! The AP bench's client side: a small RESP2 client (the Redis protocol) — commands as arrays
//! of bulk strings, replies parsed from a buffer with bounded sizes — one TCP connection per
//! client, optionally pipelined, so Isle's RESP endpoint and a redis-server are driven alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BenchOp, Driver, PREFILL_CONCURRENCY, Tally, client_rng, join_tallies, key};
use isle_env::{Random, SeededRandom};

/// Distinct members SADD picks from, so sets stay small.
const SET_MEMBERS: u64 = 100;
/// Largest bulk string accepted in a reply.
const MAX_BULK: usize = 64 << 20;
/// Most elements accepted in one reply array.
const MAX_ARRAY: usize = 1 << 20;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: usize = 32;
/// Longest simple line (`+`, `-`, `:`, a length) accepted.
const MAX_LINE: usize = 64 << 10;

/// An AP bench operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ApOp {
    /// SET key value.
    Set,
    /// GET key (keys written first).
    Get,
    /// INCR of a counter key (`bench/counter/...`).
    Incr,
    /// SADD of a random member to a set key (`bench/set/...`).
    Sadd,
}

impl BenchOp for ApOp {
    fn name(self) -> &'static str {
        match self {
            ApOp::Set => "set",
            ApOp::Get => "get",
            ApOp::Incr => "incr",
            ApOp::Sadd => "sadd",
        }
    }

    fn needs_prefill(self) -> bool {
        self == ApOp::Get
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`
    Simple(String),
    /// `-text`: the command failed.
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$n` then n bytes; `None` for `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*n` then n replies; `None` for `*-1` (nil).
    Array(Option<Vec<Reply>>),
}

/// Why a buffer does not hold a valid reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed or over a size bound: the connection cannot be trusted further.
    Invalid(String),
}

/// Encodes a command as a RESP array of bulk strings.
pub(super) fn command<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let args: Vec<&[u8]> = args.into_iter().collect();
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`, `Ok(None)` if
/// `buf` ends before the reply does.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ParseError> {
    parse_at(buf, 0, 0)
}

/// The line starting at `at` (without CRLF) and where the next begins.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let rest = &buf[at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > MAX_LINE => Err(ParseError::Invalid("line too long".into())),
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() > MAX_LINE + 1 => Err(ParseError::Invalid("line too long".into())),
        None => Ok(None),
    }
}

fn number(text: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            ParseError::Invalid(format!("bad number {:?}", String::from_utf8_lossy(text)))
        })
}

/// A length field: -1 (nil) or 0..=max.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, ParseError> {
    match number(text)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        n => Err(ParseError::Invalid(format!("length {n} out of bounds"))),
    }
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::Invalid("arrays nested too deep".into()));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1)? else {
        return Ok(None);
    };
    let utf8 = || String::from_utf8_lossy(text).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(utf8()), next))),
        b'-' => Ok(Some((Reply::Error(utf8()), next))),
        b':' => Ok(Some((Reply::Integer(number(text)?), next))),
        b'$' => {
            let Some(len) = length(text, MAX_BULK)? else {
                return Ok(Some((Reply::Bulk(None), next)));
            };
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::Invalid("bulk string not ended by CRLF".into()));
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let Some(len) = length(text, MAX_ARRAY)? else {
                return Ok(Some((Reply::Array(None), next)));
            };
            let mut items = Vec::with_capacity(len.min(1024));
            let mut at = next;
            for _ in 0..len {
                let Some((item, after)) = parse_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(ParseError::Invalid(format!(
            "unknown reply type {:?}",
            char::from(other)
        ))),
    }
}

/// One RESP connection.
struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet parsed, from `start`.
    buf: Vec<u8>,
    start: usize,
}

impl Connection {
    async fn open(addr: &str, setup: &[Vec<u8>]) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            stream,
            buf: Vec::with_capacity(16 << 10),
            start: 0,
        };
        for command in setup {
            connection.stream.write_all(command).await?;
            if let Reply::Error(why) = connection.reply().await? {
                bail!("{addr}: setting up the connection: {why}");
            }
        }
        Ok(connection)
    }

    /// Reads the next reply.
    async fn reply(&mut self) -> anyhow::Result<Reply> {
        loop {
            match parse(&self.buf[self.start..]) {
                Ok(Some((reply, used))) => {
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(ParseError::Invalid(why)) => bail!("bad reply: {why}"),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// What every command looks like.
#[derive(Clone, Debug)]
pub(super) struct Shape {
    /// Distinct keys.
    pub keys: u64,
    /// The value every SET writes.
    pub value: Vec<u8>,
    /// How long one batch of commands may take.
    pub timeout: Duration,
    /// Commands in flight per connection.
    pub pipeline: usize,
    /// Commands sent once on every new connection (e.g. `ISLE.CONSISTENCY`).
    pub setup: Vec<Vec<u8>>,
}

impl Shape {
    /// The command `op` sends, with its key and member drawn from `rng`.
    fn command(&self, op: ApOp, rng: &mut SeededRandom) -> Vec<u8> {
        let index = rng.below(self.keys);
        match op {
            ApOp::Set => command([b"SET".as_slice(), key(index).as_bytes(), &self.value]),
            ApOp::Get => command([b"GET".as_slice(), key(index).as_bytes()]),
            // Their own key names: a key holding a string refuses INCR and SADD.
            ApOp::Incr => command([b"INCR".as_slice(), counter_key(index).as_bytes()]),
            ApOp::Sadd => {
                let member = format!("m{}", rng.below(SET_MEMBERS));
                command([
                    b"SADD".as_slice(),
                    set_key(index).as_bytes(),
                    member.as_bytes(),
                ])
            }
        }
    }
}

fn counter_key(index: u64) -> String {
    format!("bench/counter/{index:08}")
}

fn set_key(index: u64) -> String {
    format!("bench/set/{index:08}")
}

/// One system's RESP endpoints.
pub(super) struct Resp {
    endpoints: Arc<Vec<String>>,
    shape: Arc<Shape>,
}

impl Resp {
    /// Client i will connect to endpoint i mod N.
    pub fn new(endpoints: Vec<String>, shape: Shape) -> anyhow::Result<Resp> {
        anyhow::ensure!(!endpoints.is_empty(), "no RESP endpoints given");
        Ok(Resp {
            endpoints: Arc::new(endpoints),
            shape: Arc::new(shape),
        })
    }

    /// Opens the connection of client `client`.
    async fn open(&self, client: usize) -> anyhow::Result<Connection> {
        let addr = &self.endpoints[client % self.endpoints.len()];
        let open = Connection::open(addr, &self.shape.setup);
        tokio::time::timeout(self.shape.timeout, open)
            .await
            .with_context(|| format!("connecting to {addr}: timed out"))?
    }
}

/// Sends `batch` (commands concatenated) and reads `count` replies, counting each in `tally`
/// with its latency from the send; `Err` if the connection is no longer usable.
async fn round(
    connection: &mut Connection,
    batch: &[u8],
    count: usize,
    timeout: Duration,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let exchange = async {
        connection.stream.write_all(batch).await?;
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            let reply = connection.reply().await?;
            replies.push((reply, started.elapsed()));
        }
        anyhow::Ok(replies)
    };
    let replies = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(replies)) => replies,
        Ok(Err(err)) => {
            for _ in 0..count {
                tally.error(|| format!("{err:#}"));
            }
            return Err(err);
        }
        Err(_) => {
            for _ in 0..count {
                tally.error(|| format!("timed out after {timeout:?}"));
            }
            bail!("timed out");
        }
    };
    for (reply, elapsed) in replies {
        match reply {
            Reply::Error(why) => tally.error(|| why),
            _ => tally.ok(elapsed),
        }
    }
    Ok(())
}

impl Driver for Resp {
    type Op = ApOp;

    async fn prefill(&self) -> anyhow::Result<()> {
        let mut connections = Vec::new();
        for worker in 0..PREFILL_CONCURRENCY.min(self.shape.keys as usize) {
            connections.push(self.open(worker).await?);
        }
        let shape = self.shape.clone();
        super::prefill_keys(
            connections,
            self.shape.keys,
            move |mut connection, index| {
                let shape = shape.clone();
                async move {
                    let set = command([b"SET".as_slice(), key(index).as_bytes(), &shape.value]);
                    let mut tally = Tally::default();
                    round(&mut connection, &set, 1, shape.timeout, &mut tally).await?;
                    if let Some(why) = tally.first_error {
                        bail!("a prefill SET {} failed: {why}", key(index));
                    }
                    Ok(connection)
                }
            },
        )
        .await
    }

    async fn phase(&self, op: ApOp, clients: usize, duration: Duration) -> anyhow::Result<Tally> {
        // Connect everyone before the clock starts: connection setup is not what is measured.
        let mut connections = Vec::with_capacity(clients);
        for client in 0..clients {
            connections.push(self.open(client).await?);
        }
        let until = Instant::now() + duration;
        let tasks = connections
            .into_iter()
            .enumerate()
            .map(|(client, connection)| {
                let shape = self.shape.clone();
                let endpoints = self.endpoints.clone();
                tokio::spawn(async move {
                    let mut connection = Some(connection);
                    let mut rng = client_rng(client as u64);
                    let mut tally = Tally::default();
                    let mut batch = Vec::new();
                    while Instant::now() < until {
                        let Some(open) = connection.as_mut() else {
                            // A broken connection is replaced; its failures are already counted.
                            let addr = &endpoints[client % endpoints.len()];
                            let reopen = Connection::open(addr, &shape.setup);
                            match tokio::time::timeout(shape.timeout, reopen).await {
                                Ok(Ok(fresh)) => connection = Some(fresh),
                                Ok(Err(err)) => {
                                    tally.error(|| format!("{err:#}"));
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                                Err(_) => {
                                    tally.error(|| format!("connecting to {addr}: timed out"))
                                }
                            }
                            continue;
                        };
                        batch.clear();
                        for _ in 0..shape.pipeline {
                            batch.extend(shape.command(op, &mut rng));
                        }
                        if round(open, &batch, shape.pipeline, shape.timeout, &mut tally)
                            .await
                            .is_err()
                        {
                            connection = None;
                        }
                    }
                    tally
                })
            })
            .collect();
        join_tallies(tasks).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Reply {
        let (reply, used) = parse(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len(), "consumes exactly the reply");
        reply
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command([b"SET".as_slice(), b"k", b"v1"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n"
        );
        assert_eq!(
            command([b"GET".as_slice(), b""]),
            b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(
            whole(b"-ERR wrong type\r\n"),
            Reply::Error("ERR wrong type".into())
        );
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(
            whole(b"$5\r\nhe\r\no\r\n"),
            Reply::Bulk(Some(b"he\r\no".to_vec()))
        );
        assert_eq!(whole(b"$0\r\n\r\n"), Reply::Bulk(Some(Vec::new())));
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(whole(b"*0\r\n"), Reply::Array(Some(Vec::new())));
    }

    #[test]
    fn parses_nested_arrays() {
        let reply = whole(b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n-ERR x\r\n*1\r\n*0\r\n");
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"a".to_vec())),
                    Reply::Error("ERR x".into()),
                ])),
                Reply::Array(Some(vec![Reply::Array(Some(Vec::new()))])),
            ]))
        );
    }

    #[test]
    fn a_truncated_buffer_asks_for_more() {
        let full = b"*2\r\n$3\r\nabc\r\n:7\r\n";
        for end in 0..full.len() {
            assert_eq!(parse(&full[..end]), Ok(None), "prefix of {end} bytes");
        }
        assert!(whole(full) != Reply::Array(None));
        // Two replies back to back: the first is parsed, the rest left.
        let (reply, used) = parse(b"+OK\r\n:1\r\n").expect("valid").expect("complete");
        assert_eq!((reply, used), (Reply::Simple("OK".into()), 5));
    }

    #[test]
    fn malformed_or_oversized_replies_are_refused() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":12a\r\n").is_err());
        assert!(parse(b"$-2\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err(), "bulk without CRLF");
        assert!(parse(format!("${}\r\n", MAX_BULK + 1).as_bytes()).is_err());
        assert!(parse(format!("*{}\r\n", MAX_ARRAY + 1).as_bytes()).is_err());
        assert!(parse(&b"*1\r\n".repeat(MAX_DEPTH + 2)).is_err(), "too deep");
        assert!(parse(&vec![b'+'; MAX_LINE + 10]).is_err(), "endless line");
    }

    #[test]
    fn commands_use_keys_in_range_and_own_namespaces() {
        let shape = Shape {
            keys: 10,
            value: b"vv".to_vec(),
            timeout: Duration::from_secs(1),
            pipeline: 1,
            setup: Vec::new(),
        };
        let mut rng = client_rng(3);
        for op in [ApOp::Set, ApOp::Get, ApOp::Incr, ApOp::Sadd] {
            for _ in 0..100 {
                let bytes = shape.command(op, &mut rng);
                let Reply::Array(Some(args)) = whole(&bytes) else {
                    panic!("a command is an array")
                };
                let Reply::Bulk(Some(key)) = &args[1] else {
                    panic!("a key")
                };
                let key = String::from_utf8_lossy(key).to_string();
                let index: u64 = key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("index");
                assert!(index < 10, "{key}");
                let prefix = match op {
                    ApOp::Set | ApOp::Get => "bench/0",
                    ApOp::Incr => "bench/counter/",
                    ApOp::Sadd => "bench/set/",
                };
                assert!(key.starts_with(prefix), "{key}");
            }
        }
    }
}
