//! Method sets of routes and the per-pattern method dispatch used at lookup.

use http::Method;

/// The standard methods, in alphabetical order (the order of the Allow header).
/// A method's position here is its bit in `MethodSet::Listed` and its slot in
/// `ByMethod::standard`.
const STANDARD: [Method; 9] = [
    Method::CONNECT,
    Method::DELETE,
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::POST,
    Method::PUT,
    Method::TRACE,
];

/// Sentinel for "no route" in [`Dispatch::ByMethod`]; route indexes are
/// positions in a `Vec`, which can never reach `usize::MAX`.
const NONE: usize = usize::MAX;

/// Index of a standard method in [`STANDARD`], or `None` for an extension
/// method. Comparing `http::Method`s of standard methods is an enum-tag
/// comparison, so this is a few integer compares, most common methods first.
#[inline]
fn standard_index(method: &Method) -> Option<usize> {
    let index = if *method == Method::GET {
        2
    } else if *method == Method::POST {
        6
    } else if *method == Method::HEAD {
        3
    } else if *method == Method::PUT {
        7
    } else if *method == Method::DELETE {
        1
    } else if *method == Method::PATCH {
        5
    } else if *method == Method::OPTIONS {
        4
    } else if *method == Method::CONNECT {
        0
    } else if *method == Method::TRACE {
        8
    } else {
        return None;
    };
    Some(index)
}

/// The methods one route accepts, as validated at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MethodSet {
    /// No `methods` key: every method.
    Any,
    /// An explicit list, deduplicated.
    Listed {
        /// Bit `i` set = `STANDARD[i]` accepted.
        standard: u16,
        /// Extension methods, sorted by name.
        extension: Vec<Method>,
    },
}

impl MethodSet {
    /// Builds the set for a route, returning the messages for every problem in
    /// the list (each completes "methods ..."). The set is usable even when
    /// there are problems, so conflict checks can still run on it.
    pub(super) fn from_config(methods: Option<&[Method]>) -> (MethodSet, Vec<String>) {
        let Some(methods) = methods else {
            return (MethodSet::Any, Vec::new());
        };
        let mut problems = Vec::new();
        if methods.is_empty() {
            problems.push(
                "is an empty list, so the route could never match; \
                 use no `methods` key to allow any method"
                    .to_string(),
            );
        }
        let mut standard = 0u16;
        let mut extension: Vec<Method> = Vec::new();
        for method in methods {
            let already = match standard_index(method) {
                Some(i) => {
                    let bit = 1u16 << i;
                    let seen = standard & bit != 0;
                    standard |= bit;
                    seen
                }
                None => {
                    // Methods are case-sensitive: "get" is a valid but unknown
                    // extension method that no client sends. Almost certainly a typo.
                    let upper = method.as_str().to_ascii_uppercase();
                    if let Some(std) = STANDARD.iter().find(|m| m.as_str() == upper) {
                        problems.push(format!(
                            "lists {:?}; methods are case-sensitive, write {:?}",
                            method.as_str(),
                            std.as_str()
                        ));
                    }
                    let seen = extension.contains(method);
                    if !seen {
                        extension.push(method.clone());
                    }
                    seen
                }
            };
            if already {
                let msg = format!("lists {:?} more than once", method.as_str());
                if !problems.contains(&msg) {
                    problems.push(msg);
                }
            }
        }
        extension.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        (
            MethodSet::Listed {
                standard,
                extension,
            },
            problems,
        )
    }

    /// The methods both sets accept, sorted by name; `None` if they are disjoint.
    /// Two `Any` sets give `Some(vec![])`, meaning "every method".
    pub(super) fn overlap(&self, other: &MethodSet) -> Option<Vec<String>> {
        match (self, other) {
            (MethodSet::Any, MethodSet::Any) => Some(Vec::new()),
            (MethodSet::Any, listed) | (listed, MethodSet::Any) => {
                let names = listed.names();
                (!names.is_empty()).then_some(names)
            }
            (
                MethodSet::Listed {
                    standard: a,
                    extension: ea,
                },
                MethodSet::Listed {
                    standard: b,
                    extension: eb,
                },
            ) => {
                let both = MethodSet::Listed {
                    standard: a & b,
                    extension: ea.iter().filter(|m| eb.contains(m)).cloned().collect(),
                };
                let names = both.names();
                (!names.is_empty()).then_some(names)
            }
        }
    }

    /// The methods to try a path with on behalf of a route with this set: its
    /// own, or GET for `Any` (the method of a plain link or a browser).
    pub(super) fn probes(&self) -> Vec<Method> {
        match self {
            MethodSet::Any => vec![Method::GET],
            MethodSet::Listed {
                standard,
                extension,
            } => STANDARD
                .iter()
                .enumerate()
                .filter(|(i, _)| standard & (1 << i) != 0)
                .map(|(_, m)| m.clone())
                .chain(extension.iter().cloned())
                .collect(),
        }
    }

    /// Method names in the set, sorted alphabetically (empty for `Any`).
    fn names(&self) -> Vec<String> {
        match self {
            MethodSet::Any => Vec::new(),
            MethodSet::Listed {
                standard,
                extension,
            } => {
                let mut names: Vec<String> = STANDARD
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| standard & (1 << i) != 0)
                    .map(|(_, m)| m.as_str().to_string())
                    .chain(extension.iter().map(|m| m.as_str().to_string()))
                    .collect();
                names.sort();
                names
            }
        }
    }
}

/// What one (host, path pattern) leads to, by method. This is the value stored
/// in the path routers.
#[derive(Debug, Clone)]
pub(super) enum Dispatch {
    /// A single route that accepts every method (the common case for proxies;
    /// it cannot share its pattern, since `Any` overlaps everything).
    Any(usize),
    /// Routes with explicit method lists, boxed to keep the router nodes small.
    ByMethod(Box<ByMethod>),
}

/// Method table for a pattern whose routes all list their methods.
#[derive(Debug, Clone)]
pub(super) struct ByMethod {
    /// Route index per standard method, [`NONE`] if no route accepts it: one
    /// array access at lookup instead of a scan.
    standard: [usize; STANDARD.len()],
    /// Extension methods and their routes (rare, so a short linear scan).
    extension: Box<[(Method, usize)]>,
    /// The Allow header value for a 405, built once here.
    allow: Box<str>,
}

/// Result of dispatching a method on a pattern.
pub(super) enum Choice<'a> {
    Route(usize),
    NotAllowed(&'a str),
}

impl Dispatch {
    /// Builds the dispatch for routes sharing one pattern. `routes` are
    /// (route index, method set) in priority order; if two overlap (an error the
    /// caller reports), the first wins, so the table is still well-defined.
    pub(super) fn new(routes: &[(usize, &MethodSet)]) -> Dispatch {
        if let Some((index, _)) = routes.iter().find(|(_, set)| **set == MethodSet::Any) {
            return Dispatch::Any(*index);
        }
        let mut standard = [NONE; STANDARD.len()];
        let mut extension: Vec<(Method, usize)> = Vec::new();
        let mut allow: Vec<&str> = Vec::new();
        for (index, set) in routes {
            if let MethodSet::Listed {
                standard: bits,
                extension: ext,
            } = set
            {
                for (i, slot) in standard.iter_mut().enumerate() {
                    if bits & (1 << i) != 0 && *slot == NONE {
                        *slot = *index;
                    }
                }
                for m in ext {
                    if !extension.iter().any(|(known, _)| known == m) {
                        extension.push((m.clone(), *index));
                    }
                }
            }
        }
        for (i, slot) in standard.iter().enumerate() {
            if *slot != NONE {
                allow.push(STANDARD[i].as_str());
            }
        }
        allow.extend(extension.iter().map(|(m, _)| m.as_str()));
        allow.sort_unstable();
        allow.dedup();
        let allow = allow.join(", ").into_boxed_str();
        Dispatch::ByMethod(Box::new(ByMethod {
            standard,
            extension: extension.into_boxed_slice(),
            allow,
        }))
    }

    /// Picks the route for `method`, or the Allow value if none accepts it.
    #[inline]
    pub(super) fn choose(&self, method: &Method) -> Choice<'_> {
        match self {
            Dispatch::Any(index) => Choice::Route(*index),
            Dispatch::ByMethod(table) => {
                let found = match standard_index(method) {
                    Some(i) => table.standard.get(i).copied().filter(|&r| r != NONE),
                    None => table
                        .extension
                        .iter()
                        .find(|(m, _)| m == method)
                        .map(|&(_, r)| r),
                };
                match found {
                    Some(index) => Choice::Route(index),
                    None => Choice::NotAllowed(&table.allow),
                }
            }
        }
    }
}
