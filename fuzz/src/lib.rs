//! What the fuzz targets share: how an input is cut into fields. Fields are separated by the
//! byte 0xFF, which occurs in no UTF-8 text, so a seed is readable text with `\xff` between
//! its fields (`printf 'GET\xff/a/../b' > seeds/...`) and the fuzzer can still grow any field.

/// The first `N` fields of `data` (missing ones empty; the last one takes the rest, 0xFF
/// bytes included).
pub fn fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for (i, field) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *field = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0xFF) {
            Some(at) => {
                *field = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *field = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out
}

/// A field as text; invalid UTF-8 is read lossily (the targets want strings to reach the
/// parsers behind them, not to test UTF-8 validation).
pub fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

/// Bit `n` of a flags field (its first byte; no byte: all bits clear).
pub fn flag(field: &[u8], n: u8) -> bool {
    field.first().is_some_and(|b| b & (1 << n) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_on_ff_and_the_last_takes_the_rest() {
        assert_eq!(fields::<3>(b"a\xffb\xffc\xffd"), [&b"a"[..], b"b", b"c\xffd"]);
        assert_eq!(fields::<3>(b"a"), [&b"a"[..], b"", b""]);
    }
}
