//! The answer of an aggregate route from its parts' results: one member per part (its answer
//! cut to `fields`, or merged at the root with `into = "."`), `null` for a failed optional
//! part, the meta member with each part's outcome; an `ETag` over the body and a
//! `Cache-Control` no looser than its strictest part. A failed required part gives an error
//! instead, never a partial body.

use super::run::{PartResult, Skip};
use super::{Aggregate, Outcome, Part};
use crate::problem::GatewayError;
use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// What the client gets.
#[derive(Debug)]
pub enum Verdict {
    Answer(Merged),
    /// A required part failed (502/504) or lacked a value from the request (400).
    Failed(GatewayError),
}

/// A merged answer.
#[derive(Debug)]
pub struct Merged {
    pub body: Bytes,
    /// A strong validator: a hash of the body.
    pub etag: String,
    pub cache_control: String,
    /// `Vary`: the client headers the answer was made from (the parts' own `Vary` and the
    /// `{header.NAME}` of their targets); `None`: none.
    pub vary: Option<String>,
    /// The failed optional parts, comma-separated (`x-tollgate-partial`); `None`: all answered.
    pub partial: Option<String>,
}

/// Builds the answer from `results` (one per part, in the aggregate's order).
pub fn merge(aggregate: &Aggregate, results: &[PartResult]) -> Verdict {
    for (part, result) in aggregate.parts.iter().zip(results) {
        if part.required && !result.outcome.answered() {
            let part = part.name.clone();
            return Verdict::Failed(if result.skip == Some(Skip::RequestValue) {
                GatewayError::PartInputMissing { part }
            } else {
                GatewayError::PartFailed {
                    part,
                    timed_out: result.outcome == Outcome::Timeout
                        || result.skip == Some(Skip::Deadline),
                }
            });
        }
    }
    let mut body = Map::new();
    let mut failed: Vec<&str> = Vec::new();
    for (part, result) in aggregate.parts.iter().zip(results) {
        if !result.outcome.answered() {
            failed.push(&part.name);
        }
        let value = result.value.as_ref().filter(|_| result.outcome.answered());
        place(&mut body, part, value);
    }
    // The tag covers the parts' content, not the meta member: its timings differ on every
    // request, and an unchanged answer must keep its tag for `If-None-Match` to work.
    let mut out = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let etag = etag(&out);
    if let Some(meta) = &aggregate.meta {
        let outcomes: Map<String, Value> = aggregate
            .parts
            .iter()
            .zip(results)
            .map(|(part, result)| (part.name.to_string(), meta_entry(result)))
            .collect();
        append_member(&mut out, meta, &Value::Object(outcomes));
    }
    let body = Bytes::from(out);
    let partial = (!failed.is_empty()).then(|| failed.join(","));
    Verdict::Answer(Merged {
        etag,
        cache_control: cache_control(aggregate, results, partial.is_some()),
        vary: vary(aggregate, results),
        body,
        partial,
    })
}

/// Puts a part's answer (or `null`) in the body.
fn place(body: &mut Map<String, Value>, part: &Part, value: Option<&Value>) {
    match (&part.fields, part.at_root) {
        (Some(fields), true) => {
            // The members are listed, so a failed part leaves each of them `null`.
            let kept = value.map(|v| keep(v, fields)).unwrap_or_default();
            for field in fields {
                let member = &field[0];
                body.insert(
                    member.clone(),
                    kept.get(member).cloned().unwrap_or(Value::Null),
                );
            }
        }
        (Some(fields), false) => {
            let kept = value.map(|v| Value::Object(keep(v, fields)));
            body.insert(part.name.to_string(), kept.unwrap_or(Value::Null));
        }
        (None, _) => {
            body.insert(part.name.to_string(), value.cloned().unwrap_or(Value::Null));
        }
    }
}

/// The members of `value` named by `fields` (dot paths), nested as they were. Members the
/// answer does not have are left out.
fn keep(value: &Value, fields: &[Vec<String>]) -> Map<String, Value> {
    let mut out = Map::new();
    for path in fields {
        let Some(found) = path.iter().try_fold(value, |v, member| v.get(member)) else {
            continue;
        };
        let (last, parents) = path.split_last().expect("fields are never empty paths");
        let mut slot = &mut out;
        for member in parents {
            let entry = slot
                .entry(member.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            slot = entry.as_object_mut().expect("made an object above");
        }
        slot.insert(last.clone(), found.clone());
    }
    out
}

/// Adds `"name": value` to the serialized object `out` (`{...}`), as its last member.
fn append_member(out: &mut Vec<u8>, name: &str, value: &Value) {
    if out.pop() != Some(b'}') {
        return;
    }
    if out.len() > 1 {
        out.push(b',');
    }
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, name);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, value);
    out.push(b'}');
}

/// `{"status": 200, "outcome": "ok", "ms": 12}`, with `age` for a cached or stale answer.
fn meta_entry(result: &PartResult) -> Value {
    let mut entry = Map::new();
    entry.insert(
        "status".into(),
        result.status.map_or(Value::Null, Value::from),
    );
    entry.insert("outcome".into(), Value::from(result.outcome.label()));
    entry.insert(
        "ms".into(),
        Value::from(u64::try_from(result.elapsed.as_millis()).unwrap_or(u64::MAX)),
    );
    if let Some(age) = result.age {
        entry.insert("age".into(), Value::from(age));
    }
    Value::Object(entry)
}

/// The answer's `Vary`: whatever the answered parts vary on, and the client headers their
/// targets were made from; sorted, so equal answers say it alike. A cache in front of the
/// gateway then keeps one answer per language (say), as it would for the parts themselves.
fn vary(aggregate: &Aggregate, results: &[PartResult]) -> Option<String> {
    let mut names: Vec<&str> = aggregate
        .template_headers
        .iter()
        .map(String::as_str)
        .chain(
            results
                .iter()
                .filter(|r| r.outcome.answered())
                .flat_map(|r| r.vary.iter().map(String::as_str)),
        )
        .collect();
    names.sort_unstable();
    names.dedup();
    (!names.is_empty()).then(|| names.join(", "))
}

/// `"<hex>"`: the first 128 bits of the body's SHA-256. The same body gives the same tag on
/// every instance, so a client's `If-None-Match` works behind a load balancer.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// `private, no-store` when the answer is for one caller; `no-store` when a part failed or
/// one forbids keeping its answer; else the smallest `max-age` among the parts.
fn cache_control(aggregate: &Aggregate, results: &[PartResult], partial: bool) -> String {
    if aggregate.personal {
        return "private, no-store".into();
    }
    if partial {
        return "no-store".into();
    }
    match results.iter().map(|r| r.max_age).min().flatten() {
        Some(secs) => format!("max-age={secs}"),
        None => "no-store".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_takes_nested_members_and_skips_missing_ones() {
        let v = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        let fields = vec![
            vec!["a".to_string()],
            vec!["b".to_string(), "c".to_string()],
            vec!["nope".to_string()],
            vec!["e".to_string(), "0".to_string()],
        ];
        assert_eq!(
            Value::Object(keep(&v, &fields)),
            json!({"a": 1, "b": {"c": 2}})
        );
        assert_eq!(
            keep(&json!([1, 2]), &fields),
            Map::new(),
            "not an object: nothing kept"
        );
    }

    #[test]
    fn the_meta_member_is_appended_after_the_content() {
        let mut out = b"{\"a\":1}".to_vec();
        append_member(&mut out, "_parts", &json!({"a": {"ms": 3}}));
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({"a": 1, "_parts": {"a": {"ms": 3}}})
        );
        let mut empty = b"{}".to_vec();
        append_member(&mut empty, "m\"x", &json!(1));
        assert_eq!(
            serde_json::from_slice::<Value>(&empty).unwrap(),
            json!({"m\"x": 1})
        );
    }

    #[test]
    fn the_etag_names_the_content_only() {
        assert_eq!(etag(b"{}"), etag(b"{}"));
        assert_ne!(etag(b"{}"), etag(b"{ }"));
        let tag = etag(b"{}");
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34,
            "{tag}"
        );
    }
}
