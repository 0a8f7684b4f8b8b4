//! The verified claims of a token (its payload as a JSON object) and the helpers the proxy
//! uses: subject, scopes, and a claim as a header value to forward.

use serde_json::{Map, Value};

/// The payload of a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
}

impl Claims {
    pub fn new(map: Map<String, Value>) -> Claims {
        Claims { map }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// The `sub` claim, when it is a string.
    pub fn subject(&self) -> Option<&str> {
        self.map.get("sub").and_then(Value::as_str)
    }

    /// The granted scopes: `scope` (a space-separated string, RFC 8693) and `scp` (an array of
    /// strings, or a space-separated string, as Azure AD and Okta send it).
    pub fn scopes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for name in ["scope", "scp"] {
            match self.map.get(name) {
                Some(Value::String(s)) => out.extend(s.split_ascii_whitespace()),
                Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        out
    }

    /// Whether every one of `required` is granted.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        let granted = self.scopes();
        required.iter().all(|r| granted.contains(&r.as_str()))
    }

    /// A claim rendered for an HTTP header: strings as they are, numbers and booleans as JSON
    /// writes them, arrays of strings joined by a space. `None` for objects, null, mixed arrays,
    /// a missing claim, and any value with a control character (a header cannot carry it, and a
    /// CR/LF would split the header).
    pub fn claim_as_header_value(&self, name: &str) -> Option<String> {
        let text = match self.map.get(name)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<&str>>>()?
                .join(" "),
            Value::Object(_) | Value::Null => return None,
        };
        if text.chars().any(char::is_control) {
            return None;
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(map) => Claims::new(map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn header_values() {
        let c = claims(json!({
            "sub": "user-1", "n": 42, "f": 1.5, "admin": true, "groups": ["a", "b c"],
            "mixed": ["a", 1], "obj": {"a": 1}, "null": null, "crlf": "x\r\nx-admin: 1",
            "tab": "a\tb", "nul": "a\u{0}", "del": "a\u{7f}", "arr_ctl": ["a\nb"], "utf8": "Zoë",
            "empty": []
        }));
        let v = |n| c.claim_as_header_value(n);
        assert_eq!(v("sub").as_deref(), Some("user-1"));
        assert_eq!(v("n").as_deref(), Some("42"));
        assert_eq!(v("f").as_deref(), Some("1.5"));
        assert_eq!(v("admin").as_deref(), Some("true"));
        assert_eq!(v("groups").as_deref(), Some("a b c"));
        assert_eq!(v("utf8").as_deref(), Some("Zoë"));
        assert_eq!(v("empty").as_deref(), Some(""));
        for none in [
            "mixed", "obj", "null", "crlf", "tab", "nul", "del", "arr_ctl", "missing",
        ] {
            assert_eq!(v(none), None, "{none}");
        }
        assert_eq!(c.subject(), Some("user-1"));
        assert_eq!(claims(json!({"sub": 5})).subject(), None);
    }

    #[test]
    fn scopes_from_scope_and_scp() {
        let s = |v: Value| {
            claims(v)
                .scopes()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(s(json!({"scope": " a  b\tc "})), ["a", "b", "c"]);
        assert_eq!(s(json!({"scp": ["a", 3, "b"]})), ["a", "b"]);
        assert_eq!(s(json!({"scp": "a b"})), ["a", "b"]);
        assert_eq!(s(json!({"scope": "a", "scp": ["b"]})), ["a", "b"]);
        assert!(s(json!({"scope": 7})).is_empty());

        let c = claims(json!({"scope": "users:read users:write"}));
        let req = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(c.has_scopes(&req(&["users:read"])));
        assert!(c.has_scopes(&req(&["users:write", "users:read"])));
        assert!(c.has_scopes(&[]));
        assert!(!c.has_scopes(&req(&["users:read", "admin"])));
        assert!(!c.has_scopes(&req(&["users"])), "no prefix matching");
    }
}
