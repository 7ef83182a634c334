//! Bearer-token authorisation. With `API_TOKEN` set, requests that change state need
//! `Authorization: Bearer <token>`; reads need it too with `API_TOKEN_FOR_READS=true`.
//! The scheme is declared in the spec, so Swagger UI offers "Authorize".

use poem_openapi::{auth::Bearer, SecurityScheme};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::Unauthorized;
use crate::config::AuthSettings;

/// The caller's credentials: a bearer token, or none.
#[derive(SecurityScheme)]
pub enum ApiAuth {
    /// `Authorization: Bearer <API_TOKEN>`.
    Token(BearerToken),
    /// No `Authorization` header: accepted only while no token is configured (or for reads,
    /// unless `API_TOKEN_FOR_READS=true`).
    #[oai(fallback)]
    Anonymous,
}

/// A bearer token.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "bearerAuth")]
pub struct BearerToken(Bearer);

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads rows or worker reports.
    Read,
    /// Starts, stops or resets a worker, or publishes a row.
    Write,
}

/// Decides whether a request may proceed.
pub struct Guard {
    token: Option<SecretString>,
    reads_need_token: bool,
}

impl Guard {
    /// A guard for these settings; warns once when the API is open.
    pub fn new(settings: &AuthSettings) -> Self {
        if settings.token().is_none() {
            tracing::warn!(
                "API_TOKEN is not set: anyone who can reach the API can start, stop and reset workers"
            );
        }
        Self {
            token: settings.token().cloned(),
            reads_need_token: settings.api_token_for_reads,
        }
    }

    /// `Ok` when `auth` may do `access`; a 401 otherwise.
    pub fn check(&self, auth: &ApiAuth, access: Access) -> Result<(), Unauthorized> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        if access == Access::Read && !self.reads_need_token {
            return Ok(());
        }
        let presented = match auth {
            ApiAuth::Token(BearerToken(bearer)) => bearer.token.as_bytes(),
            ApiAuth::Anonymous => return Err(Unauthorized::new("a bearer token is required")),
        };
        // Constant time, so the comparison does not reveal how much of the token matched.
        if bool::from(presented.ct_eq(expected.expose_secret().as_bytes())) {
            Ok(())
        } else {
            Err(Unauthorized::new("the bearer token is not valid"))
        }
    }
}
