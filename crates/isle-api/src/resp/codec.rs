//! RESP2, sans-IO: an incremental parser of client commands and an encoder of replies.
//!
//! A client sends either an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what
//! `redis-cli` and every client library send) or an *inline* command, one line split on
//! blanks with Redis's quoting rules (`GET "a key"\r\n`, what telnet and `redis-benchmark`'s
//! inline mode send). [`CommandParser`] owns the input buffer: the IO shell appends what it
//! reads ([`CommandParser::read_buffer`]) and takes complete commands out one at a time
//! ([`CommandParser::next_command`]); a command split across reads at any byte parses the
//! same. Input that breaks the protocol or a [`Limits`] bound is a [`ProtocolError`]: the
//! server answers it with `-ERR Protocol error: ...` and closes the connection, as Redis does.
//!
//! Replies are written straight into an output buffer by [`write_simple`], [`write_error`],
//! [`write_integer`], [`write_bulk`], [`write_null`] and [`write_array_header`], or built as a
//! [`Frame`] and encoded with [`Frame::encode`]. [`decode_frame`] parses any RESP2 value (a
//! reply, as a client would): the tests use it, and so can tools.

use std::fmt;

/// Bounds on what one command may hold, so a client cannot make the server buffer without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (one argument), in bytes.
    pub max_bulk: usize,
    /// Most arguments in one command (the array's length).
    pub max_args: usize,
    /// Longest inline command or array/bulk header line, in bytes.
    pub max_inline: usize,
    /// Most bytes of arguments in one command, summed.
    pub max_command_bytes: usize,
}

impl Default for Limits {
    /// Bulks up to 4 MiB (values are limited to 1 MiB by the keyspace, which then answers with
    /// a clear error rather than a closed connection), a million arguments, 64 KiB inline
    /// commands (Redis's limit) and 64 MiB per command.
    fn default() -> Self {
        Limits {
            max_bulk: 4 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
            max_command_bytes: 64 << 20,
        }
    }
}

/// Input that is not RESP, or exceeds a [`Limits`] bound. Its text is Redis's own where Redis
/// has one; the server replies `-ERR Protocol error: <text>` and closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol(text: impl Into<String>) -> ProtocolError {
    ProtocolError(text.into())
}

/// A command: its name and arguments, as the client sent them.
pub type Command = Vec<Vec<u8>>;

/// An array command whose arguments are still arriving.
#[derive(Debug)]
struct Pending {
    /// Arguments still to read.
    remaining: usize,
    /// Arguments read so far.
    args: Command,
    /// Bytes of arguments so far (for [`Limits::max_command_bytes`]).
    bytes: usize,
    /// The length of the bulk string being read, once its `$n` header was read.
    bulk: Option<usize>,
}

/// Parses client commands out of the bytes a connection receives, incrementally.
#[derive(Debug)]
pub struct CommandParser {
    limits: Limits,
    buf: Vec<u8>,
    pos: usize,
    pending: Option<Pending>,
}

impl Default for CommandParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Bytes the read buffer keeps free for the next read.
const READ_CHUNK: usize = 16 << 10;

impl CommandParser {
    /// A parser with an empty buffer.
    pub fn new(limits: Limits) -> Self {
        CommandParser {
            limits,
            buf: Vec::new(),
            pos: 0,
            pending: None,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into: append to it (e.g. `AsyncReadExt::read_buf`). Consumed bytes
    /// are dropped first, and room is reserved for at least one chunk, or for the rest of a
    /// bulk string being received.
    pub fn read_buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        let mut want = READ_CHUNK;
        if let Some(Pending {
            bulk: Some(len), ..
        }) = &self.pending
        {
            let have = self.buf.len() - self.pos;
            want = want.max((len + 2).saturating_sub(have));
        }
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Bytes received but not yet consumed by a complete command.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// The next complete command, `None` if more input is needed. Empty commands (`*0`, blank
    /// inline lines) are skipped. After an error the connection must be closed: the parser's
    /// state is undefined.
    pub fn next_command(&mut self) -> Result<Option<Command>, ProtocolError> {
        loop {
            if self.pending.is_none() {
                let Some(&first) = self.buf.get(self.pos) else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.inline()? {
                        None => return Ok(None),
                        Some(args) if args.is_empty() => continue,
                        Some(args) => return Ok(Some(args)),
                    }
                }
                let Some(count) = self.header_line(b'*', "mbulk count")? else {
                    return Ok(None);
                };
                if count > self.limits.max_args as i64 {
                    return Err(protocol("invalid multibulk length"));
                }
                if count <= 0 {
                    continue;
                }
                let count = count as usize;
                self.pending = Some(Pending {
                    remaining: count,
                    args: Vec::with_capacity(count.min(1024)),
                    bytes: 0,
                    bulk: None,
                });
            }
            return self.array_arguments();
        }
    }

    /// Reads the arguments of the pending array command as far as the buffer allows.
    fn array_arguments(&mut self) -> Result<Option<Command>, ProtocolError> {
        loop {
            let Some(pending) = self.pending.as_mut() else {
                return Ok(None);
            };
            if pending.remaining == 0 {
                let args = std::mem::take(&mut pending.args);
                self.pending = None;
                return Ok(Some(args));
            }
            let len = match pending.bulk {
                Some(len) => len,
                None => {
                    let Some(&first) = self.buf.get(self.pos) else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        return Err(protocol(format!(
                            "expected '$', got '{}'",
                            char::from(first).escape_default()
                        )));
                    }
                    let Some(len) = self.header_line(b'$', "bulk count")? else {
                        return Ok(None);
                    };
                    if len < 0 || len > self.limits.max_bulk as i64 {
                        return Err(protocol("invalid bulk length"));
                    }
                    let len = len as usize;
                    let pending = self.pending.as_mut().ok_or_else(|| protocol("internal"))?;
                    if pending.bytes + len > self.limits.max_command_bytes {
                        return Err(protocol(format!(
                            "command larger than {} bytes",
                            self.limits.max_command_bytes
                        )));
                    }
                    pending.bulk = Some(len);
                    len
                }
            };
            if self.buf.len() - self.pos < len + 2 {
                return Ok(None);
            }
            let end = self.pos + len;
            if &self.buf[end..end + 2] != b"\r\n" {
                return Err(protocol("expected CRLF after a bulk string"));
            }
            let arg = self.buf[self.pos..end].to_vec();
            self.pos = end + 2;
            let pending = self.pending.as_mut().ok_or_else(|| protocol("internal"))?;
            pending.args.push(arg);
            pending.bytes += len;
            pending.remaining -= 1;
            pending.bulk = None;
        }
    }

    /// The line at the read position (without its CRLF), `None` if incomplete. A line longer
    /// than [`Limits::max_inline`] is an error named after `what`.
    fn line(&mut self, what: &str) -> Result<Option<&[u8]>, ProtocolError> {
        let available = &self.buf[self.pos..];
        let window = &available[..available.len().min(self.limits.max_inline + 2)];
        let Some(newline) = window.iter().position(|&b| b == b'\n') else {
            if available.len() > self.limits.max_inline + 1 {
                return Err(protocol(format!("too big {what}")));
            }
            return Ok(None);
        };
        let start = self.pos;
        self.pos += newline + 1;
        Ok(Some(&self.buf[start..start + newline]))
    }

    /// A `*n` or `$n` header: the integer after `prefix`, `None` if the line is incomplete.
    fn header_line(&mut self, prefix: u8, what: &str) -> Result<Option<i64>, ProtocolError> {
        let invalid = if prefix == b'*' {
            "invalid multibulk length"
        } else {
            "invalid bulk length"
        };
        let Some(line) = self.line(&format!("{what} string"))? else {
            return Ok(None);
        };
        let digits = line
            .strip_prefix(&[prefix])
            .and_then(|l| l.strip_suffix(b"\r"))
            .ok_or_else(|| protocol(invalid))?;
        parse_i64(digits).map(Some).ok_or_else(|| protocol(invalid))
    }

    /// An inline command (one line split into arguments), `None` if the line is incomplete.
    fn inline(&mut self) -> Result<Option<Command>, ProtocolError> {
        let Some(line) = self.line("inline request")? else {
            return Ok(None);
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_args(line)
            .map(Some)
            .ok_or_else(|| protocol("unbalanced quotes in request"))
    }
}

/// Parses a whole decimal `i64` as Redis's `string2ll` does: an optional `-`, digits, no
/// blanks, no `+`, no leading zeros (except `0` itself).
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' || negative && digits == b"0" {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse().ok()
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Splits an inline command into arguments as Redis's `sdssplitargs` does: blanks separate,
/// `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`, and a closing
/// quote must be followed by a blank or the end. A NUL byte ends the line (Redis reads it as
/// a C string). `None`: unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Command> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_blank(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let mut double = false;
        let mut single = false;
        loop {
            let c = line.get(i).copied();
            if double {
                let c = c?;
                let next = line.get(i + 1).copied();
                if c == b'\\' && next == Some(b'x') {
                    let pair = (
                        line.get(i + 2).copied().and_then(hex),
                        line.get(i + 3).copied().and_then(hex),
                    );
                    if let (Some(high), Some(low)) = pair {
                        arg.push(high * 16 + low);
                        i += 3;
                    } else {
                        arg.push(c);
                    }
                } else if let (b'\\', Some(escaped)) = (c, next) {
                    arg.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 1;
                } else if c == b'"' {
                    if line.get(i + 1).is_some_and(|&b| !is_blank(b)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    arg.push(c);
                }
            } else if single {
                let c = c?;
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    arg.push(b'\'');
                    i += 1;
                } else if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&b| !is_blank(b)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    arg.push(c);
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => double = true,
                    Some(b'\'') => single = true,
                    Some(other) => arg.push(other),
                }
            }
            i += 1;
        }
        args.push(arg);
    }
}

/// Appends `+text\r\n` (CR and LF in `text` become blanks: a simple string is one line).
pub fn write_simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_line(out, text);
}

/// Appends `-text\r\n`; `text` starts with the error code (`ERR`, `WRONGTYPE`, ...).
pub fn write_error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    push_line(out, text);
}

fn push_line(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `:n\r\n`.
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string `$len\r\nbytes\r\n`.
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends the nil bulk string `$-1\r\n`.
pub fn write_null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends an array header `*len\r\n` (`None`: the nil array `*-1\r\n`); the elements follow.
pub fn write_array_header(out: &mut Vec<u8>, len: Option<usize>) {
    match len {
        Some(len) => {
            out.push(b'*');
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"*-1\r\n"),
    }
}

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+OK`: a one-line status.
    Simple(String),
    /// `-ERR ...`: an error, its first word the code.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`: a binary-safe string.
    Bulk(Vec<u8>),
    /// `$-1`: the nil bulk string (a missing key).
    Null,
    /// `*2\r\n...`: a list of values.
    Array(Vec<Frame>),
    /// `*-1`: the nil array.
    NullArray,
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".into())
    }

    /// An error reply; `text` starts with the code.
    pub fn error(text: impl Into<String>) -> Frame {
        Frame::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Frame {
        Frame::Bulk(bytes.into())
    }

    /// An array of bulk strings.
    pub fn bulks<I, T>(items: I) -> Frame
    where
        I: IntoIterator<Item = T>,
        T: Into<Vec<u8>>,
    {
        Frame::Array(items.into_iter().map(|b| Frame::Bulk(b.into())).collect())
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Simple(text) => write_simple(out, text),
            Frame::Error(text) => write_error(out, text),
            Frame::Integer(n) => write_integer(out, *n),
            Frame::Bulk(bytes) => write_bulk(out, bytes),
            Frame::Null => write_null(out),
            Frame::Array(items) => {
                write_array_header(out, Some(items.len()));
                for item in items {
                    item.encode(out);
                }
            }
            Frame::NullArray => write_array_header(out, None),
        }
    }

    /// The encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Deepest array nesting [`decode_frame`] follows.
const MAX_DEPTH: usize = 64;

/// Parses one RESP2 value from the start of `input`: the value and the bytes it took, `None`
/// if `input` ends before the value does. Lengths are bounded by [`Limits::default`].
pub fn decode_frame(input: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    decode_at(input, 0, 0)
}

fn decode_line(input: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let limits = Limits::default();
    let rest = input.get(at..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) if nl > limits.max_inline => Err(protocol("line too long")),
        Some(nl) => {
            let line = rest[..nl]
                .strip_suffix(b"\r")
                .ok_or_else(|| protocol("expected CRLF"))?;
            Ok(Some((line, at + nl + 1)))
        }
        None if rest.len() > limits.max_inline => Err(protocol("line too long")),
        None => Ok(None),
    }
}

fn decode_at(
    input: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let limits = Limits::default();
    let Some(&kind) = input.get(at) else {
        return Ok(None);
    };
    let Some((line, next)) = decode_line(input, at + 1)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || parse_i64(line).ok_or_else(|| protocol("invalid length or integer"));
    match kind {
        b'+' => Ok(Some((Frame::Simple(text()), next))),
        b'-' => Ok(Some((Frame::Error(text()), next))),
        b':' => Ok(Some((Frame::Integer(number()?), next))),
        b'$' => match number()? {
            -1 => Ok(Some((Frame::Null, next))),
            len if len < 0 || len > limits.max_bulk as i64 => Err(protocol("invalid bulk length")),
            len => {
                let end = next + len as usize;
                if input.len() < end + 2 {
                    return Ok(None);
                }
                if &input[end..end + 2] != b"\r\n" {
                    return Err(protocol("expected CRLF after a bulk string"));
                }
                Ok(Some((Frame::Bulk(input[next..end].to_vec()), end + 2)))
            }
        },
        b'*' => match number()? {
            -1 => Ok(Some((Frame::NullArray, next))),
            len if len < 0 || len > limits.max_args as i64 => {
                Err(protocol("invalid multibulk length"))
            }
            _ if depth >= MAX_DEPTH => Err(protocol("arrays nested too deep")),
            len => {
                let mut items = Vec::with_capacity((len as usize).min(1024));
                let mut at = next;
                for _ in 0..len {
                    let Some((item, after)) = decode_at(input, at, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    at = after;
                }
                Ok(Some((Frame::Array(items), at)))
            }
        },
        other => Err(protocol(format!(
            "unknown type byte '{}'",
            char::from(other).escape_default()
        ))),
    }
}

/// Encodes a command as an array of bulk strings, as a client sends it.
pub fn encode_command<T: AsRef<[u8]>>(args: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    write_array_header(&mut out, Some(args.len()));
    for arg in args {
        write_bulk(&mut out, arg.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift generator: the property tests need no crate and replay exactly.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let len = self.below(max + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
        fn text(&mut self, max: usize) -> String {
            let len = self.below(max + 1);
            (0..len)
                .map(|_| char::from(b' ' + self.below(95) as u8))
                .collect()
        }
        fn frame(&mut self, depth: usize) -> Frame {
            match self.below(if depth > 3 { 6 } else { 7 }) {
                0 => Frame::Simple(self.text(20)),
                1 => Frame::Error(self.text(20)),
                2 => Frame::Integer(self.next() as i64 >> self.below(64)),
                3 => Frame::Bulk(self.bytes(40)),
                4 => Frame::Null,
                5 => Frame::NullArray,
                _ => {
                    let len = self.below(5);
                    Frame::Array((0..len).map(|_| self.frame(depth + 1)).collect())
                }
            }
        }
        fn command(&mut self) -> Command {
            let len = 1 + self.below(5);
            (0..len).map(|_| self.bytes(30)).collect()
        }
    }

    /// Every command (or the error) the parser gives for `input` fed in `chunks`.
    fn parse_all(input: &[u8], chunks: &[usize]) -> (Vec<Command>, Option<ProtocolError>) {
        let mut parser = CommandParser::new(Limits {
            max_bulk: 64,
            max_args: 16,
            max_inline: 64,
            max_command_bytes: 256,
        });
        let mut commands = Vec::new();
        let mut at = 0;
        let mut cuts = chunks.iter().copied().chain(std::iter::once(input.len()));
        while at < input.len() {
            let end = cuts.next().unwrap_or(input.len()).clamp(at, input.len());
            parser.read_buffer().extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match parser.next_command() {
                    Ok(Some(command)) => commands.push(command),
                    Ok(None) => break,
                    Err(err) => return (commands, Some(err)),
                }
            }
        }
        (commands, None)
    }

    fn args(words: &[&str]) -> Command {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parses_arrays_and_inline_commands_pipelined() {
        let mut input = encode_command(&["SET", "k", "v"]);
        input.extend_from_slice(b"PING\r\n\r\n*0\r\n*-1\r\n  \r\n");
        input.extend_from_slice(b"set \"a key\" 'it\\'s' \"\\x41\\n\"\n");
        input.extend_from_slice(&encode_command(&["GET", ""]));
        let (commands, err) = parse_all(&input, &[]);
        assert_eq!(err, None);
        assert_eq!(
            commands,
            vec![
                args(&["SET", "k", "v"]),
                args(&["PING"]),
                args(&["set", "a key", "it's", "A\n"]),
                args(&["GET", ""]),
            ]
        );
    }

    #[test]
    fn inline_quoting_follows_redis() {
        let split = |s: &str| split_args(s.as_bytes());
        assert_eq!(split("  a  b\tc "), Some(args(&["a", "b", "c"])));
        assert_eq!(split("\"\""), Some(args(&[""])));
        assert_eq!(split("ab\"c d\""), Some(args(&["abc d"])));
        assert_eq!(split("\"\\x4g\""), Some(args(&["\\x4g"])));
        assert_eq!(split("\"unterminated"), None);
        assert_eq!(split("'unterminated"), None);
        assert_eq!(
            split("\"a\"b"),
            None,
            "closing quote followed by a non-blank"
        );
        assert_eq!(split(""), Some(vec![]));
        assert_eq!(
            split_args(b"a\0b c"),
            Some(args(&["a"])),
            "NUL ends the line"
        );
    }

    #[test]
    fn protocol_errors_use_redis_wording() {
        let error = |input: &[u8]| parse_all(input, &[]).1.map(|e| e.to_string());
        let expect = |input: &[u8], text: &str| {
            assert_eq!(error(input).as_deref(), Some(text), "{input:?}");
        };
        expect(b"*x\r\n", "Protocol error: invalid multibulk length");
        expect(b"*17\r\n", "Protocol error: invalid multibulk length");
        expect(b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'");
        expect(b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length");
        expect(b"*1\r\n$65\r\n", "Protocol error: invalid bulk length");
        expect(
            b"*1\r\n$1\r\nab\r\n",
            "Protocol error: expected CRLF after a bulk string",
        );
        expect(
            b"GET \"k\r\n",
            "Protocol error: unbalanced quotes in request",
        );
        expect(&[b'a'; 100], "Protocol error: too big inline request");
        let mut long = b"*".to_vec();
        long.extend([b'1'; 100]);
        expect(&long, "Protocol error: too big mbulk count string");
        let mut big = Vec::new();
        for _ in 0..5 {
            big.extend_from_slice(b"$60\r\n");
            big.extend([b'x'; 60]);
            big.extend_from_slice(b"\r\n");
        }
        expect(
            &[b"*5\r\n".as_slice(), &big].concat(),
            "Protocol error: command larger than 256 bytes",
        );
    }

    #[test]
    fn integers_parse_strictly() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1.5",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encodes_every_kind() {
        let frame = Frame::Array(vec![
            Frame::ok(),
            Frame::error("ERR a\r\nb"),
            Frame::Integer(-3),
            Frame::bulk("x"),
            Frame::Null,
            Frame::NullArray,
            Frame::Array(vec![]),
        ]);
        assert_eq!(
            frame.to_bytes(),
            b"*7\r\n+OK\r\n-ERR a  b\r\n:-3\r\n$1\r\nx\r\n$-1\r\n*-1\r\n*0\r\n".to_vec()
        );
    }

    /// parse(encode(x)) == x for arbitrary values, and any prefix is "incomplete".
    #[test]
    fn property_frames_round_trip() {
        let mut g = Gen(0x1234_5678_9abc_def1);
        for _ in 0..2000 {
            let frame = g.frame(0);
            let bytes = frame.to_bytes();
            assert_eq!(
                decode_frame(&bytes),
                Ok(Some((frame.clone(), bytes.len()))),
                "{frame:?}"
            );
            let cut = g.below(bytes.len());
            assert_eq!(
                decode_frame(&bytes[..cut]),
                Ok(None),
                "{frame:?} cut at {cut}"
            );
        }
    }

    /// Pipelined commands parse the same whether they arrive at once or split at every byte.
    #[test]
    fn property_commands_round_trip_at_every_split() {
        let mut g = Gen(0xfeed_beef_cafe_f00d);
        for _ in 0..300 {
            let commands: Vec<Command> = (0..1 + g.below(3)).map(|_| g.command()).collect();
            let input: Vec<u8> = commands.iter().flat_map(|c| encode_command(c)).collect();
            assert_eq!(parse_all(&input, &[]), (commands.clone(), None));
            for cut in 0..=input.len() {
                assert_eq!(
                    parse_all(&input, &[cut]),
                    (commands.clone(), None),
                    "cut {cut}"
                );
            }
            let ones: Vec<usize> = (1..input.len()).collect();
            assert_eq!(parse_all(&input, &ones), (commands, None));
        }
    }

    /// Arbitrary bytes never panic, and the outcome (commands, then maybe an error) does not
    /// depend on how the bytes were split.
    #[test]
    fn property_arbitrary_bytes_never_panic_and_split_invariantly() {
        let mut g = Gen(0x0bad_5eed_0000_0001);
        let alphabet = b"*$:+-\r\n0123456789 \"'\\xaAb";
        for round in 0..3000 {
            let len = g.below(80);
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    if round % 3 == 0 {
                        g.next() as u8
                    } else {
                        alphabet[g.below(alphabet.len())]
                    }
                })
                .collect();
            let whole = parse_all(&input, &[]);
            let mut cuts: Vec<usize> = (0..g.below(6)).map(|_| g.below(len + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(parse_all(&input, &cuts), whole, "{input:?} cut at {cuts:?}");
            let _ = decode_frame(&input);
        }
    }

    #[test]
    fn reads_a_large_bulk_arriving_in_pieces() {
        let value = vec![7u8; 3 << 20];
        let input = encode_command(&[b"SET".as_slice(), b"k", &value]);
        let mut parser = CommandParser::default();
        let mut got = None;
        for chunk in input.chunks(100_000) {
            parser.read_buffer().extend_from_slice(chunk);
            if let Some(command) = parser.next_command().expect("valid") {
                got = Some(command);
            }
        }
        assert_eq!(got, Some(vec![b"SET".to_vec(), b"k".to_vec(), value]));
        assert_eq!(parser.buffered(), 0);
    }
}
