//! `tollgate check --format json`: every error and warning as one JSON object with the file,
//! key path, line, column, message and severity, so CI can turn them into annotations on the
//! lines at fault without parsing the text form.

use super::error::{ConfigErrors, ConfigWarning};
use serde::Serialize;

/// How bad a [`Diagnostic`] is: an error fails `check`; a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, as `check --format json` prints it. `line` and `column` are 1-based, `null`
/// when the problem has no place in the file (an unreadable file); `path` is the dotted key
/// path, empty for whole-file problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    /// Every error of a file that failed, in the order the text form lists them.
    pub fn errors(errors: &ConfigErrors) -> Vec<Diagnostic> {
        errors
            .errors
            .iter()
            .map(|e| Diagnostic {
                file: errors.source.clone(),
                path: e.path.clone(),
                line: e.location.map(|(line, _)| line),
                column: e.location.map(|(_, column)| column),
                message: e.message.clone(),
                severity: Severity::Error,
            })
            .collect()
    }

    /// The warnings of a file that loaded (already located and in file order).
    pub fn warnings(file: &str, warnings: &[ConfigWarning]) -> Vec<Diagnostic> {
        warnings
            .iter()
            .map(|w| Diagnostic {
                file: file.to_string(),
                path: w.path.clone(),
                line: w.location.map(|(line, _)| line),
                column: w.location.map(|(_, column)| column),
                message: w.message.clone(),
                severity: Severity::Warning,
            })
            .collect()
    }

    /// The JSON array `check --format json` prints (pretty, with a final newline); `[]` for a
    /// clean file.
    pub fn to_json(diagnostics: &[Diagnostic]) -> String {
        let mut text = serde_json::to_string_pretty(diagnostics).expect("diagnostics serialize");
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_without_a_place_has_null_line_and_column() {
        let errors = crate::config::error::tests::placed_and_unplaced();
        let json: serde_json::Value =
            serde_json::from_str(&Diagnostic::to_json(&Diagnostic::errors(&errors))).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"file": "gw.toml", "path": "routes.home.upstream", "line": 6, "column": 1,
                 "message": "no upstream named \"usrs\"", "severity": "error"},
                {"file": "gw.toml", "path": "", "line": null, "column": null,
                 "message": "cannot read config file", "severity": "error"},
            ])
        );
    }
}
