//! `tollgate check` on arbitrary text: parse, validate and compile as `check` does, then render
//! the errors and warnings in both output formats. Nothing may panic.
//!
//! Compilation is skipped for inputs that would reach outside the process (a target host name
//! to resolve, Redis, a JWKS URL) or read a file outside an empty directory (the fuzzer would
//! find `/dev/zero`): parsing and validation still run on those.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::path::{Component, Path};
use std::sync::{Arc, OnceLock};
use tollgate::config::{parse_partial, Config, Diagnostic, Source};
use tollgate::snapshot::{Registries, Snapshot};

struct Fixture {
    /// An empty directory: the config's relative file names resolve into it.
    dir: tempfile::TempDir,
    /// Built once (it holds an HTTP client): later inputs compile as reloads do.
    registries: Registries,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        dir: tempfile::tempdir().expect("a temporary directory"),
        registries: Registries::new(Arc::new(tollgate::observe::Metrics::new())),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((config, _errors)) = parse_partial(text) else {
        return;
    };
    if !stays_inside(&config) {
        return;
    }
    let fixture = fixture();
    let source = Source {
        path: fixture.dir.path().join("tollgate.toml"),
        text: text.to_string(),
    };
    match Snapshot::from_source(&source, &fixture.registries) {
        Ok(snapshot) => {
            let _ = snapshot.warning_lines();
            let _ = Diagnostic::to_json(&Diagnostic::warnings("tollgate.toml", &snapshot.warnings));
        }
        Err(errors) => {
            let _ = errors.to_string();
            let _ = Diagnostic::to_json(&Diagnostic::errors(&errors));
        }
    }
});

/// Whether compiling `config` stays in this process and the empty directory.
fn stays_inside(config: &Config) -> bool {
    let targets = config
        .upstreams
        .values()
        .flat_map(|u| u.targets.iter().chain(&u.backup_targets));
    let literal = |addr: &str| addr.parse::<SocketAddr>().is_ok();
    let mut files: Vec<&str> = Vec::new();
    if let Some(tls) = &config.server.tls {
        files.extend([tls.cert_file.as_str(), tls.key_file.as_str()]);
    }
    for u in config.upstreams.values() {
        files.extend(u.ca_file.as_deref());
    }
    for a in config.auth.values() {
        for f in [&a.keys_file, &a.secret_file, &a.jwks_file, &a.jwks_ca_file] {
            files.extend(f.as_deref());
        }
    }
    let inside = |name: &str| {
        !name.is_empty()
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
    };
    config.cluster.is_none()
        && config.auth.values().all(|a| a.jwks_url.is_none())
        && targets.into_iter().all(|t| literal(&t.addr))
        && files.into_iter().all(inside)
}
