//! Config errors that name the key path (`routes.home.upstream`) and, where the file says, the
//! line and column, so `tollgate check` reads like a compiler and a reload failure is actionable.
//! Warnings are located and printed the same way, with `warning: ` before the key path.

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

/// Something a valid config says that is probably not what was meant (a protected route whose
/// bare prefix another route serves, an admin listener open to the network). The config loads
/// and serves; `tollgate check` prints the warning and the gateway logs it on every load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Dotted key path, e.g. `routes.admin.path`.
    pub path: String,
    /// 1-based line and column of the key, once located (see [`Locator::locate`]).
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigWarning {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigWarning {
            path: path.into(),
            location: None,
            message: message.into(),
        }
    }

    /// The line `check` prints and the gateway logs: `FILE:LINE:COL: warning: KEY: message`.
    pub fn in_file(&self, source: &str) -> String {
        in_file(source, self.location, self)
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.location {
            write!(f, "{line}:{col}: ")?;
        }
        write!(f, "warning: {}: {}", self.path, self.message)
    }
}

/// `item` (which starts with its location, if any) prefixed with the file name, as a compiler
/// writes it: `FILE:LINE:COL: ...`, or `FILE: ...` without a location.
fn in_file(source: &str, location: Option<(usize, usize)>, item: &dyn fmt::Display) -> String {
    match location {
        Some(_) => format!("{source}:{item}"),
        None => format!("{source}: {item}"),
    }
}

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
            f.write_str(&in_file(&self.source, e.location, e))?;
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

    /// Fills in `location` for every warning that lacks one.
    pub fn locate_warnings(&self, warnings: &mut [ConfigWarning]) {
        for w in warnings.iter_mut().filter(|w| w.location.is_none()) {
            w.location = self.locate(&w.path);
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
pub(in crate::config) mod tests {
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
    fn warnings_read_like_errors_with_the_word_warning() {
        let mut w = ConfigWarning::new("server.admin_listen", "is public");
        assert_eq!(
            w.in_file("gw.toml"),
            "gw.toml: warning: server.admin_listen: is public"
        );
        Locator::new("[server]\nadmin_listen = \"0.0.0.0:9901\"\n")
            .locate_warnings(std::slice::from_mut(&mut w));
        assert_eq!(w.location, Some((2, 1)));
        assert_eq!(
            w.in_file("gw.toml"),
            "gw.toml:2:1: warning: server.admin_listen: is public"
        );
    }

    /// Two errors of `gw.toml`: one at a key's line, one about the whole file (no place).
    pub(in crate::config) fn placed_and_unplaced() -> ConfigErrors {
        ConfigErrors {
            source: "gw.toml".into(),
            errors: vec![
                ConfigError {
                    path: "routes.home.upstream".into(),
                    location: Some((6, 1)),
                    message: "no upstream named \"usrs\"".into(),
                },
                ConfigError::new("", "cannot read config file"),
            ],
        }
    }

    #[test]
    fn display_names_file_line_and_path() {
        assert_eq!(
            placed_and_unplaced().to_string(),
            "gw.toml:6:1: routes.home.upstream: no upstream named \"usrs\"\ngw.toml: cannot read config file"
        );
    }
}
