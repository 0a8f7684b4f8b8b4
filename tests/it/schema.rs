//! The config's JSON Schema as an editor uses it: the file shipped in `config/` is what
//! `tollgate schema` prints, every shipped config satisfies it, and a misspelled key does not.

use std::path::{Path, PathBuf};
use std::process::Command;

const SHIPPED: &str = "config/tollgate.schema.json";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_path(SHIPPED)).expect("read the shipped schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::draft7::new(&schema).expect("the schema is a valid draft-07 schema")
}

/// The TOML text as the JSON value a validator sees (as taplo converts it).
fn as_json(toml_text: &str, name: &str) -> serde_json::Value {
    let table: toml::Table = toml_text
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not TOML: {e}"));
    serde_json::to_value(table).expect("TOML converts to JSON")
}

/// Every way `value` fails the schema, one line each (`/instance/path: message`).
fn violations(validator: &jsonschema::Validator, value: &serde_json::Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no config in {dir}");
    files
}

/// The load benchmark's configs are templates: `benches/load/run.sh` fills in `@NAME@`.
/// Plausible values stand in; a new placeholder must be given one here.
fn fill_placeholders(text: &str, name: &str) -> String {
    const VALUES: &[(&str, &str)] = &[
        ("@LISTEN@", "127.0.0.1:8080"),
        ("@ADMIN@", "127.0.0.1:9901"),
        ("@BACKEND@", "127.0.0.1:9001"),
        ("@REDIS@", "redis://127.0.0.1:6379/0"),
        ("@OTLP@", "http://127.0.0.1:4318"),
        ("@HS_SECRET_FILE@", "secret.key"),
        ("@JWKS_FILE@", "jwks.json"),
        ("@HS256_TOKEN@", "token"),
        ("@RS256_TOKEN@", "token"),
    ];
    let mut filled = text.to_string();
    for (placeholder, value) in VALUES {
        filled = filled.replace(placeholder, value);
    }
    let unfilled = filled.split('@').skip(1).step_by(2).find(|word| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    });
    if let Some(word) = unfilled {
        panic!("{name}: placeholder @{word}@ has no stand-in value in tests/it/schema.rs");
    }
    filled
}

#[test]
fn the_shipped_schema_is_what_tollgate_schema_prints() {
    let shipped = std::fs::read_to_string(repo_path(SHIPPED)).unwrap_or_default();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("schema")
        .output()
        .expect("run tollgate schema");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        printed == shipped,
        "{SHIPPED} is out of date with the config types; regenerate it with\n    \
         cargo run -- schema > {SHIPPED}"
    );
}

#[test]
fn every_shipped_config_satisfies_the_schema() {
    let validator = validator();
    let mut checked = 0;
    for dir in ["config", "benches/load/configs"] {
        for file in toml_files(dir) {
            let name = file.display().to_string();
            let text = fill_placeholders(&std::fs::read_to_string(&file).unwrap(), &name);
            let problems = violations(&validator, &as_json(&text, &name));
            assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} configs checked");
}

/// A valid config with one key misspelled or one value of the wrong shape, at several depths:
/// the schema must refuse each (as `check` does), naming where.
#[test]
fn misspelled_keys_and_wrong_shapes_fail_the_schema() {
    let validator = validator();
    let base = r#"
[server]
listen = ["127.0.0.1:8080"]
shutdown_grace = "10s"
max_body_bytes = "8MiB"

[upstreams.users]
targets = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
health_check = { path = "/healthz", interval = "2s" }

[caches.short]
ttl = "30s"
query = ["page"]

[routes.users]
path = "/v1/users/{*rest}"
upstream = "users"
cache = "short"
aggregate.meta = false
"#;
    let problems = violations(&validator, &as_json(base, "base"));
    assert!(
        problems.is_empty(),
        "the base config:\n{}",
        problems.join("\n")
    );

    let cases = [
        ("[server]", "[sever]", ""),
        (
            "upstream = \"users\"",
            "upstrem = \"users\"",
            "/routes/users",
        ),
        (
            "interval = \"2s\"",
            "intervall = \"2s\"",
            "/upstreams/users/health_check",
        ),
        ("weight = 3", "wieght = 3", "/upstreams/users/targets/1"),
        (
            "shutdown_grace = \"10s\"",
            "shutdown_grace = \"10\"",
            "/server/shutdown_grace",
        ),
        (
            "shutdown_grace = \"10s\"",
            "shutdown_grace = 10",
            "/server/shutdown_grace",
        ),
        (
            "max_body_bytes = \"8MiB\"",
            "max_body_bytes = \"8\"",
            "/server/max_body_bytes",
        ),
        (
            "query = [\"page\"]",
            "query = \"some\"",
            "/caches/short/query",
        ),
        (
            "aggregate.meta = false",
            "aggregate.meta = 3",
            "/routes/users/aggregate/meta",
        ),
    ];
    for (from, to, at) in cases {
        assert!(base.contains(from), "{from}");
        let broken = base.replacen(from, to, 1);
        let problems = violations(&validator, &as_json(&broken, to));
        assert!(!problems.is_empty(), "{to:?} passes the schema");
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{at}: "))),
            "{to:?} should fail at {at:?}: {problems:?}"
        );
    }
}
