//! Tests of the RESP endpoint: every command against the in-memory backend, bytes in and bytes
//! out through the codec, and the TCP server (pipelining, QUIT, protocol errors, shutdown).

use std::sync::Arc;
use std::time::Duration;

use isle_ap::{ApError, BucketInfo, Op, ReadOptions, ReadReply, Replicas, Rule, Value};
use isle_ap::{WriteOptions, WriteReply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::codec::{Frame, decode_frame, encode_command};
use super::commands::Shared;
use super::{Connection, Step};
use crate::ap_backend::ApBackend;
use crate::ap_backend::memory::MemoryBackend;

/// A connection driven in memory.
struct Client<B> {
    conn: Connection<B>,
}

impl Client<MemoryBackend> {
    fn new() -> Self {
        Self::with(MemoryBackend::new())
    }
}

impl<B: ApBackend> Client<B> {
    fn with(backend: B) -> Self {
        let shared = Arc::new(Shared::new(6379));
        Client {
            conn: Connection::new(backend, shared, "127.0.0.1:50000".into()),
        }
    }

    /// Feeds raw bytes; returns every reply byte and where processing stopped.
    async fn raw(&mut self, input: &[u8]) -> (Vec<u8>, Step) {
        self.conn.parser.feed(input);
        let mut out = Vec::new();
        loop {
            match self.conn.process(&mut out, 1 << 30).await {
                Step::More => continue,
                step => return (out, step),
            }
        }
    }

    /// Sends one command as an array of bulk strings and decodes the one reply.
    async fn call(&mut self, args: &[&str]) -> Frame {
        let (out, _) = self.raw(&encode_command(args)).await;
        let (frame, used) = decode_frame(&out)
            .expect("valid reply")
            .expect("complete reply");
        assert_eq!(used, out.len(), "one reply to {args:?}");
        frame
    }

    /// Sends a command expecting an error reply starting with `prefix`.
    async fn error(&mut self, args: &[&str], prefix: &str) -> String {
        match self.call(args).await {
            Frame::Error(text) if text.starts_with(prefix) => text,
            other => panic!("{args:?}: expected an error starting {prefix:?}, got {other:?}"),
        }
    }
}

fn ok() -> Frame {
    Frame::ok()
}

fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

fn bulk(text: &str) -> Frame {
    Frame::bulk(text)
}

fn bulks(items: &[&str]) -> Frame {
    Frame::bulks(items.iter().copied())
}

#[tokio::test]
async fn strings_set_get_mset_mget_del_exists_type_ttl() {
    let mut c = Client::new();
    assert_eq!(c.call(&["GET", "k"]).await, Frame::Null);
    assert_eq!(c.call(&["SET", "k", "v1"]).await, ok());
    assert_eq!(c.call(&["get", "k"]).await, bulk("v1"));
    assert_eq!(c.call(&["SeT", "k", "v2"]).await, ok());
    assert_eq!(c.call(&["GET", "k"]).await, bulk("v2"), "SET replaces");
    assert_eq!(c.call(&["MSET", "a", "1", "b", "2"]).await, ok());
    c.call(&["SADD", "s", "m"]).await;
    assert_eq!(
        c.call(&["MGET", "a", "nope", "b", "s"]).await,
        Frame::Array(vec![bulk("1"), Frame::Null, bulk("2"), Frame::Null])
    );
    assert_eq!(c.call(&["EXISTS", "a", "a", "nope", "s"]).await, int(3));
    assert_eq!(c.call(&["TYPE", "a"]).await, Frame::Simple("string".into()));
    assert_eq!(c.call(&["TYPE", "s"]).await, Frame::Simple("set".into()));
    assert_eq!(
        c.call(&["TYPE", "nope"]).await,
        Frame::Simple("none".into())
    );
    assert_eq!(c.call(&["TTL", "a"]).await, int(-1));
    assert_eq!(c.call(&["PTTL", "nope"]).await, int(-2));
    assert_eq!(c.call(&["DEL", "a", "b", "nope", "a"]).await, int(2));
    assert_eq!(c.call(&["GET", "a"]).await, Frame::Null);
    assert_eq!(c.call(&["EXISTS", "a", "b"]).await, int(0));
    assert_eq!(c.call(&["UNLINK", "k"]).await, int(1));
    assert_eq!(c.call(&["DEL", "s"]).await, int(1), "DEL removes any type");
    assert_eq!(c.call(&["SMEMBERS", "s"]).await, Frame::Array(vec![]));
    c.error(
        &["MSET", "a", "1", "b"],
        "ERR wrong number of arguments for 'mset' command",
    )
    .await;
    c.error(&["GET"], "ERR wrong number of arguments for 'get' command")
        .await;
    c.error(&["GET", ""], "ERR bad request: key must be").await;
    c.call(&["SADD", "set", "m"]).await;
    c.error(&["GET", "set"], "WRONGTYPE Operation against a key")
        .await;
}

#[tokio::test]
async fn set_refuses_every_option_saying_why() {
    let mut c = Client::new();
    for option in ["EX", "px", "EXAT", "PXAT", "KEEPTTL"] {
        let text = c
            .error(
                &["SET", "k", "v", option, "10"],
                "ERR Isle does not support SET",
            )
            .await;
        assert!(text.contains("do not expire"), "{text}");
    }
    for option in ["NX", "xx", "GET"] {
        let text = c
            .error(&["SET", "k", "v", option], "ERR Isle does not support SET")
            .await;
        assert!(text.contains("CP keyspace"), "{text}");
    }
    c.error(&["SET", "k", "v", "BOGUS"], "ERR syntax error")
        .await;
    assert_eq!(
        c.call(&["GET", "k"]).await,
        Frame::Null,
        "nothing was written"
    );
}

#[tokio::test]
async fn counters_incr_decr_and_read_back_as_strings() {
    let mut c = Client::new();
    assert_eq!(c.call(&["INCR", "n"]).await, int(1));
    assert_eq!(c.call(&["INCRBY", "n", "10"]).await, int(11));
    assert_eq!(c.call(&["DECR", "n"]).await, int(10));
    assert_eq!(c.call(&["DECRBY", "n", "15"]).await, int(-5));
    assert_eq!(c.call(&["INCRBY", "n", "-1"]).await, int(-6));
    assert_eq!(c.call(&["GET", "n"]).await, bulk("-6"));
    assert_eq!(c.call(&["TYPE", "n"]).await, Frame::Simple("string".into()));
    assert_eq!(c.call(&["MGET", "n"]).await, bulks(&["-6"]));
    c.error(
        &["INCRBY", "n", "x"],
        "ERR value is not an integer or out of range",
    )
    .await;
    c.error(&["INCRBY", "n", "1.5"], "ERR value is not an integer")
        .await;
    c.error(
        &["DECRBY", "n", "-9223372036854775808"],
        "ERR decrement would overflow",
    )
    .await;
    c.error(
        &["INCR"],
        "ERR wrong number of arguments for 'incr' command",
    )
    .await;
    // Past the 64-bit range Redis refuses, and so does Isle: nothing is clamped.
    assert_eq!(
        c.call(&["INCRBY", "big", "9223372036854775807"]).await,
        int(i64::MAX)
    );
    c.error(
        &["INCRBY", "big", "1"],
        "ERR increment or decrement would overflow",
    )
    .await;
    assert_eq!(c.call(&["GET", "big"]).await, bulk("9223372036854775807"));
    c.call(&["SET", "s", "10"]).await;
    c.error(&["INCR", "s"], "WRONGTYPE key holds a value, not a counter")
        .await;
    c.error(&["SET", "n", "1"], "WRONGTYPE").await;
    assert_eq!(c.call(&["DEL", "n"]).await, int(1));
    // The keyspace resets a deleted counter to 0 (concurrent increments survive it), so it
    // reads as "0", not as absent.
    assert_eq!(c.call(&["GET", "n"]).await, bulk("0"));
    assert_eq!(
        c.call(&["INCR", "n"]).await,
        int(1),
        "a deleted counter restarts"
    );
}

#[tokio::test]
async fn sets_are_or_sets_with_redis_counts() {
    let mut c = Client::new();
    assert_eq!(c.call(&["SADD", "s", "b", "a", "b"]).await, int(2));
    assert_eq!(c.call(&["SADD", "s", "a", "c"]).await, int(1));
    assert_eq!(c.call(&["SMEMBERS", "s"]).await, bulks(&["a", "b", "c"]));
    assert_eq!(c.call(&["SCARD", "s"]).await, int(3));
    assert_eq!(c.call(&["SISMEMBER", "s", "a"]).await, int(1));
    assert_eq!(c.call(&["SISMEMBER", "s", "z"]).await, int(0));
    assert_eq!(
        c.call(&["SMISMEMBER", "s", "z", "c"]).await,
        Frame::Array(vec![int(0), int(1)])
    );
    assert_eq!(c.call(&["SREM", "s", "a", "z", "a"]).await, int(1));
    assert_eq!(c.call(&["SREM", "nope", "a"]).await, int(0));
    assert_eq!(c.call(&["SMEMBERS", "s"]).await, bulks(&["b", "c"]));
    assert_eq!(c.call(&["SMEMBERS", "nope"]).await, Frame::Array(vec![]));
    assert_eq!(c.call(&["SCARD", "nope"]).await, int(0));
    assert_eq!(c.call(&["SREM", "s", "b", "c"]).await, int(2));
    assert_eq!(
        c.call(&["EXISTS", "s"]).await,
        int(0),
        "an empty set is absent"
    );
    c.error(
        &["SADD", "s"],
        "ERR wrong number of arguments for 'sadd' command",
    )
    .await;
    c.call(&["SET", "str", "v"]).await;
    c.error(&["SADD", "str", "m"], "WRONGTYPE").await;
    c.error(&["SMEMBERS", "str"], "WRONGTYPE").await;
    c.error(&["SREM", "str", "m"], "WRONGTYPE").await;
}

#[tokio::test]
async fn hashes_are_or_maps_with_text_and_counter_fields() {
    let mut c = Client::new();
    assert_eq!(c.call(&["HSET", "h", "f1", "v1", "f2", "v2"]).await, int(2));
    assert_eq!(
        c.call(&["HSET", "h", "f1", "x", "f3", "y", "f3", "z"])
            .await,
        int(1)
    );
    assert_eq!(c.call(&["HGET", "h", "f1"]).await, bulk("x"));
    assert_eq!(
        c.call(&["HGET", "h", "f3"]).await,
        bulk("z"),
        "the last of two wins"
    );
    assert_eq!(c.call(&["HGET", "h", "nope"]).await, Frame::Null);
    assert_eq!(c.call(&["HGET", "nope", "f"]).await, Frame::Null);
    assert_eq!(
        c.call(&["HMGET", "h", "f2", "nope"]).await,
        Frame::Array(vec![bulk("v2"), Frame::Null])
    );
    assert_eq!(
        c.call(&["HGETALL", "h"]).await,
        bulks(&["f1", "x", "f2", "v2", "f3", "z"])
    );
    assert_eq!(c.call(&["HKEYS", "h"]).await, bulks(&["f1", "f2", "f3"]));
    assert_eq!(c.call(&["HVALS", "h"]).await, bulks(&["x", "v2", "z"]));
    assert_eq!(c.call(&["HLEN", "h"]).await, int(3));
    assert_eq!(c.call(&["HEXISTS", "h", "f2"]).await, int(1));
    assert_eq!(c.call(&["HEXISTS", "h", "f9"]).await, int(0));
    assert_eq!(c.call(&["HDEL", "h", "f1", "nope", "f1"]).await, int(1));
    assert_eq!(c.call(&["HDEL", "nope", "f1"]).await, int(0));
    assert_eq!(c.call(&["HINCRBY", "h", "n", "5"]).await, int(5));
    assert_eq!(c.call(&["HINCRBY", "h", "n", "-7"]).await, int(-2));
    assert_eq!(c.call(&["HGET", "h", "n"]).await, bulk("-2"));
    assert_eq!(c.call(&["HSET", "h", "num", "40"]).await, int(1));
    assert_eq!(c.call(&["HINCRBY", "h", "num", "2"]).await, int(42));
    c.error(
        &["HINCRBY", "h", "f2", "1"],
        "ERR hash value is not an integer",
    )
    .await;
    c.error(&["HINCRBY", "h", "n", "x"], "ERR value is not an integer")
        .await;
    assert_eq!(c.call(&["HMSET", "h", "a", "1"]).await, ok());
    assert_eq!(c.call(&["HGETALL", "nope"]).await, Frame::Array(vec![]));
    assert_eq!(c.call(&["TYPE", "h"]).await, Frame::Simple("hash".into()));
    c.error(
        &["HSET", "h", "f"],
        "ERR wrong number of arguments for 'hset' command",
    )
    .await;
    c.error(
        &["HSET", "h", "f", "v", "g"],
        "ERR wrong number of arguments",
    )
    .await;
    c.call(&["SET", "str", "v"]).await;
    c.error(&["HGET", "str", "f"], "WRONGTYPE").await;
    c.error(&["HSET", "str", "f", "v"], "WRONGTYPE").await;
}

#[tokio::test]
async fn connection_commands() {
    let mut c = Client::new();
    assert_eq!(c.call(&["PING"]).await, Frame::Simple("PONG".into()));
    assert_eq!(c.call(&["ping", "hi"]).await, bulk("hi"));
    c.error(
        &["PING", "a", "b"],
        "ERR wrong number of arguments for 'ping' command",
    )
    .await;
    assert_eq!(c.call(&["ECHO", "x y"]).await, bulk("x y"));
    c.error(&["ECHO"], "ERR wrong number of arguments").await;

    assert_eq!(c.call(&["SET", "k", "zero"]).await, ok());
    assert_eq!(c.call(&["SELECT", "1"]).await, ok());
    assert_eq!(
        c.call(&["GET", "k"]).await,
        Frame::Null,
        "db 1 is another bucket"
    );
    assert_eq!(c.call(&["SET", "k", "one"]).await, ok());
    c.error(&["SELECT", "2"], "ERR DB index is out of range")
        .await;
    c.error(&["SELECT", "-1"], "ERR DB index is out of range")
        .await;
    c.error(
        &["SELECT", "x"],
        "ERR value is not an integer or out of range",
    )
    .await;
    assert_eq!(c.call(&["GET", "k"]).await, bulk("one"), "still db 1");
    assert_eq!(c.call(&["SELECT", "0"]).await, ok());
    assert_eq!(c.call(&["GET", "k"]).await, bulk("zero"));

    assert_eq!(
        c.call(&["ISLE.CONSISTENCY"]).await,
        bulks(&["quorum", "quorum"])
    );
    assert_eq!(c.call(&["isle.consistency", "one", "all"]).await, ok());
    assert_eq!(c.call(&["ISLE.CONSISTENCY"]).await, bulks(&["one", "all"]));
    c.error(
        &["ISLE.CONSISTENCY", "most", "all"],
        "ERR unknown consistency level",
    )
    .await;
    c.error(
        &["ISLE.CONSISTENCY", "one"],
        "ERR wrong number of arguments",
    )
    .await;

    c.call(&["SELECT", "1"]).await;
    assert_eq!(c.call(&["RESET"]).await, Frame::Simple("RESET".into()));
    assert_eq!(
        c.call(&["GET", "k"]).await,
        bulk("zero"),
        "RESET selects db 0"
    );
    assert_eq!(
        c.call(&["ISLE.CONSISTENCY"]).await,
        bulks(&["quorum", "quorum"])
    );

    c.error(
        &["AUTH", "secret"],
        "ERR AUTH <password> called without any password configured",
    )
    .await;
    assert_eq!(c.call(&["AUTH", "default", "anything"]).await, ok());
    c.error(&["AUTH", "alice", "x"], "WRONGPASS").await;

    let (out, step) = c.raw(b"QUIT\r\nPING\r\n").await;
    assert_eq!(out, b"+OK\r\n");
    assert_eq!(step, Step::Close, "QUIT closes; what follows is not run");
}

#[tokio::test]
async fn hello_speaks_resp2_only() {
    let mut c = Client::new();
    let Frame::Array(items) = c.call(&["HELLO"]).await else {
        panic!("HELLO answers a map as an array")
    };
    assert_eq!(
        items[..4],
        [
            bulk("server"),
            bulk("redis"),
            bulk("version"),
            bulk("7.0.0")
        ]
    );
    assert_eq!(items[4..6], [bulk("proto"), int(2)]);
    let Frame::Array(_) = c.call(&["HELLO", "2", "SETNAME", "me"]).await else {
        panic!("HELLO 2 works")
    };
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, bulk("me"));
    c.error(&["HELLO", "3"], "NOPROTO").await;
    c.error(&["HELLO", "x"], "ERR Protocol version is not an integer")
        .await;
    c.error(
        &["HELLO", "2", "BOGUS"],
        "ERR Syntax error in HELLO option 'BOGUS'",
    )
    .await;
    let Frame::Array(_) = c.call(&["HELLO", "2", "AUTH", "default", "pw"]).await else {
        panic!("HELLO 2 AUTH default works")
    };
}

#[tokio::test]
async fn client_subcommands() {
    let mut c = Client::new();
    let Frame::Integer(id) = c.call(&["CLIENT", "ID"]).await else {
        panic!("an id")
    };
    assert!(id > 0);
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Frame::Null);
    assert_eq!(c.call(&["CLIENT", "SETNAME", "worker-1"]).await, ok());
    assert_eq!(c.call(&["client", "getname"]).await, bulk("worker-1"));
    c.error(
        &["CLIENT", "SETNAME", "a b"],
        "ERR Client names cannot contain spaces",
    )
    .await;
    assert_eq!(
        c.call(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).await,
        ok()
    );
    assert_eq!(c.call(&["CLIENT", "SETINFO", "lib-ver", "5.0"]).await, ok());
    c.error(
        &["CLIENT", "SETINFO", "colour", "red"],
        "ERR Unrecognized option",
    )
    .await;
    c.call(&["SELECT", "1"]).await;
    let Frame::Bulk(list) = c.call(&["CLIENT", "LIST"]).await else {
        panic!("a bulk string")
    };
    let list = String::from_utf8(list).expect("utf8");
    assert_eq!(
        list,
        format!(
            "id={id} addr=127.0.0.1:50000 name=worker-1 db=1 flags=N user=default lib-name=redis-py lib-ver=5.0\n"
        )
    );
    let only = c.call(&["CLIENT", "LIST", "ID", &id.to_string()]).await;
    assert_eq!(only, Frame::Bulk(list.clone().into_bytes()));
    assert_eq!(
        c.call(&["CLIENT", "LIST", "ID", "999"]).await,
        Frame::bulk("")
    );
    assert_eq!(
        c.call(&["CLIENT", "INFO"]).await,
        Frame::Bulk(list.into_bytes())
    );
    assert_eq!(c.call(&["CLIENT", "NO-EVICT", "on"]).await, ok());
    c.error(
        &["CLIENT", "KILL", "x"],
        "ERR unknown subcommand 'KILL'. Try CLIENT HELP.",
    )
    .await;
    c.error(
        &["CLIENT", "ID", "x"],
        "ERR wrong number of arguments for 'client|id'",
    )
    .await;
    c.error(
        &["CLIENT"],
        "ERR wrong number of arguments for 'client' command",
    )
    .await;
    let Frame::Array(help) = c.call(&["CLIENT", "HELP"]).await else {
        panic!("help lines")
    };
    assert!(help.len() > 3);
}

#[tokio::test]
async fn command_info_config_and_refusals() {
    let mut c = Client::new();
    let Frame::Integer(count) = c.call(&["COMMAND", "COUNT"]).await else {
        panic!("a count")
    };
    let Frame::Array(all) = c.call(&["COMMAND"]).await else {
        panic!("an array")
    };
    assert_eq!(all.len() as i64, count);
    assert_eq!(c.call(&["COMMAND", "DOCS"]).await, Frame::Array(vec![]));
    assert_eq!(
        c.call(&["COMMAND", "DOCS", "get"]).await,
        Frame::Array(vec![])
    );
    let Frame::Array(info) = c.call(&["COMMAND", "INFO", "GET", "nope"]).await else {
        panic!("an array")
    };
    assert_eq!(info[1], Frame::NullArray);
    let Frame::Array(get) = &info[0] else {
        panic!("get's entry")
    };
    assert_eq!(get.len(), 10);
    assert_eq!(get[..2], [bulk("get"), int(2)]);
    assert_eq!(get[3..6], [int(1), int(1), int(1)]);
    let Frame::Array(names) = c.call(&["COMMAND", "LIST"]).await else {
        panic!("names")
    };
    assert!(names.contains(&bulk("hincrby")));

    let Frame::Bulk(info) = c.call(&["INFO"]).await else {
        panic!("INFO is a bulk string")
    };
    let info = String::from_utf8(info).expect("utf8");
    for line in [
        "# Server\r\n",
        "redis_version:7.0.0\r\n",
        "redis_mode:standalone\r\n",
        "isle_node_id:1\r\n",
        "# Clients\r\nconnected_clients:1\r\n",
        "role:master\r\n",
        "# Keyspace\r\n",
        "db0:bucket=default,rule=siblings,n=3\r\n",
        "db1:bucket=lww,rule=lww,n=3\r\n",
    ] {
        assert!(info.contains(line), "INFO lacks {line:?}:\n{info}");
    }
    let Frame::Bulk(server) = c.call(&["INFO", "server"]).await else {
        panic!("a bulk string")
    };
    let server = String::from_utf8(server).expect("utf8");
    assert!(server.starts_with("# Server\r\n") && !server.contains("# Keyspace"));

    assert_eq!(
        c.call(&["CONFIG", "GET", "save"]).await,
        bulks(&["save", ""])
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "appendonly"]).await,
        bulks(&["appendonly", "no"])
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "data*", "max?emory"]).await,
        bulks(&["databases", "2", "maxmemory", "0"])
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "nope"]).await,
        Frame::Array(vec![])
    );
    c.error(
        &["CONFIG", "SET", "save", ""],
        "ERR Isle does not support CONFIG SET",
    )
    .await;
    c.error(&["CONFIG", "GET"], "ERR wrong number of arguments")
        .await;
    c.error(&["CONFIG", "BOGUS"], "ERR unknown subcommand 'BOGUS'")
        .await;

    for flush in ["FLUSHALL", "flushdb"] {
        let text = c.error(&[flush], "ERR Isle does not support").await;
        assert!(text.contains("DEL"), "{text}");
    }
    assert_eq!(
        c.error(&["FOO", "a", "b"], "ERR unknown command").await,
        "ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
    );
    let text = c
        .error(&["EXPIRE", "k", "10"], "ERR Isle does not support 'expire'")
        .await;
    assert!(text.contains("do not expire"), "{text}");
    c.error(&["MULTI"], "ERR Isle does not support 'multi'")
        .await;
    c.error(&["LPUSH", "l", "x"], "ERR Isle does not support 'lpush'")
        .await;
}

#[tokio::test]
async fn pipelined_arrays_and_inline_commands_answer_in_order() {
    let mut c = Client::new();
    let mut input = b"PING\r\n".to_vec();
    input.extend_from_slice(&encode_command(&["SET", "a", "1 2"]));
    input.extend_from_slice(b"GET a\r\nincr n\r\nINCR n\r\nset \"b c\" 'x'\r\nGET \"b c\"\r\n");
    input.extend_from_slice(b"HSET h f v\nhget h f\n\r\nNOSUCH\r\n");
    let (out, step) = c.raw(&input).await;
    assert_eq!(step, Step::Read);
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "+PONG\r\n+OK\r\n$3\r\n1 2\r\n:1\r\n:2\r\n+OK\r\n$1\r\nx\r\n:1\r\n$1\r\nv\r\n\
         -ERR unknown command 'NOSUCH', with args beginning with: \r\n"
    );
    // A command split anywhere waits for its rest.
    let whole = encode_command(&["SET", "split", "value"]);
    let (out, _) = c.raw(&whole[..7]).await;
    assert!(out.is_empty());
    let (out, _) = c.raw(&whole[7..]).await;
    assert_eq!(out, b"+OK\r\n");
}

#[tokio::test]
async fn protocol_errors_answer_then_close() {
    let mut c = Client::new();
    let (out, step) = c.raw(b"PING\r\n*1\r\n:5\r\nPING\r\n").await;
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        "+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n"
    );
    assert_eq!(step, Step::Close);
    let mut c = Client::new();
    let (out, step) = c.raw(b"GET \"open\r\n").await;
    assert_eq!(
        out,
        b"-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    assert_eq!(step, Step::Close);
}

/// A backend whose reads and writes answer as told: siblings, refusals.
#[derive(Clone)]
struct Scripted {
    read: Result<Value, ApError>,
    write: Result<Value, ApError>,
}

fn replicas() -> Replicas {
    Replicas {
        answered: 2,
        asked: 3,
        needed: 2,
        level: "quorum".into(),
        fallbacks: 0,
    }
}

impl ApBackend for Scripted {
    async fn get(&self, _: String, _: Vec<u8>, _: ReadOptions) -> Result<ReadReply, ApError> {
        self.read.clone().map(|value| ReadReply {
            value,
            context: Default::default(),
            rule: Rule::Siblings,
            stamp: None,
            replicas: replicas(),
        })
    }

    async fn apply(
        &self,
        _: String,
        _: Vec<u8>,
        _: Op,
        _: WriteOptions,
    ) -> Result<WriteReply, ApError> {
        self.write.clone().map(|value| WriteReply {
            value,
            context: Default::default(),
            rule: Rule::Siblings,
            stamp: None,
            applied: true,
            replicas: replicas(),
        })
    }

    fn buckets(&self) -> Vec<BucketInfo> {
        vec![BucketInfo {
            name: "default".into(),
            rule: Rule::Siblings,
            n: 3,
        }]
    }

    fn node_id(&self) -> u64 {
        7
    }
}

#[tokio::test]
async fn siblings_read_as_the_last_value() {
    let siblings = Value::Values(vec![b"left".to_vec(), b"right".to_vec()]);
    let mut c = Client::with(Scripted {
        read: Ok(siblings.clone()),
        write: Ok(siblings),
    });
    assert_eq!(c.call(&["GET", "k"]).await, bulk("right"));
    assert_eq!(c.call(&["MGET", "k"]).await, bulks(&["right"]));
    assert_eq!(c.call(&["DEL", "k"]).await, int(1));
}

#[tokio::test]
async fn refusals_map_to_redis_error_codes() {
    let unavailable = ApError::Unavailable {
        answered: 1,
        asked: 3,
        needed: 2,
        level: "quorum".into(),
        detail: String::new(),
    };
    let mut c = Client::with(Scripted {
        read: Err(unavailable.clone()),
        write: Err(unavailable),
    });
    let text = c
        .error(&["GET", "k"], "NOQUORUM not enough replicas: 1 of 3")
        .await;
    assert!(text.contains("quorum needs 2"), "{text}");
    c.error(&["SET", "k", "v"], "NOQUORUM").await;
    c.error(&["INCR", "k"], "NOQUORUM").await;
    let mut c = Client::with(Scripted {
        read: Ok(Value::Absent),
        write: Err(ApError::Internal("disk on fire".into())),
    });
    c.error(&["SET", "k", "v"], "ERR internal error: disk on fire")
        .await;
    c.error(&["SADD", "k", "m"], "ERR internal error").await;
    assert_eq!(
        c.call(&["DEL", "k"]).await,
        int(0),
        "absent: nothing to delete"
    );
    let mut c = Client::with(Scripted {
        read: Ok(Value::Absent),
        write: Err(ApError::Level(isle_ap::level::LevelError::MoreThanN {
            level: "5".into(),
            needed: 5,
            n: 3,
        })),
    });
    c.error(
        &["SET", "k", "v"],
        "ERR 5 needs 5 replicas but the bucket keeps only n=3",
    )
    .await;
}

async fn started() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(MemoryBackend::new(), listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// Reads until `want` bytes arrived (or the connection closed).
async fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        while got.len() < want {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("replies in time");
    got
}

#[tokio::test]
async fn tcp_server_pipelines_quits_and_shuts_down() {
    let (addr, stop, server) = started().await;
    let mut one = TcpStream::connect(addr).await.expect("connect");
    let mut two = TcpStream::connect(addr).await.expect("connect");

    // 2000 pipelined commands in one write: every reply, in order.
    let mut input = Vec::new();
    let mut expect = Vec::new();
    for i in 1..=2000 {
        input.extend_from_slice(&encode_command(&["INCR", "n"]));
        expect.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    one.write_all(&input).await.expect("write");
    assert_eq!(read_exactly(&mut one, expect.len()).await, expect);

    // Connections have their own db.
    two.write_all(b"SELECT 1\r\nINCR n\r\n")
        .await
        .expect("write");
    assert_eq!(read_exactly(&mut two, 9).await, b"+OK\r\n:1\r\n");
    two.write_all(b"CLIENT LIST\r\n").await.expect("write");
    let list = read_exactly(&mut two, 1).await;
    let list = String::from_utf8(list).expect("utf8");
    assert_eq!(list.matches("id=").count(), 2, "{list}");

    // A value larger than one read.
    let big = vec![b'x'; 300_000];
    let mut set = encode_command(&[b"SET".as_slice(), b"big", &big]);
    set.extend_from_slice(b"STRLEN big\r\nGET big\r\n");
    one.write_all(&set).await.expect("write");
    let expect = [
        &b"+OK\r\n-ERR unknown command 'STRLEN', with args beginning with: 'big' \r\n"[..],
        b"$300000\r\n",
        &big,
        b"\r\n",
    ]
    .concat();
    assert_eq!(read_exactly(&mut one, expect.len()).await, expect);

    // QUIT answers and closes.
    one.write_all(b"QUIT\r\n").await.expect("write");
    assert_eq!(read_exactly(&mut one, 100).await, b"+OK\r\n");

    // Shutdown closes the open connection and ends the server.
    stop.send(()).expect("server running");
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .expect("joins");
    assert!(result.is_ok());
    assert_eq!(read_exactly(&mut two, 1).await, b"");
}

#[tokio::test]
async fn tcp_protocol_error_closes_the_connection() {
    let (addr, _stop, _server) = started().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"*2\r\n$3\r\nGET\r\n?\r\n")
        .await
        .expect("write");
    assert_eq!(
        read_exactly(&mut stream, 1000).await,
        b"-ERR Protocol error: expected '$', got '?'\r\n"
    );
    // Garbage never brings the server down.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"*99999999999\r\n").await.expect("write");
    assert_eq!(
        read_exactly(&mut stream, 1000).await,
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"PING\r\n").await.expect("write");
    assert_eq!(read_exactly(&mut stream, 7).await, b"+PONG\r\n");
}

/// A backend whose writes all wait until `n` of them are in flight, then finish in reverse
/// order of their key's number (`k0` last): it proves commands overlap and that replies keep
/// the commands' order regardless.
#[derive(Clone)]
struct Gated {
    inner: MemoryBackend,
    started: Arc<tokio::sync::Barrier>,
    done: Arc<tokio::sync::watch::Sender<usize>>,
    n: usize,
}

impl ApBackend for Gated {
    async fn get(
        &self,
        bucket: String,
        key: Vec<u8>,
        options: ReadOptions,
    ) -> Result<ReadReply, ApError> {
        self.inner.get(bucket, key, options).await
    }

    async fn apply(
        &self,
        bucket: String,
        key: Vec<u8>,
        op: Op,
        options: WriteOptions,
    ) -> Result<WriteReply, ApError> {
        let i: usize = String::from_utf8_lossy(&key[1..]).parse().expect("key kN");
        self.started.wait().await;
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|d| *d == self.n - 1 - i).await;
        let reply = self.inner.apply(bucket, key, op, options).await;
        self.done.send_modify(|d| *d += 1);
        reply
    }

    fn buckets(&self) -> Vec<BucketInfo> {
        self.inner.buckets()
    }

    fn node_id(&self) -> u64 {
        1
    }
}

#[tokio::test]
async fn pipelined_commands_on_distinct_keys_overlap_and_reply_in_order() {
    let n = 8;
    let mut c = Client::with(Gated {
        inner: MemoryBackend::new(),
        started: Arc::new(tokio::sync::Barrier::new(n)),
        done: Arc::new(tokio::sync::watch::channel(0).0),
        n,
    });
    let mut input = Vec::new();
    for i in 0..n {
        input.extend_from_slice(&encode_command(&[
            "INCRBY",
            &format!("k{i}"),
            &(i + 1).to_string(),
        ]));
    }
    // Run one at a time, the first write would wait for the others forever.
    let (out, step) = tokio::time::timeout(Duration::from_secs(30), c.raw(&input))
        .await
        .expect("the pipelined writes ran concurrently");
    assert_eq!(step, Step::Read);
    let expected: String = (1..=n).map(|i| format!(":{i}\r\n")).collect();
    assert_eq!(String::from_utf8(out).expect("utf8"), expected);
}

#[tokio::test]
async fn pipelines_keep_per_key_order_and_session_changes() {
    let mut c = Client::new();
    let mut input = Vec::new();
    for args in [
        &["INCR", "n"][..],
        &["INCR", "n"],
        &["SET", "a", "1"],
        &["GET", "n"],
        &["SELECT", "1"],
        &["GET", "a"],
        &["SET", "a", "2"],
        &["SELECT", "0"],
        &["GET", "a"],
        &["MSET", "a", "3", "b", "4"],
        &["MGET", "a", "b"],
    ] {
        input.extend_from_slice(&encode_command(args));
    }
    let (out, step) = c.raw(&input).await;
    assert_eq!(step, Step::Read);
    assert_eq!(
        String::from_utf8(out).expect("utf8"),
        ":1\r\n:2\r\n+OK\r\n$1\r\n2\r\n+OK\r\n$-1\r\n+OK\r\n+OK\r\n$1\r\n1\r\n+OK\r\n\
         *2\r\n$1\r\n3\r\n$1\r\n4\r\n"
    );
}

#[test]
fn commands_naming_keys_may_run_concurrently_others_alone() {
    let keys = |args: &[&str]| {
        super::commands::concurrent_keys(&args.iter().map(|a| a.as_bytes().to_vec()).collect())
    };
    let k = |names: &[&str]| {
        Some(
            names
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(keys(&["SET", "a", "1"]), k(&["a"]));
    assert_eq!(keys(&["mset", "a", "1", "b", "2"]), k(&["a", "b"]));
    assert_eq!(keys(&["DEL", "a", "b", "c"]), k(&["a", "b", "c"]));
    assert_eq!(keys(&["SELECT", "1"]), None);
    assert_eq!(keys(&["ISLE.CONSISTENCY", "one", "one"]), None);
    assert_eq!(
        keys(&["GET"]),
        None,
        "a malformed command runs alone and says so"
    );
    assert_eq!(keys(&["NOSUCH", "a"]), None);
}
