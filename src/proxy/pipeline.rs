//! The request pipeline: what `request_filter` runs for every request, one named step after
//! another, in this order. Each step either lets the request go on or answers it
//! ([`Flow`]); the first answer ends the pipeline and is written once, by the caller.
//!
//! 0. [`admit`](Gateway::admit): a place among the requests in flight (the gateway's, the
//!    client's, the HTTP/2 connection's) → 503;
//! 1. [`strip_identity_headers`](Gateway::strip_identity_headers): headers only a verified
//!    identity may set are removed from the client's request, and any header spelled with `_`
//!    that a backend would read as one the gateway sets or removes;
//! 2. [`check_framing`](Gateway::check_framing): more than 256 headers (HTTP/2; HTTP/1's
//!    parser refuses them) → 431; ambiguous HTTP/1 framing → 400;
//! 3. [`route`](Gateway::route): the target resolved once and the route found (400, 404, 405,
//!    `OPTIONS *`); its deadline starts;
//! 4. [`check_declared_body`](Gateway::check_declared_body): a `Content-Length` over the
//!    route's limit → 413 before anything goes upstream;
//! 5. [`authenticate`](Gateway::authenticate): the route's auth policy → 401 / 403;
//! 6. [`rate_limit`](Gateway::rate_limit): the route's limits → 429;
//! 7. (the response cache looks up here: after auth and limits, so a cached answer is never
//!    seen by a caller the route would refuse);
//! 8. [`aggregate`](Gateway::aggregate): an aggregate route answers here, from its parts,
//!    instead of going upstream.
//!
//! Then Pingora goes upstream: `upstream_peer` and the hooks after it.

use super::answer::{respond, Answer, Flow};
use super::ctx::{Refused, RequestCtx};
use super::resolve::{self, Resolution};
use super::{framing, headers, Gateway};
use crate::observe::Rejection;
use crate::problem::{GatewayError, Problem};
use crate::snapshot::Snapshot;
use http::HeaderName;
use pingora::proxy::Session;
use smallvec::SmallVec;
use std::ops::ControlFlow;

/// Header lines a request may have: Pingora's HTTP/1 parser's limit.
const MAX_REQUEST_HEADERS: usize = 256;

impl Gateway {
    /// Runs the steps in order; `Break(answer)`: the request is answered by the gateway.
    pub(super) async fn pipeline(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
    ) -> Flow {
        self.admit(session, ctx, snapshot)?;
        self.strip_identity_headers(session, snapshot);
        self.check_framing(session, ctx)?;
        self.route(session, ctx, snapshot)?;
        self.check_declared_body(session, ctx)?;
        self.authenticate(session, ctx).await?;
        self.rate_limit(session, ctx, snapshot).await?;
        self.aggregate(session, ctx).await?;
        ControlFlow::Continue(())
    }

    /// Identity headers are the gateway's to set: a client sending its own would impersonate.
    /// So are they, and the forwarding headers, in any spelling a backend reads as theirs
    /// (`X_Consumer` for `X-Consumer`): those go here too, so that what is limited, cached and
    /// forwarded is one request.
    fn strip_identity_headers(&self, session: &mut Session, snapshot: &Snapshot) {
        let req = session.req_header_mut();
        for name in &snapshot.identity_headers {
            req.remove_header(name);
        }
        // Names are lower-case; only one with a `_` can be a respelling, and the usual request
        // has none: nothing is allocated then.
        let respelled: SmallVec<[HeaderName; 2]> = req
            .headers
            .keys()
            .filter(|name| {
                name.as_str().contains('_')
                    && headers::respells_an_owned_header(
                        name,
                        &snapshot.identity_headers,
                        &snapshot.strip.untrusted,
                    )
            })
            .cloned()
            .collect();
        for name in respelled {
            req.remove_header(&name);
        }
    }

    /// HTTP/1 framing that an upstream could read differently (request smuggling) is refused,
    /// and the connection closed: the body's extent is unknown, so nothing after it is read.
    fn check_framing(&self, session: &mut Session, ctx: &mut RequestCtx) -> Flow {
        // Pingora's HTTP/1 parser refuses a head of more than 256 header lines; an HTTP/2
        // head is bounded only in bytes. The same count for both, so a backend never gets
        // from one protocol a request the other could not have carried.
        if session.req_header().headers.len() > MAX_REQUEST_HEADERS {
            self.reject(ctx, Rejection::HeaderTooLarge);
            return respond(Problem::from(&GatewayError::HeadTooLarge));
        }
        match framing::check_session(session) {
            Ok(declared) => {
                ctx.declared = declared;
                ControlFlow::Continue(())
            }
            Err(detail) => {
                let error = GatewayError::BadRequest {
                    reason: Rejection::BadRequest,
                    detail,
                };
                self.refuse(session, ctx, error)
            }
        }
    }

    /// Resolves the target (form, host, path in normal form) and finds the route. The normal
    /// form replaces the received target, so every later step, the log and the forwarded
    /// request read one and the same request.
    fn route(&self, session: &mut Session, ctx: &mut RequestCtx, snapshot: &Snapshot) -> Flow {
        let routed = match resolve::resolve(snapshot, session.req_header()) {
            Resolution::Routed(routed) => routed,
            Resolution::Refused(refusal) => return self.refuse(session, ctx, refusal.into()),
            Resolution::MethodNotAllowed { allow } => {
                return respond(Problem::method_not_allowed(allow))
            }
            Resolution::NotFound => return respond(Problem::not_found()),
            Resolution::ServerOptions => return ControlFlow::Break(Answer::ServerOptions),
        };
        if let Some(rewritten) = &routed.rewritten {
            if resolve::apply(session.req_header_mut(), rewritten).is_err() {
                let error = GatewayError::BadRequest {
                    reason: Rejection::BadTarget,
                    detail: "the request target cannot be forwarded in normal form",
                };
                return self.refuse(session, ctx, error);
            }
        }
        let route = routed.route;
        ctx.upstream_target = routed.upstream_target;
        ctx.params = routed.params;
        ctx.deadline = route.timeout.map(|t| ctx.started + t);
        let body_deadline = ctx.started + route.client_body_timeout;
        ctx.body_deadline = Some(ctx.deadline.map_or(body_deadline, |d| d.min(body_deadline)));
        ctx.body_limit = route.max_body_bytes;
        ctx.route = Some(route);
        ControlFlow::Continue(())
    }

    /// A declared body over the route's limit is refused before anything goes upstream; the
    /// body is never read, so the connection closes.
    fn check_declared_body(&self, session: &mut Session, ctx: &mut RequestCtx) -> Flow {
        if ctx.declared.length.is_some_and(|len| len > ctx.body_limit) {
            self.reject(ctx, Rejection::BodyTooLarge);
            session.set_keepalive(None);
            return respond(Problem::from(&GatewayError::BodyTooLarge));
        }
        ControlFlow::Continue(())
    }

    /// The route's auth policy: the caller's identity goes in `ctx`, or 401 / 403.
    async fn authenticate(&self, session: &mut Session, ctx: &mut RequestCtx) -> Flow {
        let Some(auth) = ctx.route.as_ref().and_then(|r| r.auth.as_ref()) else {
            return ControlFlow::Continue(());
        };
        let decision = auth
            .policy
            .authenticate(&session.req_header().headers, &auth.scopes)
            .await;
        match decision {
            Ok(identity) => {
                self.metrics.auth_decision(&auth.name, "allowed");
                ctx.decided.auth = Some("allowed");
                ctx.identity = Some(identity);
                ControlFlow::Continue(())
            }
            Err(denial) => {
                self.metrics.auth_decision(&auth.name, denial.label());
                ctx.decided.auth = Some(denial.label());
                let challenge = auth.policy.challenge(denial, &auth.scopes);
                respond(Problem::auth_denied(denial, challenge))
            }
        }
    }

    /// The route's rate limits (after auth: keys may name the caller): the `RateLimit` fields
    /// for the response go in `ctx`, or 429.
    async fn rate_limit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
    ) -> Flow {
        let Some(limits) = ctx.route.as_ref().and_then(|r| r.rate_limits.clone()) else {
            return ControlFlow::Continue(());
        };
        // The cache's background refresh of a stale entry (stale-while-revalidate) replays the
        // request that found it stale, which was counted already: it is not charged again.
        if session.subrequest_ctx.is_some() {
            return ControlFlow::Continue(());
        }
        let facts = crate::ratelimit::KeyFacts {
            client: ctx.client,
            headers: &session.req_header().headers,
            identity: ctx.identity.as_ref(),
            route: ctx.route_name(),
        };
        let verdict = snapshot.limiter.check(&limits, &facts).await;
        let fields = (limits.policy.clone(), verdict.state);
        if verdict.allowed {
            ctx.rate_limit = Some(fields);
            ctx.decided.rate_limit = Some("allowed");
            return ControlFlow::Continue(());
        }
        ctx.decided.rate_limit = Some("limited");
        respond(Problem::too_many_requests(verdict.retry_after, fields))
    }

    /// Refuses a malformed request (a `GatewayError::BadRequest`): 400, counted, logged with
    /// the path as received, and the connection closed (what follows the request on it cannot
    /// be trusted).
    fn refuse(&self, session: &mut Session, ctx: &mut RequestCtx, error: GatewayError) -> Flow {
        if let GatewayError::BadRequest { reason, .. } = error {
            self.metrics.rejected(reason);
            ctx.refusal = Some(Refused {
                reason: reason.label(),
                path: resolve::received_path(session.req_header()),
            });
        }
        session.set_keepalive(None);
        respond(Problem::from(&error))
    }
}
