//! Path normalisation (RFC 3986 §6.2.2): one pass over the path of a request target that either
//! refuses it or yields the one form the gateway routes, checks, logs and forwards.
//!
//! Decoded: percent-encoded unreserved characters (`%61` → `a`). Upper-cased: the hex digits of
//! every other percent-encoding (`%3b` → `%3B`). Merged (`merge_slashes`): `//` → `/`. Refused:
//! dot segments (also encoded), backslashes and control characters (raw or encoded), raw bytes
//! outside ASCII, `%` not followed by two hex digits. Kept but flagged: `%2F` (the matched route
//! decides), and whatever a lenient backend could read differently (`%`, `;`, `//`, capitals,
//! a segment ending in `.`), so the caller can check that reading against the route table too.
//!
//! A path already in normal form is returned borrowed: nothing is allocated for it.

use std::borrow::Cow;

/// Why a path is refused. Every variant is a 400 (`bad_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadPercent,
    /// A control character or space, raw or percent-encoded (NUL included).
    Control,
    /// `\`, raw or `%5C`: some servers read it as `/`.
    Backslash,
    /// A raw byte outside ASCII (clients percent-encode them).
    NonAscii,
    /// A `.` or `..` segment (also `%2E`): a backend resolving it would escape the route.
    DotSegment,
    /// A raw `#` (the fragment is not part of a request target).
    Fragment,
    /// `%2F` on a route that does not keep escaped slashes (`escaped_slashes = "reject"`).
    EscapedSlash,
    /// A lenient backend would read the path as another route's (or as no route's).
    Ambiguous,
    /// On a route with a `rewrite`: a segment a lenient backend reads as `.` or `..` (`..;`),
    /// which would resolve against the rewrite's literal text.
    HiddenDotSegment,
}

impl PathError {
    /// The `detail` of the 400 answer.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path must start with '/'",
            PathError::BadPercent => "the path has a '%' that is not followed by two hex digits",
            PathError::Control => "the path contains a control character or a space",
            PathError::Backslash => "the path contains a backslash",
            PathError::NonAscii => "the path contains bytes outside ASCII; percent-encode them",
            PathError::DotSegment => "the path contains '.' or '..' segments",
            PathError::Fragment => "the path contains '#'",
            PathError::EscapedSlash => "the path contains an encoded slash (%2F)",
            PathError::Ambiguous => {
                "the path reads as another route's once decoded (escapes, ';' or '//'); send it plainly"
            }
            PathError::HiddenDotSegment => {
                "the path has a segment that backends read as '.' or '..' once decoded and cut at ';' (such as '..;')"
            }
        }
    }
}

/// A path in normal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath<'a> {
    pub path: Cow<'a, str>,
    /// `%2F` occurs: a route that does not keep escaped slashes refuses the request.
    pub escaped_slash: bool,
    /// `%`, `;`, an empty segment, a capital letter or a segment ending in `.` remains: a
    /// lenient backend may read this path differently, so the route it would pick must be
    /// compared with the gateway's.
    pub lenient_differs: bool,
}

/// How a byte of a path is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Kept as is.
    Plain,
    Slash,
    Dot,
    Percent,
    /// Kept as is, but a lenient reading cuts the segment here (path parameters).
    Semicolon,
    Refused(PathError),
}

const fn class_of(b: u8) -> Class {
    match b {
        b'/' => Class::Slash,
        b'.' => Class::Dot,
        b'%' => Class::Percent,
        b';' => Class::Semicolon,
        b'\\' => Class::Refused(PathError::Backslash),
        b'#' => Class::Refused(PathError::Fragment),
        0..=0x20 | 0x7f => Class::Refused(PathError::Control),
        0x80..=0xff => Class::Refused(PathError::NonAscii),
        _ => Class::Plain,
    }
}

/// One lookup per byte on the hot path instead of a chain of comparisons.
static CLASSES: [Class; 256] = {
    let mut table = [Class::Plain; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = class_of(b as u8);
        b += 1;
    }
    table
};

/// RFC 3986 §2.3: characters that mean the same percent-encoded or not.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The two hex digits after a `%` at `at`, decoded.
pub(super) fn percent_at(bytes: &[u8], at: usize) -> Option<u8> {
    let hi = hex_value(*bytes.get(at + 1)?)?;
    let lo = hex_value(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The output, copied from the input only from the first byte that changes.
struct Output<'a> {
    input: &'a [u8],
    copy: Option<Vec<u8>>,
}

impl Output<'_> {
    /// Input bytes `..upto` are kept as they are; from now on the output is a copy.
    fn diverge(&mut self, upto: usize) -> &mut Vec<u8> {
        let input = self.input;
        self.copy.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(input.len());
            v.extend_from_slice(input.get(..upto).unwrap_or(input));
            v
        })
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(copy) = &mut self.copy {
            copy.extend_from_slice(bytes);
        }
    }
}

/// The segment being read: enough to recognise `.` and `..` and empty segments.
#[derive(Default)]
struct Segment {
    /// Characters in the segment (a decoded `%2E` counts as one).
    len: usize,
    dots: usize,
    /// The last character is a `.` (raw or `%2E`).
    ends_in_dot: bool,
}

impl Segment {
    fn is_dot_segment(&self) -> bool {
        self.len > 0 && self.len <= 2 && self.dots == self.len
    }
}

/// Normalises the path of a request target (`raw` is the part before `?`).
pub fn normalize(raw: &[u8], merge_slashes: bool) -> Result<NormalPath<'_>, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = Output {
        input: raw,
        copy: None,
    };
    let mut escaped_slash = false;
    let mut lenient_differs = false;
    let mut segment = Segment::default();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        match CLASSES[b as usize] {
            Class::Plain | Class::Semicolon => {
                // Case-insensitive backends read a capital as its small letter.
                lenient_differs |= b == b';' || b.is_ascii_uppercase();
                segment.len += 1;
                segment.ends_in_dot = false;
                out.push(&[b]);
                i += 1;
            }
            Class::Dot => {
                segment.len += 1;
                segment.dots += 1;
                segment.ends_in_dot = true;
                out.push(&[b]);
                i += 1;
            }
            Class::Slash => {
                if segment.is_dot_segment() {
                    return Err(PathError::DotSegment);
                }
                // IIS drops a segment's trailing dots.
                lenient_differs |= segment.ends_in_dot;
                let empty = i > 0 && segment.len == 0;
                if empty && merge_slashes {
                    out.diverge(i);
                } else {
                    lenient_differs |= empty;
                    out.push(b"/");
                }
                segment = Segment::default();
                i += 1;
            }
            Class::Percent => {
                let value = percent_at(raw, i).ok_or(PathError::BadPercent)?;
                segment.len += 1;
                segment.ends_in_dot = value == b'.';
                if is_unreserved(value) {
                    lenient_differs |= value.is_ascii_uppercase();
                    segment.dots += usize::from(value == b'.');
                    out.diverge(i).push(value);
                } else {
                    match value {
                        b'\\' => return Err(PathError::Backslash),
                        0..=0x1f | 0x7f => return Err(PathError::Control),
                        b'/' => escaped_slash = true,
                        _ => {}
                    }
                    lenient_differs = true;
                    let upper = [
                        b'%',
                        HEX_UPPER[usize::from(value >> 4)],
                        HEX_UPPER[usize::from(value & 0xf)],
                    ];
                    if raw.get(i..i + 3) == Some(&upper[..]) {
                        out.push(&upper);
                    } else {
                        out.diverge(i).extend_from_slice(&upper);
                    }
                }
                i += 3;
            }
            Class::Refused(error) => return Err(error),
        }
    }
    if segment.is_dot_segment() {
        return Err(PathError::DotSegment);
    }
    lenient_differs |= segment.ends_in_dot;
    let path = match out.copy {
        // Only ASCII was pushed (refused otherwise), so this cannot fail.
        Some(copy) => Cow::Owned(String::from_utf8(copy).map_err(|_| PathError::NonAscii)?),
        None => Cow::Borrowed(std::str::from_utf8(raw).map_err(|_| PathError::NonAscii)?),
    };
    Ok(NormalPath {
        path,
        escaped_slash,
        lenient_differs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, PathError> {
        normalize(raw.as_bytes(), true).map(|p| p.path.into_owned())
    }

    #[test]
    fn a_normal_path_is_borrowed() {
        for raw in [
            "/",
            "/a/b",
            "/v1/users/42",
            "/a-b_c~d.e",
            "/a:b@c!$&'()*+,=",
            "/a/",
        ] {
            let p = normalize(raw.as_bytes(), true).unwrap();
            assert!(matches!(p.path, Cow::Borrowed(_)), "{raw}");
            assert_eq!(p.path, raw);
            assert!(!p.lenient_differs && !p.escaped_slash, "{raw}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(norm("/%61dmin/secret").unwrap(), "/admin/secret");
        assert_eq!(norm("/%7Euser/%2D%5F").unwrap(), "/~user/-_");
        assert_eq!(norm("/a%3bb%c3%a9").unwrap(), "/a%3Bb%C3%A9");
        let kept = normalize(b"/a%3Bb", true).unwrap();
        assert!(matches!(kept.path, Cow::Borrowed(_)));
        assert!(kept.lenient_differs);
    }

    #[test]
    fn slashes_are_merged_unless_told_otherwise() {
        assert_eq!(norm("//admin//secret/").unwrap(), "/admin/secret/");
        assert_eq!(norm("///").unwrap(), "/");
        let kept = normalize(b"//admin", false).unwrap();
        assert_eq!(kept.path, "//admin");
        assert!(kept.lenient_differs);
    }

    #[test]
    fn escaped_slashes_are_kept_and_flagged() {
        let p = normalize(b"/admin%2fsecret", true).unwrap();
        assert_eq!(p.path, "/admin%2Fsecret");
        assert!(p.escaped_slash);
    }

    #[test]
    fn dangerous_paths_are_refused() {
        use PathError::*;
        for (raw, error) in [
            ("x:/admin", NotAbsolute),
            ("", NotAbsolute),
            ("/a/../b", DotSegment),
            ("/a/.", DotSegment),
            ("/..", DotSegment),
            ("/a/%2e%2E/b", DotSegment),
            ("/a/.%2e", DotSegment),
            ("/%2e/", DotSegment),
            ("/a%zz", BadPercent),
            ("/a%4", BadPercent),
            ("/a%", BadPercent),
            ("/a%00b", Control),
            ("/a%0d%0a", Control),
            ("/a%7f", Control),
            ("/a b", Control),
            ("/a\tb", Control),
            ("/a\\b", Backslash),
            ("/a%5cb", Backslash),
            ("/caf\u{e9}", NonAscii),
            ("/a#b", Fragment),
        ] {
            assert_eq!(norm(raw), Err(error), "{raw:?}");
        }
    }

    #[test]
    fn capitals_and_trailing_dots_are_flagged_for_the_lenient_reading() {
        for raw in [
            "/Admin/x",
            "/%41dmin/x",
            "/admin./x",
            "/a/b.",
            "/a/b%2E",
            "/a/...",
        ] {
            let p = normalize(raw.as_bytes(), true).unwrap();
            assert!(p.lenient_differs, "{raw}");
        }
        for raw in ["/admin/x", "/a.b/c", "/.well-known/x", "/v1.2/x"] {
            let p = normalize(raw.as_bytes(), true).unwrap();
            assert!(!p.lenient_differs, "{raw}");
        }
    }

    #[test]
    fn dots_inside_segments_are_fine() {
        for raw in ["/a/..b", "/a/b..", "/.well-known/x", "/a/...", "/v1.2/x"] {
            assert_eq!(norm(raw).unwrap(), raw);
        }
    }
}
