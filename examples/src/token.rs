//! Access tokens: HS256 JWTs shared by the services through `JWT_SECRET`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::sessions::SessionStore;

/// What a token says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session id (revoked by logout).
    pub sid: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
}

/// Signs and checks tokens. Cheap to clone (a reference count).
#[derive(Clone)]
pub struct Tokens {
    keys: Arc<Keys>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("lifetime", &self.keys.lifetime)
            .finish_non_exhaustive()
    }
}

/// The time, in Unix seconds (0 before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// Tokens signed with `secret`, valid for `lifetime`.
    pub fn new(secret: &str, lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            keys: Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret.as_bytes()),
                decoding: DecodingKey::from_secret(secret.as_bytes()),
                validation,
                lifetime,
            }),
        }
    }

    /// How long a token is valid.
    pub fn lifetime(&self) -> Duration {
        self.keys.lifetime
    }

    /// A token for `user` in session `session`.
    ///
    /// # Errors
    ///
    /// Only if signing fails.
    pub fn issue(&self, user: &str, session: &str) -> Result<String, ApiError> {
        let iat = unix_now();
        let claims = Claims {
            sub: user.to_owned(),
            sid: session.to_owned(),
            iat,
            exp: iat + self.keys.lifetime.as_secs(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.keys.encoding)
            .map_err(|_| ApiError::internal("cannot sign a token"))
    }

    /// The claims of a valid, unexpired token.
    ///
    /// # Errors
    ///
    /// 401 for a missing, malformed, wrongly signed or expired token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        decode::<Claims>(token, &self.keys.decoding, &self.keys.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("token_expired", "the access token has expired")
                }
                _ => ApiError::unauthorized("invalid_token", "the access token is not valid"),
            })
    }

    /// The token of a request: `Authorization: Bearer …`, or `access_token=` in the
    /// query (for WebSocket clients, which cannot set headers).
    pub fn from_parts(parts: &Parts) -> Option<String> {
        if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
            return value
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")
                .map(str::to_owned);
        }
        parts
            .uri
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token=").map(str::to_owned))
    }
}

/// What checks a request's token: the token keys and the sessions (logout revokes
/// tokens). A service keeps it in its router's state (see [`AuthnState`]): nothing is
/// inserted into a request for it.
#[derive(Clone, Debug)]
pub struct Authn {
    /// Token signing and verification.
    pub tokens: Tokens,
    /// Session checks.
    pub sessions: SessionStore,
}

/// A router state that holds an [`Authn`]: what the [`User`] extractor needs.
pub trait AuthnState {
    /// The state's token verification.
    fn authn(&self) -> &Authn;
}

impl AuthnState for Authn {
    fn authn(&self) -> &Authn {
        self
    }
}

impl<T: AuthnState> AuthnState for Arc<T> {
    fn authn(&self) -> &Authn {
        (**self).authn()
    }
}

/// The claims of the request's token, once its signature, its expiry and its session
/// are checked: 401 otherwise (`missing_token`, `invalid_token`, `token_expired`,
/// `session_ended`).
///
/// # Errors
///
/// 401 as above; 500 when the session store refuses a command.
pub async fn authenticate(authn: &Authn, parts: &Parts) -> Result<Claims, ApiError> {
    let token = Tokens::from_parts(parts)
        .ok_or_else(|| ApiError::unauthorized("missing_token", "an access token is required"))?;
    let claims = authn.tokens.verify(&token)?;
    authn.sessions.require(&claims).await?;
    Ok(claims)
}

/// The authenticated user of a request (see [`authenticate`]); rejects with 401. The
/// router's state provides the [`Authn`] ([`AuthnState`]).
#[derive(Clone, Debug)]
pub struct User(pub Claims);

impl<S: AuthnState + Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(state.authn(), parts).await.map(User)
    }
}
