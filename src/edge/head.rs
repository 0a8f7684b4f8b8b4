//! Finds where an HTTP/1 request head ends in bytes that arrive in pieces, and counts its
//! length, without buffering anything: the connection guard uses it to know when the head
//! phase of a request is over.

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
            match b {
                b'\n' if self.started && self.line_empty => {
                    self.len += i as u64 + 1;
                    return Some(i + 1);
                }
                b'\n' => self.line_empty = true,
                b'\r' => {}
                _ => {
                    self.started = true;
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
