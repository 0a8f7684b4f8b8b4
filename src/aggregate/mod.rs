//! Request aggregation: one client request fans out to several upstream calls (the route's
//! parts) and gets one JSON answer that says what each part did. A part is an upstream request
//! like any other (`Upstream::pick`, circuit breakers, health, retries under the route's policy
//! and the upstream's budget, timeouts) made without a Pingora session.
//!
//! - [`template`]: a part's `path`, filled from the request and from other parts' answers;
//! - [`compile`]: the config compiled into an [`Aggregate`], parts ordered by dependency;
//! - [`fetch`]: one part's upstream exchange, with retries and its body limit;
//! - [`run`]: every part of a request, in parallel where nothing orders them;
//! - [`merge`]: the answer: members, `fields`, the meta member, `ETag`, `Cache-Control`.

mod compile;
mod fetch;
mod merge;
mod part_cache;
mod run;
pub mod template;

pub use compile::{compile, Context, DEFAULT_MAX_PART_BYTES};
pub use merge::merge;
pub use merge::{Merged, Verdict};
pub use run::{run, Inputs, PartResult, Skip};

use crate::cache::CachePolicy;
use crate::upstream::Upstream;
use http::{HeaderName, Method};
use std::sync::Arc;
use std::time::Duration;
use template::Template;

/// A compiled `aggregate`.
#[derive(Debug)]
pub struct Aggregate {
    /// The route's name (parts' cache entries are keyed by route and part).
    pub route: Arc<str>,
    /// The member holding each part's outcome (`None`: `meta = false`).
    pub meta: Option<Arc<str>>,
    /// Largest body read from one part.
    pub max_part_bytes: usize,
    /// In an order where every part comes after the parts it reads from.
    pub parts: Vec<Part>,
    /// The route has an auth policy: the answer is for one caller.
    pub personal: bool,
    /// The client request headers a part's target is made from (`{header.NAME}`, lower case):
    /// the answer varies on them whatever the parts' own `Vary` say.
    pub template_headers: Vec<String>,
}

/// One compiled part.
#[derive(Debug)]
pub struct Part {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub method: Method,
    pub path: Template,
    pub required: bool,
    /// The part's own deadline (the route's deadline caps it at run time).
    pub timeout: Option<Duration>,
    pub cache: Option<Arc<CachePolicy>>,
    /// Members kept, as paths (`["user", "name"]`); `None`: the whole answer.
    pub fields: Option<Vec<Vec<String>>>,
    /// `into = "."`: the kept members go at the root of the answer.
    pub at_root: bool,
    /// Client request headers passed on besides the defaults.
    pub forward_headers: Vec<HeaderName>,
    /// Indexes (into `Aggregate::parts`, all smaller than this part's) of the parts whose
    /// answers this part's template reads.
    pub depends_on: Vec<usize>,
}

/// What became of a part (the `outcome` in the meta member, the access log and
/// `tollgate_aggregate_parts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx JSON answer.
    Ok,
    /// The part failed and a stale cached answer within `stale_if_error` stands in.
    Stale,
    /// The upstream answered with a status outside 2xx, or the connection failed.
    Error,
    /// The part's timeout or the route's deadline passed.
    Timeout,
    /// Every target's circuit is open: the part failed without a request.
    CircuitOpen,
    /// A 2xx answer whose body is not JSON.
    NotJson,
    /// The body is over `max_part_bytes`.
    TooLarge,
    /// Not started: the deadline passed first, or a value its template needs is missing.
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Stale,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::CircuitOpen,
        Outcome::NotJson,
        Outcome::TooLarge,
        Outcome::Skipped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Stale => "stale",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::NotJson => "not_json",
            Outcome::TooLarge => "too_large",
            Outcome::Skipped => "skipped",
        }
    }

    /// The part has an answer to merge.
    pub fn answered(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Stale)
    }
}
