//! JWT verification for `[auth.NAME]` policies of type `jwt`: settings, key sets from a JWKS
//! URL, a JWKS file or an HMAC secret, key stores that survive reloads and refresh in the
//! background, the verified-token cache, and the claims the proxy authorizes and forwards.
//!
//! The proxy calls [`JwtVerifier::verify`] with the bearer token; every [`Rejection`] becomes
//! the same opaque 401, and [`Rejection::label`] is for metrics and logs.

mod cache;
mod claims;
mod jwks;
mod keys;
mod service;
mod settings;
mod store;
mod verify;

pub use claims::Claims;
pub use jsonwebtoken::Algorithm;
pub use jwks::MAX_JWKS_BYTES;
/// For the fuzz targets (`fuzz/`): JWKS parsing on arbitrary documents.
#[doc(hidden)]
pub use keys::KeySet;
pub use service::JwksService;
pub use settings::{
    JwtSettings, KeySource, DEFAULT_CACHE_ENTRIES, DEFAULT_JWKS_REFRESH, MIN_SECRET_BYTES,
};
pub use store::{KeyRegistry, KeyStore, FETCH_TIMEOUT, ON_DEMAND_INTERVAL};
pub use verify::{JwtVerifier, VerifierStats, MAX_TOKEN_BYTES, UNKNOWN_KID_WAIT};

/// Why a token was refused. Bounded, for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not a well-formed JWT: segments, base64, JSON, claim types, `exp` missing, too long.
    Malformed,
    /// No key of the set verifies the signature.
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    /// No key in the set for the token's `kid` and algorithm (also: no keys loaded yet, or a
    /// kid other than the one a secret-based policy names).
    UnknownKey,
    /// The header's `alg` is not among the policy's algorithms (`none` never is).
    AlgorithmNotAllowed,
}

impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::Malformed,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::BadIssuer,
        Rejection::BadAudience,
        Rejection::UnknownKey,
        Rejection::AlgorithmNotAllowed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::BadIssuer => "bad_issuer",
            Rejection::BadAudience => "bad_audience",
            Rejection::UnknownKey => "unknown_key",
            Rejection::AlgorithmNotAllowed => "algorithm_not_allowed",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl std::error::Error for Rejection {}
