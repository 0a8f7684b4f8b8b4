//! `tollgate check -c FILE` as a user runs it: the built binary, its exit code, stdout and stderr.
//!
//! The corpus in `tests/configs/broken/` holds one broken config per case (`NAME.toml`) and what
//! `check` must say about it (`NAME.expect`): one line per expected error, written
//! `LINE:COL KEY.PATH: message fragment`. For each case the test requires exit code 1, nothing on
//! stdout, and on stderr exactly one line per expected error, each
//! `FILE:LINE:COL: KEY.PATH: ...fragment...`, followed by the `FILE: N error(s)` summary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("run tollgate")
}

fn check(path: &Path) -> Output {
    tollgate(&["check", "-c", path.to_str().expect("utf-8 path")])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo_dir(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every case the corpus must contain; a missing file fails the test instead of shrinking it.
const REQUIRED_CASES: &[&str] = &[
    "syntax_error",
    "syntax_unterminated_string",
    "duplicate_key",
    "unknown_key",
    "unknown_key_in_target",
    "dangling_upstream",
    "missing_upstream",
    "duplicate_route",
    "duplicate_route_any_method",
    "conflicting_params",
    "param_vs_catch_all",
    "bad_duration_no_unit",
    "bad_duration_word",
    "bad_duration_route",
    "bad_listen_address",
    "listen_not_a_list",
    "admin_listen_clash",
    "target_without_port",
    "empty_targets",
    "missing_targets",
    "bad_size",
    "size_without_unit",
    "unknown_section",
    "wrong_type",
    "wrong_type_bool",
    "bad_enum",
    "bad_method",
    "bad_rewrite",
    "bad_path",
    "bad_host",
    "tracing_mistakes",
    "tracing_unknown_key",
    "bad_log_level",
    "many_errors",
    "many_errors_one_section",
    "tls_missing_cert_file",
    "tls_key_mismatch",
    "tls_bad_ca_file",
    "ratelimit_mistakes",
    "ratelimit_cluster",
    "auth_kid",
];

/// One expected error: `LINE:COL HEAD: tail`, where HEAD is the key path (or `TOML syntax error`).
struct Expected {
    location: String,
    head: String,
    tail: String,
}

fn read_expectations(path: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (every broken config needs a .expect file)",
            path.display()
        )
    });
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (location, rest) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
            let (head, tail) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
            let (l, c) = location
                .split_once(':')
                .unwrap_or_else(|| panic!("{}: bad location in {line:?}", path.display()));
            assert!(
                l.parse::<usize>().is_ok() && c.parse::<usize>().is_ok(),
                "{}: bad location in {line:?}",
                path.display()
            );
            Expected {
                location: location.to_string(),
                head: head.to_string(),
                tail: tail.to_string(),
            }
        })
        .collect()
}

/// Runs `check` on one broken file; returns what is wrong with its output (empty: as expected).
fn verify_case(toml: &Path) -> Vec<String> {
    let expected = read_expectations(&toml.with_extension("expect"));
    let shown = toml.to_str().unwrap();
    let out = check(toml);
    let stderr = text(&out.stderr);
    let mut problems = Vec::new();
    if expected.is_empty() {
        problems.push("the .expect file lists no error".to_string());
    }
    if out.status.code() != Some(1) {
        problems.push(format!("exit code {:?}, expected 1", out.status.code()));
    }
    if !out.stdout.is_empty() {
        problems.push(format!("unexpected stdout: {}", text(&out.stdout)));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    let n = expected.len();
    let summary = format!("{shown}: {n} error{}", if n == 1 { "" } else { "s" });
    if lines.last() != Some(&summary.as_str()) {
        problems.push(format!("last stderr line should be {summary:?}"));
    }
    let is_summary = |l: &str| {
        l.strip_prefix(&format!("{shown}: "))
            .and_then(|r| r.split_once(' '))
            .is_some_and(|(count, word)| {
                count.parse::<usize>().is_ok() && word.starts_with("error")
            })
    };
    let errors: Vec<&str> = lines.iter().copied().filter(|l| !is_summary(l)).collect();
    if errors.len() != n {
        problems.push(format!("{} error lines, expected {n}", errors.len()));
    }
    // Every error names its file and a line:col, then the key path.
    for line in &errors {
        let rest = line.strip_prefix(&format!("{shown}:")).unwrap_or("");
        let mut parts = rest.splitn(3, ':');
        let located = parts.next().is_some_and(|l| l.parse::<usize>().is_ok())
            && parts.next().is_some_and(|c| c.parse::<usize>().is_ok());
        if !located {
            problems.push(format!("error line without FILE:LINE:COL: {line:?}"));
        }
    }
    for e in &expected {
        let prefix = format!("{shown}:{}: {}: ", e.location, e.head);
        let found = errors
            .iter()
            .any(|l| l.starts_with(&prefix) && l[prefix.len()..].contains(&e.tail));
        if !found {
            problems.push(format!("no error line like `{prefix}...{}...`", e.tail));
        }
    }
    if !problems.is_empty() {
        problems.insert(0, format!("--- {shown}; stderr was:\n{stderr}"));
    }
    problems
}

#[test]
fn every_broken_config_is_rejected_with_key_path_and_location() {
    let dir = repo_dir("tests/configs/broken");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/configs/broken")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    let names: BTreeSet<String> = cases
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in REQUIRED_CASES {
        assert!(
            names.contains(*required),
            "corpus case {required}.toml is missing"
        );
    }
    // No orphaned expectations either: a .expect without its .toml would never be checked.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "expect") {
            assert!(
                p.with_extension("toml").exists(),
                "{} has no .toml",
                p.display()
            );
        }
    }
    let problems: Vec<String> = cases.iter().flat_map(|c| verify_case(c)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn several_errors_in_different_sections_are_all_reported() {
    // Also covered by the corpus; spelled out here because it is the promise of `check`.
    let path = repo_dir("tests/configs/broken/many_errors.toml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for key in [
        "server.shutdown_grace",
        "log.format",
        "upstreams.users.targets",
        "upstreams.catalog.read_timeout",
        "routes.home.upstream",
        "routes.products.methds",
        "bogus",
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(&format!(": {key}: "))),
            "{key} not reported:\n{stderr}"
        );
    }
    assert!(stderr.trim_end().ends_with(": 7 errors"), "{stderr}");
}

#[test]
fn several_errors_in_one_table_are_all_reported() {
    let path = repo_dir("tests/configs/broken/many_errors_one_section.toml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for key in [
        "server.shutdown_grace",
        "server.idle_timeout",
        "server.threads",
        "upstreams.users.connect_timeout",
        "upstreams.users.read_timeout",
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(&format!(": {key}: "))),
            "{key} not reported:\n{stderr}"
        );
    }
    // Taking a bad key out to look for the next one must not invent a "missing field" error.
    assert!(!stderr.contains("missing field"), "{stderr}");
}

#[test]
fn a_bad_required_key_is_reported_once() {
    // `targets` is required: once its bad entry is reported, "missing field `targets`" would be
    // noise.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        "[upstreams.users]\ntargets = \"127.0.0.1:9001\"\nread_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(":2:1: upstreams.users.targets: invalid type"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":3:1: upstreams.users.read_timeout: invalid duration"),
        "{stderr}"
    );
    assert!(!stderr.contains("missing field"), "{stderr}");
    assert!(stderr.trim_end().ends_with(": 2 errors"), "{stderr}");
}

#[test]
fn valid_config_prints_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = ["127.0.0.1:18080"]
admin_listen = "127.0.0.1:19901"

[upstreams.users]
targets = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
[upstreams.catalog]
targets = ["127.0.0.1:9003"]

[routes.users]
path = "/v1/users/{*rest}"
upstream = "users"
rewrite = "/users/{rest}"
[routes.me]
path = "/v1/users/me"
methods = ["GET"]
upstream = "users"
[routes.products]
host = "*.example.com"
path = "/v1/products/{id}"
upstream = "catalog"
"#,
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}: ok (3 routes, 2 upstreams)\n", path.display())
    );
    assert_eq!(text(&out.stderr), "");
}

/// Writes `text` as `gw.toml`, next to an API-key file `keys.toml` (one consumer), and runs
/// `check` on it.
fn check_text(text: &str) -> (tempfile::TempDir, PathBuf, Output) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("acme = \"{}\"\n", "ab".repeat(32)),
    )
    .unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    (dir, path, out)
}

/// A config with `admin_listen` and `routes` (TOML) below one upstream and two API-key policies.
fn with_routes(admin_listen: &str, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:18080"]
admin_listen = "{admin_listen}"

[auth.partners]
type = "api_key"
keys_file = "keys.toml"

[auth.staff]
type = "api_key"
keys_file = "keys.toml"

[upstreams.u]
targets = ["127.0.0.1:9001"]
{routes}"#
    )
}

/// `check` accepted the file (exit 0, the one-line summary on stdout); returns stderr.
fn accepted_with_stderr(path: &Path, out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} fails check:\n{stderr}",
        path.display()
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}: ok (", path.display())) && stdout.lines().count() == 1,
        "{stdout}"
    );
    stderr
}

const PUBLIC_SITE: &str = "
[routes.public]
path = \"/{*rest}\"
upstream = \"u\"
";

#[test]
fn a_protected_prefix_whose_bare_path_is_public_is_a_warning() {
    let config = with_routes(
        "127.0.0.1:19901",
        &format!(
            "{PUBLIC_SITE}
[routes.admin]
path = \"/admin/{{*rest}}\"
upstream = \"u\"
auth = \"partners\"
"
        ),
    );
    let line = 1 + config
        .lines()
        .position(|l| l == "path = \"/admin/{*rest}\"")
        .unwrap();
    let (_dir, path, out) = check_text(&config);
    let stderr = accepted_with_stderr(&path, &out);
    assert_eq!(
        stderr,
        format!(
            "{}:{line}:1: warning: routes.admin.path: \"/admin\" (without the trailing slash) is \
             served by route \"public\" (auth: none), not by this route (auth: \"partners\"); add a \
             route for \"/admin\" or give them the same auth\n",
            path.display()
        )
    );
}

#[test]
fn a_bare_prefix_served_by_another_policy_is_a_warning_too() {
    let config = with_routes(
        "127.0.0.1:19901",
        r#"
[routes.admin]
path = "/admin/{*rest}"
methods = ["GET", "POST"]
upstream = "u"
auth = "partners"

[routes.admin_home]
path = "/admin"
methods = ["POST"]
upstream = "u"
auth = "staff"
"#,
    );
    let (_dir, path, out) = check_text(&config);
    let stderr = accepted_with_stderr(&path, &out);
    assert!(
        stderr.contains(": warning: routes.admin.path: \"/admin\" (without the trailing slash) is served by route \"admin_home\" (auth: \"staff\"), not by this route (auth: \"partners\")"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn no_warning_when_the_bare_prefix_has_the_same_auth_or_no_route() {
    let same_auth = format!(
        "{PUBLIC_SITE}
[routes.admin]
path = \"/admin/{{*rest}}\"
upstream = \"u\"
auth = \"partners\"

[routes.admin_home]
path = \"/admin\"
upstream = \"u\"
auth = \"partners\"
"
    );
    // Without the public catch-all, "/admin" is a 404: nothing to warn about.
    let not_found = r#"
[routes.admin]
path = "/admin/{*rest}"
upstream = "u"
auth = "partners"
"#;
    // Both public: the prefix route is no more protected than the rest.
    let both_public = format!(
        "{PUBLIC_SITE}
[routes.docs]
path = \"/docs/{{*rest}}\"
upstream = \"u\"
"
    );
    for routes in [same_auth.as_str(), not_found, &both_public] {
        let (_dir, path, out) = check_text(&with_routes("127.0.0.1:19901", routes));
        assert_eq!(accepted_with_stderr(&path, &out), "", "{routes}");
    }
}

#[test]
fn an_admin_listener_off_loopback_is_a_warning() {
    for admin in ["0.0.0.0:19901", "[::]:19901", "192.0.2.7:19901"] {
        let config = with_routes(admin, PUBLIC_SITE);
        let (_dir, path, out) = check_text(&config);
        let stderr = accepted_with_stderr(&path, &out);
        let expected = format!(
            "{}:3:1: warning: server.admin_listen: \"{admin}\" is not a loopback address",
            path.display()
        );
        assert!(stderr.starts_with(&expected), "{admin}: {stderr}");
        assert!(stderr.contains("reachable from the network"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    for admin in ["127.0.0.1:19901", "[::1]:19901"] {
        let (_dir, path, out) = check_text(&with_routes(admin, PUBLIC_SITE));
        assert_eq!(accepted_with_stderr(&path, &out), "", "{admin}");
    }
}

#[test]
fn check_does_not_bind_the_listen_addresses() {
    // Like `nginx -t`, checking a config must work next to the instance that is serving it.
    let busy = tollgate_testkit::ports::loopback_listener();
    let admin = tollgate_testkit::ports::loopback_listener();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{}\"]\nadmin_listen = \"{}\"\n[upstreams.u]\ntargets = [\"127.0.0.1:9\"]\n[routes.r]\npath = \"/\"\nupstream = \"u\"\n",
            busy.local_addr().unwrap(),
            admin.local_addr().unwrap()
        ),
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (1 route, 1 upstream)"));
}

#[test]
fn every_shipped_config_passes_check() {
    let dir = repo_dir("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .toml file in {}", dir.display());
    for file in files {
        let stderr = accepted_with_stderr(&file, &check(&file));
        // The configs users copy from must not teach a setting `check` warns about.
        assert_eq!(stderr, "", "{}", file.display());
    }
}

#[test]
fn unreadable_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: cannot read config file", path.display())),
        "{stderr}"
    );
}

#[test]
fn version_and_help() {
    let out = tollgate(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("tollgate {}\n", env!("CARGO_PKG_VERSION"))
    );

    let out = tollgate(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for command in ["run", "check", "demo"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help does not list `{command}`:\n{help}"
        );
    }

    let out = tollgate(&["check", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("--config"),
        "{}",
        text(&out.stdout)
    );

    // No command at all is a usage error, as clap reports it.
    let out = tollgate(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("Usage:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn errors_from_validation_and_compilation_are_reported_together() {
    // A bad duration (found while parsing), a dangling upstream (validation), an ambiguous pair
    // of routes and a bad rewrite (found while compiling the route table): all in one run.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        r#"[server]
shutdown_grace = "soon"

[upstreams.users]
targets = ["127.0.0.1:9001"]

[routes.a]
path = "/v1/users/{id}"
upstream = "users"

[routes.b]
path = "/v1/users/{name}"
upstream = "users"

[routes.c]
path = "/v1/c/{id}"
upstream = "users"
rewrite = "/c/{nope}"

[routes.d]
path = "/v1/d"
upstream = "usrs"
"#,
    )
    .unwrap();
    let out = check(&path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(":2:1: server.shutdown_grace: "), "{stderr}");
    assert!(
        stderr.contains(": routes.d.upstream: no upstream named \"usrs\""),
        "{stderr}"
    );
    assert!(stderr.contains(": routes.c.rewrite: "), "{stderr}");
    assert!(
        stderr.lines().any(
            |l| l.contains("ambiguous") && (l.contains("routes.a.") || l.contains("routes.b."))
        ),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with(": 4 errors"), "{stderr}");
}

/// `check --format json` on `file`: the exit code and the parsed stdout; stderr must be empty
/// (CI reads stdout only).
fn check_json(path: &Path) -> (Option<i32>, serde_json::Value) {
    let out = tollgate(&["check", "-c", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(
        text(&out.stderr),
        "",
        "nothing on stderr with --format json"
    );
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&out.stdout)));
    (out.status.code(), json)
}

#[test]
fn json_format_lists_every_error_with_path_line_and_column() {
    let toml = repo_dir("tests/configs/broken/many_errors.toml");
    let expected = read_expectations(&toml.with_extension("expect"));
    let (code, json) = check_json(&toml);
    assert_eq!(code, Some(1));
    let items = json.as_array().expect("a JSON array");
    assert_eq!(items.len(), expected.len(), "{json:#}");
    // In the order the text form lists them, which is not file order: matched by key path.
    for want in &expected {
        let item = items
            .iter()
            .find(|i| i["path"] == want.head.as_str())
            .unwrap_or_else(|| panic!("no object for {}: {json:#}", want.head));
        let (line, column) = want.location.split_once(':').unwrap();
        assert_eq!(item["file"], toml.to_str().unwrap(), "{item}");
        assert_eq!(item["line"], line.parse::<u64>().unwrap(), "{item}");
        assert_eq!(item["column"], column.parse::<u64>().unwrap(), "{item}");
        assert_eq!(item["severity"], "error", "{item}");
        let message = item["message"].as_str().unwrap();
        assert!(
            message.contains(&want.tail),
            "{message:?} lacks {:?}",
            want.tail
        );
    }
}

#[test]
fn json_format_reports_warnings_and_exits_0() {
    let (_dir, path, _) = check_text(&with_routes("0.0.0.0:19901", PUBLIC_SITE));
    let (code, json) = check_json(&path);
    assert_eq!(code, Some(0));
    let [warning] = json.as_array().expect("a JSON array").as_slice() else {
        panic!("one warning expected: {json:#}");
    };
    assert_eq!(warning["severity"], "warning");
    assert_eq!(warning["path"], "server.admin_listen");
    assert_eq!(
        (&warning["line"], &warning["column"]),
        (&3.into(), &1.into())
    );
    assert!(warning["message"]
        .as_str()
        .unwrap()
        .contains("is not a loopback address"));
}

#[test]
fn json_format_of_a_clean_or_missing_file() {
    let (_dir, path, _) = check_text(&with_routes("127.0.0.1:19901", PUBLIC_SITE));
    assert_eq!(check_json(&path), (Some(0), serde_json::json!([])));
    let missing = path.with_file_name("nope.toml");
    let (code, json) = check_json(&missing);
    assert_eq!(code, Some(1));
    assert_eq!(json[0]["line"], serde_json::Value::Null, "{json:#}");
    assert!(json[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot read config file"));
}
