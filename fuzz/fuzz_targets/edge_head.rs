//! The edge guard's head scanner (`src/edge/head.rs`) on arbitrary bytes cut into arbitrary
//! pieces, as a client can send them.
//!
//! Besides "no panic": where the head ends, its length and the verdict on the request line do
//! not depend on how the bytes were cut, and the end is the one a plain line-by-line reading
//! finds (the first empty line after the request line started).
//!
//! Input: `CUTS \xff BYTES`: each byte of CUTS is the length of the next piece (modulo what is
//! left, plus one); the last piece takes the rest.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::edge::HeadScanner;

/// What a scan found: where the head ended (bytes from the start), the scanner's length and
/// refusal, and the kept start of the target.
#[derive(Debug, PartialEq)]
struct Scan {
    end: Option<usize>,
    len: u64,
    refusal: Option<String>,
    target: Vec<u8>,
}

fn scan(bytes: &[u8], pieces: impl Iterator<Item = usize>) -> Scan {
    let mut scanner = HeadScanner::new();
    let mut at = 0;
    let mut end = None;
    for size in pieces {
        let piece = &bytes[at..at + size];
        if let Some(n) = scanner.feed(piece) {
            assert!(n >= 1 && n <= piece.len(), "end {n} outside the piece");
            end = Some(at + n);
            break;
        }
        at += size;
    }
    Scan {
        end,
        len: scanner.len(),
        refusal: scanner.request_line_refusal().map(|r| format!("{r:?}")),
        target: scanner.target().to_vec(),
    }
}

/// The end of the head by the definition, one line at a time.
fn reference_end(bytes: &[u8]) -> Option<usize> {
    let start = bytes.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut line_start = start + bytes[start..].iter().position(|&b| b == b'\n')? + 1;
    loop {
        let lf = line_start + bytes[line_start..].iter().position(|&b| b == b'\n')?;
        if bytes[line_start..lf].iter().all(|&b| b == b'\r') {
            return Some(lf + 1);
        }
        line_start = lf + 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let [cuts, bytes] = tollgate_fuzz::fields(data);
    let whole = scan(bytes, std::iter::once(bytes.len()));
    assert_eq!(whole.end, reference_end(bytes), "end of head in {bytes:?}");
    if let Some(end) = whole.end {
        assert_eq!(whole.len, end as u64);
    } else {
        assert_eq!(whole.len, bytes.len() as u64);
    }

    let mut left = bytes.len();
    let mut cut_sizes = cuts.iter();
    let pieces = std::iter::from_fn(|| {
        if left == 0 {
            return None;
        }
        let size = cut_sizes.next().map_or(left, |&c| usize::from(c) % left + 1);
        left -= size;
        Some(size)
    });
    let cut = scan(bytes, pieces);
    assert_eq!(cut, whole, "cut into pieces {cuts:?}");
});
