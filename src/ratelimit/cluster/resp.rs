//! The slice of the Redis protocol (RESP2) the cluster limiter speaks: commands out as arrays of
//! bulk strings, replies in, parsed incrementally with every size bounded, since a reply is
//! bytes from the network like any other.

/// Largest reply accepted, in bytes; a script reply is 4 integers per limit, far below this.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
/// Most elements in one array reply.
const MAX_ARRAY_LEN: usize = 4096;
/// Deepest nesting of arrays accepted (the limiter's replies are flat).
const MAX_DEPTH: usize = 4;

/// One reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other status lines.
    Status(String),
    /// `-ERR ...`: the command failed.
    Error(String),
    Integer(i64),
    /// A bulk string; `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array.
    Array(Option<Vec<Reply>>),
}

/// Bytes that are not a RESP2 reply (or one beyond the bounds above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed reply from Redis: {}", self.0)
    }
}

/// A command as Redis reads it: an array of bulk strings, written straight into one buffer.
pub struct Command {
    bytes: Vec<u8>,
}

impl Command {
    /// A command of `args` arguments (the command name included); `capacity` is a size hint.
    pub fn new(args: usize, capacity: usize) -> Command {
        let mut bytes = Vec::with_capacity(capacity + 16 * args + 16);
        bytes.push(b'*');
        bytes.extend_from_slice(itoa::Buffer::new().format(args).as_bytes());
        bytes.extend_from_slice(b"\r\n");
        Command { bytes }
    }

    pub fn arg(&mut self, arg: &[u8]) -> &mut Command {
        self.bytes.push(b'$');
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        self.bytes.extend_from_slice(arg);
        self.bytes.extend_from_slice(b"\r\n");
        self
    }

    /// An integer argument, in decimal.
    pub fn int(&mut self, n: u64) -> &mut Command {
        self.arg(itoa::Buffer::new().format(n).as_bytes())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A whole command at once.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut command = Command::new(args.len(), args.iter().map(|a| a.len()).sum());
    for arg in args {
        command.arg(arg);
    }
    command.into_bytes()
}

/// Parses one reply from the front of `buf`: `Ok(Some((reply, bytes used)))`, or `Ok(None)`
/// when the reply is not complete yet (read more and call again).
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut at = 0;
    Ok(parse_at(buf, &mut at, 0)?.map(|reply| (reply, at)))
}

fn parse_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    let Some(line) = line(buf, *at)? else {
        return Ok(None);
    };
    let start = *at;
    let (kind, body) = (line[0], &line[1..]);
    let after_line = start + line.len() + 2;
    let reply = match kind {
        b'+' => Reply::Status(text(body)),
        b'-' => Reply::Error(text(body)),
        b':' => Reply::Integer(integer(body)?),
        b'$' => {
            let Some(len) = length(body, MAX_REPLY_BYTES)? else {
                *at = after_line;
                return Ok(Some(Reply::Bulk(None)));
            };
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without its CRLF".into()));
            }
            *at = end + 2;
            return Ok(Some(Reply::Bulk(Some(buf[after_line..end].to_vec()))));
        }
        b'*' => {
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deeply".into()));
            }
            let Some(len) = length(body, MAX_ARRAY_LEN)? else {
                *at = after_line;
                return Ok(Some(Reply::Array(None)));
            };
            *at = after_line;
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                match parse_at(buf, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => {
                        *at = start;
                        return Ok(None);
                    }
                }
            }
            return Ok(Some(Reply::Array(Some(items))));
        }
        other => {
            return Err(ProtocolError(format!(
                "unknown reply type byte 0x{other:02x}"
            )))
        }
    };
    *at = after_line;
    Ok(Some(reply))
}

/// The line starting at `at`, without its CRLF; `None` when its end has not arrived yet.
fn line(buf: &[u8], at: usize) -> Result<Option<&[u8]>, ProtocolError> {
    let rest = &buf[at.min(buf.len())..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(0) => Err(ProtocolError("empty line".into())),
        Some(end) => Ok(Some(&rest[..end])),
        None if rest.len() > MAX_REPLY_BYTES => Err(ProtocolError("line too long".into())),
        None => Ok(None),
    }
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn integer(body: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ProtocolError("an integer that does not parse".into()))
}

/// A bulk or array length: `None` for -1 (null), an error past `max` or below -1.
fn length(body: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match integer(body)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        n => Err(ProtocolError(format!("length {n} out of bounds"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Reply {
        let (reply, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        reply
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"EVALSHA", b"ab", b"0"]),
            b"*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n0\r\n"
        );
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Status("OK".into()));
        assert_eq!(
            whole(b"-NOSCRIPT No matching script\r\n"),
            Reply::Error("NOSCRIPT No matching script".into())
        );
        assert_eq!(whole(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(
            whole(b"$3\r\na\r\n\r\n"),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(whole(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(whole(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            whole(b"*2\r\n:1\r\n*1\r\n$0\r\n\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![Reply::Bulk(Some(Vec::new()))]))
            ]))
        );
    }

    #[test]
    fn a_reply_split_anywhere_is_incomplete_until_its_last_byte() {
        let bytes = b"*3\r\n:1\r\n$5\r\nhello\r\n+OK\r\n";
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let mut two = bytes.to_vec();
        two.extend_from_slice(b":7\r\n");
        let (_, used) = parse(&two).unwrap().unwrap();
        assert_eq!(used, bytes.len(), "the next reply is left in the buffer");
    }

    #[test]
    fn hostile_replies_are_errors_not_panics_or_huge_allocations() {
        for bad in [
            &b"?1\r\n"[..],
            b"\r\n",
            b":12x\r\n",
            b"$-2\r\n",
            b"$99999999999\r\n",
            b"*99999999\r\n",
            b"$3\r\nabcXY",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let endless = vec![b'+'; MAX_REPLY_BYTES + 2];
        assert!(parse(&endless).is_err());
    }
}
