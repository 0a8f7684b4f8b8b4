//! Finds where an HTTP/1 request head ends in bytes that arrive in pieces, and counts its
//! length, without buffering anything: the connection guard uses it to know when the head
//! phase of a request is over. It also checks the request line's shape (RFC 9112 §3: method,
//! one space, target, one space, version), which Pingora does not: it percent-encodes spaces
//! and control bytes it finds in a target and forwards the result.

/// Scans the bytes of one request head.
///
/// The head ends at the first empty line after the request line started: `\r\n\r\n`, or the
/// bare `\n\n` / `\r\n\n` forms that Pingora's parser (httparse) also accepts. Empty lines
/// before the request line (allowed by RFC 9112 §2.2) do not end it, so a client cannot slip
/// past the limits by sending a blank line first.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Bytes of the head seen so far (leading empty lines included).
    len: u64,
    /// A byte other than CR or LF was seen: the request line started.
    started: bool,
    /// The current line has had only CRs so far (it is empty if a LF comes next).
    line_empty: bool,
    request_line: RequestLine,
}

/// How many bytes of a request target are kept to show in the log line of a refusal.
pub const SHOWN_TARGET: usize = 256;

const VERSION_PREFIX: &[u8] = b"HTTP/";

/// The request line while it arrives.
#[derive(Debug, Clone)]
struct RequestLine {
    /// Spaces seen (the separators).
    spaces: u8,
    /// The previous byte was a space (or the line just started): another space is stray.
    after_space: bool,
    /// A CR that must be followed by the line's LF.
    cr: bool,
    /// The line ended (its LF was seen).
    done: bool,
    /// The line is malformed.
    bad: bool,
    /// Bytes of the version seen (after the second space).
    version_len: usize,
    /// The start of the target, for the log.
    target: [u8; SHOWN_TARGET],
    target_len: usize,
}

impl Default for RequestLine {
    fn default() -> Self {
        RequestLine {
            spaces: 0,
            after_space: true,
            cr: false,
            done: false,
            bad: false,
            version_len: 0,
            target: [0; SHOWN_TARGET],
            target_len: 0,
        }
    }
}

impl RequestLine {
    /// One byte of the request line.
    fn feed(&mut self, b: u8) {
        if self.cr && b != b'\n' {
            self.bad = true;
        }
        match b {
            b'\n' => {
                self.done = true;
                self.bad |= self.spaces != 2 || self.after_space;
            }
            b'\r' => self.cr = true,
            b' ' => {
                self.bad |= self.after_space || self.spaces == 2;
                self.spaces += 1;
                self.after_space = true;
            }
            0..=0x1f | 0x7f => self.bad = true,
            _ => {
                self.after_space = false;
                if self.spaces == 1 && self.target_len < SHOWN_TARGET {
                    self.target[self.target_len] = b;
                    self.target_len += 1;
                }
                if self.spaces == 2 {
                    // `HTTP/` and digits: a space inside the target shows here at once.
                    let fits = match VERSION_PREFIX.get(self.version_len) {
                        Some(&expected) => b == expected,
                        None => b.is_ascii_digit() || b == b'.',
                    };
                    self.bad |= !fits;
                    self.version_len += 1;
                }
            }
        }
    }
}

impl HeadScanner {
    pub fn new() -> HeadScanner {
        HeadScanner::default()
    }

    /// Feeds the next bytes. Returns `Some(n)` when the head ends with the `n`-th byte of
    /// `bytes` (the rest belongs to the body or the next request); then `len()` is the size of
    /// the whole head.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.started && !self.request_line.done {
                self.request_line.feed(b);
            }
            match b {
                b'\n' if self.started && self.line_empty => {
                    self.len += i as u64 + 1;
                    return Some(i + 1);
                }
                b'\n' => self.line_empty = true,
                b'\r' => {}
                _ => {
                    if !self.started {
                        self.started = true;
                        self.request_line.feed(b);
                    }
                    self.line_empty = false;
                }
            }
        }
        self.len += bytes.len() as u64;
        None
    }

    /// Bytes of the head fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The request line has stray whitespace (a space too many, a tab, a bare CR) or a
    /// control byte, or lacks its two separators. Known as soon as the byte arrives.
    pub fn bad_request_line(&self) -> bool {
        self.request_line.bad
    }

    /// The first bytes of the request target, as received.
    pub fn target(&self) -> &[u8] {
        &self.request_line.target[..self.request_line.target_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(input: &[u8]) -> Option<usize> {
        HeadScanner::new().feed(input)
    }

    #[test]
    fn finds_the_end_of_a_head() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(end_of(head), Some(head.len()));
        let with_body = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(end_of(with_body), Some(with_body.len() - 2));
        assert_eq!(end_of(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        assert_eq!(end_of(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    fn bad_line(input: &[u8]) -> bool {
        let mut s = HeadScanner::new();
        s.feed(input);
        s.bad_request_line()
    }

    #[test]
    fn a_well_formed_request_line_passes() {
        assert!(!bad_line(b"GET /a?b=c HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!bad_line(b"\r\nGET / HTTP/1.0\n\n"));
        assert!(!bad_line(b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"));
        // Only the request line is checked: header values may hold spaces and tabs.
        assert!(!bad_line(b"GET / HTTP/1.1\r\nX-A: b c\td\r\n\r\n"));
    }

    #[test]
    fn stray_whitespace_and_control_bytes_in_the_request_line_are_caught() {
        for line in [
            &b"GET /api/a b HTTP/1.1\r\n"[..],
            b"GET  /a HTTP/1.1\r\n",
            b"GET /a  HTTP/1.1\r\n",
            b" GET /a HTTP/1.1\r\n",
            b"GET /a HTTP/1.1 \r\n",
            b"GET\t/a HTTP/1.1\r\n",
            b"GET /a\tb HTTP/1.1\r\n",
            b"GET /a\x00b HTTP/1.1\r\n",
            b"GET /a\x0bb HTTP/1.1\r\n",
            b"GET /a\rb HTTP/1.1\r\n",
            b"GET /a\x7f HTTP/1.1\r\n",
            b"GET /a\r\n",
            b"GET\r\n",
        ] {
            assert!(bad_line(line), "{}", line.escape_ascii());
        }
        // Known at the bad byte, before the line ends.
        assert!(bad_line(b"GET /a b"));
    }

    #[test]
    fn the_target_is_kept_for_the_log() {
        let mut s = HeadScanner::new();
        s.feed(b"GET /api/a b HTTP/1.1\r\n");
        assert_eq!(s.target(), b"/api/a");
        let mut long = HeadScanner::new();
        long.feed(b"GET /");
        long.feed(&[b'x'; 1000]);
        assert_eq!(long.target().len(), SHOWN_TARGET);
    }

    #[test]
    fn leading_empty_lines_do_not_end_the_head() {
        let mut s = HeadScanner::new();
        assert_eq!(s.feed(b"\r\n\r\n\n"), None);
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(s.len(), 23);
    }

    #[test]
    fn works_across_pieces_of_any_size() {
        let head = b"GET /a HTTP/1.1\r\nHost: example.com\r\nX-Long: abc\r\n\r\nBODY";
        let end = head.len() - 4;
        for piece in 1..=head.len() {
            let mut s = HeadScanner::new();
            let mut found = None;
            for (i, chunk) in head.chunks(piece).enumerate() {
                if let Some(n) = s.feed(chunk) {
                    found = Some(i * piece + n);
                    break;
                }
            }
            assert_eq!(found, Some(end), "piece size {piece}");
            assert_eq!(s.len(), end as u64);
        }
    }
}
