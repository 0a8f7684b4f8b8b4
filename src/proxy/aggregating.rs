//! The pipeline's last step for aggregate routes: the parts run (`aggregate::run`), each is
//! counted and summarised for the access log, and the merged answer (or the error of a failed
//! required part) is the request's answer. It runs after auth and rate limits, so a refused
//! caller never makes a part call anything.

use super::answer::{respond, Answer, Flow};
use super::{forwarding, headers, Gateway, RequestCtx};
use crate::aggregate::{self, Aggregate, Inputs, Outcome, PartResult, Verdict};
use crate::problem::Problem;
use pingora::proxy::Session;
use std::fmt::Write;
use std::ops::ControlFlow;

impl Gateway {
    /// Answers an aggregate route from its parts; other routes go on upstream.
    pub(super) async fn aggregate(&self, session: &mut Session, ctx: &mut RequestCtx) -> Flow {
        let Some(route) = ctx.route.clone() else {
            return ControlFlow::Continue(());
        };
        let Some(aggregate) = route.aggregate() else {
            return ControlFlow::Continue(());
        };
        // A copy: the parts read the request while the client's connection is watched.
        let req = session.req_header().clone();
        let req = &req;
        let mut forwarded = headers::part_headers(req, &forwarding(session, ctx));
        if let (Some(auth), Some(identity)) = (&route.auth, &ctx.identity) {
            auth.policy.forward(identity, |name, value| {
                forwarded.insert(name.clone(), value);
            });
        }
        let inputs = Inputs {
            params: &ctx.params,
            query: req.uri.query(),
            headers: &req.headers,
            identity: ctx.identity.as_ref(),
            client: ctx.client,
            forwarded,
            deadline: ctx.deadline,
            retry: route.retry.as_ref(),
            connector: &self.parts,
            metrics: &self.metrics,
            trace: ctx.trace.as_ref(),
        };
        // A client that goes away calls its parts off, as it cancels a proxied request.
        let results = tokio::select! {
            results = aggregate::run(aggregate, &inputs) => results,
            () = super::connect::client_gone(session) => {
                self.metrics.abuse.cancelled("client_gone");
                return ControlFlow::Break(Answer::ClientGone);
            }
        };
        for (part, result) in aggregate.parts.iter().zip(&results) {
            self.metrics.aggregate_part(
                &route.name,
                &part.name,
                result.outcome.label(),
                result.elapsed,
            );
        }
        ctx.parts = Some(summary(aggregate, &results));
        match aggregate::merge(aggregate, &results) {
            Verdict::Answer(merged) => {
                let not_modified = if_none_match(req, &merged.etag);
                ControlFlow::Break(Answer::Aggregate {
                    merged,
                    not_modified,
                    rate_limit: ctx.rate_limit.clone(),
                })
            }
            Verdict::Failed(error) => {
                let mut problem = Problem::from(&error);
                problem.rate_limit = ctx.rate_limit.clone();
                respond(problem)
            }
        }
    }
}

/// `profile:200:12ms,feed:timeout:400ms`: each part's status when it answered, else its outcome.
fn summary(aggregate: &Aggregate, results: &[PartResult]) -> String {
    let mut out = String::with_capacity(24 * results.len());
    for (i, (part, result)) in aggregate.parts.iter().zip(results).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let ms = result.elapsed.as_millis();
        let _ = match (result.outcome, result.status) {
            (Outcome::Ok, Some(status)) => write!(out, "{}:{status}:{ms}ms", part.name),
            (outcome, _) => write!(out, "{}:{}:{ms}ms", part.name, outcome.label()),
        };
    }
    out
}

/// Whether the client's `If-None-Match` names `etag` (or is `*`): then a 304 answers. Weak
/// comparison (RFC 9110 §13.1.2): a `W/` prefix on the client's tag does not matter.
fn if_none_match(req: &pingora::http::RequestHeader, etag: &str) -> bool {
    req.headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}
