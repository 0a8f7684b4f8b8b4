//! Finds where an HTTP/1 request head ends in bytes that arrive in pieces, and counts its
//! length, without buffering anything: the connection guard uses it to know when the head
//! phase of a request is over. It also checks the request line's shape (RFC 9112 §3: method,
//! one space, target, one space, version), which Pingora does not: it percent-encodes spaces
//! and control bytes it finds in a target and forwards the result, and answers a malformed
//! target with a bare 400 of its own.

use crate::request_target::{self, Classified, PathError, Refusal};

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

/// How many bytes of a request target are kept: enough to classify any acceptable
/// absolute-form target (scheme, `://`, a host of at most 254 bytes and a port), and to show
/// the target in the log line of a refusal.
pub const KEPT_TARGET: usize = 512;

const VERSION_PREFIX: &[u8] = b"HTTP/";
const CONNECT: &[u8] = b"CONNECT";

/// The refusal for a request line that is not `METHOD SP target SP HTTP/x.y`.
const BAD_LINE: Refusal = Refusal::BadTarget(
    "the request line must be the method, one space, the target, one space and the version, \
     with no other whitespace or control bytes",
);

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
    /// The target reached its `?`: what follows is the query, not the path.
    in_query: bool,
    /// Bytes of the method seen, and whether they are `CONNECT` so far.
    method_len: usize,
    connect: bool,
    /// Bytes of the version seen (after the second space).
    version_len: usize,
    /// Why the line is refused, as soon as that is known (the first reason found).
    refusal: Option<Refusal>,
    /// The start of the target.
    target: [u8; KEPT_TARGET],
    /// Bytes of the target seen (more than `KEPT_TARGET` when it was cut).
    target_len: usize,
}

impl Default for RequestLine {
    fn default() -> Self {
        RequestLine {
            spaces: 0,
            after_space: true,
            cr: false,
            done: false,
            in_query: false,
            method_len: 0,
            connect: true,
            version_len: 0,
            refusal: None,
            target: [0; KEPT_TARGET],
            target_len: 0,
        }
    }
}

impl RequestLine {
    fn refuse(&mut self, refusal: Refusal) {
        self.refusal.get_or_insert(refusal);
    }

    /// One byte of the request line.
    fn feed(&mut self, b: u8) {
        if self.cr && b != b'\n' {
            self.refuse(BAD_LINE);
        }
        match b {
            b'\n' => {
                self.done = true;
                if self.spaces != 2 || self.after_space {
                    self.refuse(BAD_LINE);
                }
                self.check_target();
            }
            b'\r' => self.cr = true,
            b' ' => {
                if self.after_space || self.spaces == 2 {
                    self.refuse(BAD_LINE);
                }
                // Saturating: a line of spaces must not wrap the count back to a valid one.
                self.spaces = self.spaces.saturating_add(1);
                self.after_space = true;
            }
            _ => {
                if b < 0x20 || b == 0x7f {
                    self.refuse(BAD_LINE);
                }
                self.after_space = false;
                match self.spaces {
                    0 => {
                        self.connect &= CONNECT.get(self.method_len) == Some(&b);
                        self.method_len += 1;
                    }
                    1 => self.target_byte(b),
                    2 => self.version_byte(b),
                    _ => {}
                }
            }
        }
    }

    /// Feeds the leading run of visible ASCII bytes (`!` to `~`) of `bytes`, with the same
    /// effect as feeding them one by one; returns how many it took (none while a CR awaits its
    /// LF, or after the version: the byte-by-byte path decides those).
    fn feed_visible(&mut self, bytes: &[u8]) -> usize {
        if self.cr || self.spaces > 2 {
            return 0;
        }
        let run = bytes
            .iter()
            .position(|b| !(0x21..=0x7e).contains(b))
            .unwrap_or(bytes.len());
        let run_bytes = &bytes[..run];
        if run == 0 {
            return 0;
        }
        match self.spaces {
            0 => {
                let expected = CONNECT.get(self.method_len..).unwrap_or_default();
                self.connect &= expected.starts_with(run_bytes);
                self.method_len += run;
            }
            1 => {
                // Past KEPT_TARGET nothing more is kept (target_len keeps counting).
                let start = self.target_len.min(KEPT_TARGET);
                let room = (KEPT_TARGET - start).min(run);
                self.target[start..start + room].copy_from_slice(&run_bytes[..room]);
                self.target_len += run;
                self.in_query |= run_bytes.contains(&b'?');
            }
            _ => {
                for &b in run_bytes {
                    self.version_byte(b);
                }
            }
        }
        self.after_space = false;
        run
    }

    /// `HTTP/` and digits: a space inside the target shows here at once.
    fn version_byte(&mut self, b: u8) {
        let fits = match VERSION_PREFIX.get(self.version_len) {
            Some(&expected) => b == expected,
            None => b.is_ascii_digit() || b == b'.',
        };
        if !fits {
            self.refuse(BAD_LINE);
        }
        self.version_len += 1;
    }

    fn target_byte(&mut self, b: u8) {
        if let Some(slot) = self.target.get_mut(self.target_len) {
            *slot = b;
        }
        self.target_len += 1;
        self.in_query |= b == b'?';
        if b >= 0x80 && !self.in_query {
            self.refuse(Refusal::BadPath(PathError::NonAscii));
        }
    }

    /// At the end of the line: a target other than a path must be an http(s) URL with a plain
    /// host (Pingora would refuse the rest with a bare 400, or keep a non-path target for the
    /// wire while its URI says `/`).
    fn check_target(&mut self) {
        if self.connect && self.method_len == CONNECT.len() {
            // An authority-form target; Pingora refuses the method itself (405).
            return;
        }
        let kept = &self.target[..self.target_len.min(KEPT_TARGET)];
        match request_target::classify(kept) {
            Ok(Classified::Absolute { path_and_query, .. })
                if path_and_query.is_empty() && self.target_len > KEPT_TARGET =>
            {
                // The authority runs past what an acceptable host can be.
                self.refuse(Refusal::BadHost);
            }
            Ok(_) => {}
            Err(refusal) => self.refuse(refusal),
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
        let mut i = 0;
        // Up to the end of the request line every byte is checked: runs of visible ASCII in
        // the method, target or version at once, the rest (separators, line end, anything
        // suspicious) byte by byte.
        while i < bytes.len() && !(self.started && self.request_line.done) {
            if self.started {
                let run = self.request_line.feed_visible(&bytes[i..]);
                if run > 0 {
                    self.line_empty = false;
                    i += run;
                    continue;
                }
            }
            let ended = self.feed_byte(bytes[i]);
            i += 1;
            if ended {
                self.len += i as u64;
                return Some(i);
            }
        }
        // Then line by line: only an empty line (nothing but CRs before its LF) matters, so
        // the header lines are skipped with memchr rather than looked at byte by byte.
        while i < bytes.len() {
            let rest = &bytes[i..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                self.line_empty &= rest.iter().all(|&b| b == b'\r');
                break;
            };
            if self.line_empty && rest[..lf].iter().all(|&b| b == b'\r') {
                self.len += (i + lf + 1) as u64;
                return Some(i + lf + 1);
            }
            self.line_empty = true;
            i += lf + 1;
        }
        self.len += bytes.len() as u64;
        None
    }

    /// One byte before the end of the request line; true when it ends the head (which can
    /// only happen after the request line, see `feed`).
    fn feed_byte(&mut self, b: u8) -> bool {
        if self.started && !self.request_line.done {
            self.request_line.feed(b);
        }
        match b {
            b'\n' if self.started && self.line_empty => return true,
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
        false
    }

    /// Bytes of the head fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Why the request line is refused, if it is: stray whitespace (a space too many, a tab,
    /// a bare CR), a control byte, no two separators, raw bytes outside ASCII in the path
    /// (known as soon as the byte arrives); a target that is neither a path nor an http(s) URL
    /// with a plain host (known at the end of the line).
    pub fn request_line_refusal(&self) -> Option<Refusal> {
        self.request_line.refusal
    }

    /// The first bytes of the request target, as received.
    pub fn target(&self) -> &[u8] {
        let line = &self.request_line;
        &line.target[..line.target_len.min(KEPT_TARGET)]
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

    fn refusal(input: &[u8]) -> Option<Refusal> {
        let mut s = HeadScanner::new();
        s.feed(input);
        s.request_line_refusal()
    }

    fn bad_line(input: &[u8]) -> bool {
        refusal(input).is_some()
    }

    #[test]
    fn a_well_formed_request_line_passes() {
        assert!(!bad_line(b"GET /a?b=c HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!bad_line(b"\r\nGET / HTTP/1.0\n\n"));
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
        assert_eq!(refusal(b"GET /a\x01"), Some(BAD_LINE));
    }

    #[test]
    fn targets_that_are_not_paths_or_urls_are_caught_at_the_end_of_the_line() {
        assert_eq!(refusal(b"GET x:/admin HTTP/1.1"), None);
        assert!(matches!(
            refusal(b"GET x:/admin HTTP/1.1\r\n"),
            Some(Refusal::BadTarget(_))
        ));
        assert!(matches!(
            refusal(b"GET #/admin HTTP/1.1\r\n"),
            Some(Refusal::BadTarget(_))
        ));
        assert_eq!(
            refusal(b"GET http://u@a.example/ HTTP/1.1\r\n"),
            Some(Refusal::BadHost)
        );
        assert_eq!(refusal(b"GET http://a.example/x HTTP/1.1\r\n"), None);
        assert_eq!(refusal(b"OPTIONS * HTTP/1.1\r\n"), None);
        assert_eq!(refusal(b"CONNECT a.example:443 HTTP/1.1\r\n"), None);
        assert!(refusal(b"CONNECTX a.example:443 HTTP/1.1\r\n").is_some());
        let mut long = b"GET http://".to_vec();
        long.extend_from_slice(&[b'a'; 600]);
        long.extend_from_slice(b" HTTP/1.1\r\n");
        assert_eq!(refusal(&long), Some(Refusal::BadHost));
    }

    #[test]
    fn a_request_line_of_many_spaces_stays_refused() {
        // Found by the edge_head fuzz target: the space count overflowed after 255.
        let line = format!("GET /a{}HTTP/1.1\r\n", " ".repeat(300));
        assert!(bad_line(line.as_bytes()));
    }

    #[test]
    fn a_long_target_arriving_in_several_reads_is_scanned() {
        // Found by the edge_head fuzz target: a second run of target bytes after the kept
        // start was full sliced past the end of it (a panic on client input).
        let target = format!("/{}", "a".repeat(KEPT_TARGET + 100));
        let line = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let bytes = line.as_bytes();
        for cut in [KEPT_TARGET, KEPT_TARGET + 10, KEPT_TARGET + 50] {
            let mut s = HeadScanner::new();
            s.feed(&bytes[..cut]);
            s.feed(&bytes[cut..cut + 40]);
            s.feed(&bytes[cut + 40..]);
            assert_eq!(s.request_line_refusal(), None, "cut at {cut}");
        }
    }

    #[test]
    fn raw_bytes_outside_ascii_are_refused_in_the_path_only() {
        assert_eq!(
            refusal(b"GET /caf\xc3\xa9 HTTP/1.1\r\n"),
            Some(Refusal::BadPath(PathError::NonAscii))
        );
        assert_eq!(refusal(b"GET /s?q=caf\xc3\xa9 HTTP/1.1\r\n"), None);
    }

    #[test]
    fn the_target_is_kept_for_the_log() {
        let mut s = HeadScanner::new();
        s.feed(b"GET /api/a b HTTP/1.1\r\n");
        assert_eq!(s.target(), b"/api/a");
        let mut long = HeadScanner::new();
        long.feed(b"GET /");
        long.feed(&[b'x'; 1000]);
        assert_eq!(long.target().len(), KEPT_TARGET);
    }

    #[test]
    fn leading_empty_lines_do_not_end_the_head() {
        let mut s = HeadScanner::new();
        assert_eq!(s.feed(b"\r\n\r\n\n"), None);
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(s.len(), 23);
    }

    /// The scanner fed one byte at a time through the byte-by-byte path only.
    fn bytewise(input: &[u8]) -> (Option<usize>, HeadScanner) {
        let mut s = HeadScanner::new();
        for (i, &b) in input.iter().enumerate() {
            if s.started && s.request_line.done {
                s.len += i as u64;
                let end = s.feed(&input[i..]).map(|n| i + n);
                return (end, s);
            }
            if s.feed_byte(b) {
                s.len += i as u64 + 1;
                return (Some(i + 1), s);
            }
        }
        s.len += input.len() as u64;
        (None, s)
    }

    proptest::proptest! {
        /// Runs of visible bytes fed at once leave the scanner exactly as byte by byte does,
        /// whatever the pieces.
        #[test]
        fn runs_and_single_bytes_agree(
            line in proptest::collection::vec(
                proptest::sample::select(
                    b"GETCONNECT /?%aZ~ \t\r\nHTTP/1.0\x00\x7f\x80\xff:#".to_vec()
                ),
                0..60,
            ),
            piece in 1usize..8,
        ) {
            let (want_end, want) = bytewise(&line);
            let mut s = HeadScanner::new();
            let mut end = None;
            let mut at = 0;
            for chunk in line.chunks(piece) {
                if let Some(n) = s.feed(chunk) {
                    end = Some(at + n);
                    break;
                }
                at += chunk.len();
            }
            proptest::prop_assert_eq!(end, want_end);
            proptest::prop_assert_eq!(s.len(), want.len());
            proptest::prop_assert_eq!(s.request_line_refusal(), want.request_line_refusal());
            proptest::prop_assert_eq!(s.target(), want.target());
            proptest::prop_assert_eq!(s.request_line.connect, want.request_line.connect);
            proptest::prop_assert_eq!(s.request_line.in_query, want.request_line.in_query);
        }
    }

    #[test]
    fn works_across_pieces_of_any_size() {
        for head in [
            &b"GET /a HTTP/1.1\r\nHost: example.com\r\nX-Long: abc\r\n\r\nBODY"[..],
            b"GET /a HTTP/1.1\nHost: example.com\r\r\nX: \r\r\n\r\r\nBODY",
        ] {
            pieces_of_any_size(head);
        }
    }

    fn pieces_of_any_size(head: &[u8]) {
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
