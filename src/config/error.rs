//! Config errors that name the key path (`routes.home.upstream`) and, where the file says, the
//! line and column, so `tollgate check` reads like a compiler and a reload failure is actionable.

use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `routes.home.upstream`; empty for whole-file problems.
    pub path: String,
    /// 1-based line and column of the key (or of the closest enclosing key we could find).
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            location: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.location {
            write!(f, "{line}:{col}: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// All the problems found in one config file; the file name prefixes every line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub source: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.location {
                Some(_) => write!(f, "{}:{e}", self.source)?,
                None => write!(f, "{}: {e}", self.source)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Finds where a key path lives in the source text, using toml_edit's spans.
pub struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: toml_edit::Document::parse(text).ok(),
        }
    }

    /// Fills in `location` for every error that lacks one.
    pub fn locate_all(&self, errors: &mut [ConfigError]) {
        for e in errors.iter_mut().filter(|e| e.location.is_none()) {
            e.location = self.locate(&e.path);
        }
    }

    /// Line and column of the deepest existing key on `path` (an unknown or missing key points at
    /// its parent table, which is where the user has to look).
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let doc = self.doc.as_ref()?;
        let mut table: &dyn toml_edit::TableLike = doc.as_table();
        let mut best: Option<usize> = None;
        // Array indices (`targets[1]`) point at the array's key.
        let segments = path.split('.').map(|s| s.split('[').next().unwrap_or(s));
        for segment in segments.filter(|s| !s.is_empty()) {
            let Some((key, item)) = table.get_key_value(segment) else {
                break;
            };
            best = key
                .span()
                .map(|s| s.start)
                .or(item.span().map(|s| s.start))
                .or(best);
            match item.as_table_like() {
                Some(t) => table = t,
                None => break,
            }
        }
        best.map(|offset| line_col(self.text, offset))
    }
}

/// Converts a byte offset into a 1-based (line, column) pair; columns count characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_in_tables_and_inline_tables() {
        let text = "[server]\nlisten = [\"x\"]\n\n[routes.home]\npath = \"/\"\nupstream = \"usrs\"\nretry = { attempts = 3 }\n";
        let loc = Locator::new(text);
        assert_eq!(loc.locate("routes.home.upstream"), Some((6, 1)));
        assert_eq!(loc.locate("server.listen"), Some((2, 1)));
        assert_eq!(loc.locate("routes.home.retry.attempts"), Some((7, 11)));
        // A missing key points at the closest parent that exists.
        assert_eq!(loc.locate("routes.home.nope"), Some((4, 9)));
        assert_eq!(loc.locate("nothing.here"), None);
    }

    #[test]
    fn display_names_file_line_and_path() {
        let errs = ConfigErrors {
            source: "gw.toml".into(),
            errors: vec![
                ConfigError {
                    path: "routes.home.upstream".into(),
                    location: Some((6, 1)),
                    message: "no upstream named \"usrs\"".into(),
                },
                ConfigError::new("", "whole file"),
            ],
        };
        assert_eq!(
            errs.to_string(),
            "gw.toml:6:1: routes.home.upstream: no upstream named \"usrs\"\ngw.toml: whole file"
        );
    }
}
