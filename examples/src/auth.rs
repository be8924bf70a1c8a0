//! The auth service: users, sessions, tokens, conversations.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/auth/register` | `{"email","password"}` → 201 `{"user_id"}` |
//! | `POST /v1/auth/login` | → 200 `{"access_token","token_type","expires_in","user_id"}` |
//! | `POST /v1/auth/logout` | ends the session → 204; the token is refused (401 `session_ended`) by every service within a second |
//! | `POST /v1/conversations` | `{"members":[user ids]}` → 201 `{"id"}` |
//! | `GET /v1/conversations/{id}` | members only; others get 403 (audited) |
//!
//! Users and conversations live in the database ([`crate::db`]: SQLite in `DATA_DIR` by
//! default, PostgreSQL by `DATABASE_URL`), in the tables `auth_*`; a database that
//! cannot answer in time gets the request a 503. Sessions live in Redis; see [`crate::sessions`] for how every service
//! checks them and what holds while Redis is away.

mod hasher;
mod store;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use secureconnect_audit::Actor;
use serde::Deserialize;

use self::hasher::Hasher;
use self::store::{AuthStore, RegisterRefused};
use crate::error::{ApiError, JsonBody};
use crate::kit::Kit;
use crate::token::{unix_now, Authn, AuthnState, User};

/// A session outlives its token by the verifier's leeway.
const SESSION_LEEWAY: u64 = 5;

pub use self::store::migrations;

impl AuthnState for AuthState {
    fn authn(&self) -> &Authn {
        &self.authn
    }
}

#[derive(Debug)]
struct AuthState {
    store: AuthStore,
    authn: Authn,
    /// Argon2 takes 19 MiB and tens of milliseconds per hash: one thread per core,
    /// each reusing its memory, and a bounded queue in front (503 when full).
    hasher: Hasher,
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct NewConversation {
    #[serde(default)]
    members: Vec<String>,
}

fn check_credentials(c: &Credentials) -> Result<(), ApiError> {
    let email = c.email.trim();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::bad_request(
            "invalid_email",
            "email must look like name@example.org",
        ));
    }
    if c.password.len() < 8 || c.password.len() > 1024 {
        return Err(ApiError::bad_request(
            "invalid_password",
            "password must be 8 to 1024 bytes",
        ));
    }
    Ok(())
}

async fn register(
    State(state): State<Arc<AuthState>>,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    check_credentials(&body)?;
    let email = body.email.trim().to_ascii_lowercase();
    let taken = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "email_taken",
            "this email is registered already",
        )
    };
    // Checked before the costly hash; the unique email column decides the race.
    if state.store.email_taken(&email).await? {
        return Err(taken());
    }
    let hash = state.hasher.hash(body.password).await?;
    let id = format!("u-{}", uuid::Uuid::new_v4().simple());
    match state.store.register(&id, &email, &hash, unix_now()).await {
        Ok(()) => {}
        Err(RegisterRefused::Taken) => return Err(taken()),
        Err(RegisterRefused::Db(e)) => return Err(e.into()),
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "user_id": id })),
    ))
}

async fn login(
    State(state): State<Arc<AuthState>>,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let refused = || ApiError::unauthorized("invalid_credentials", "wrong email or password");
    let email = body.email.trim().to_ascii_lowercase();
    let account = state.store.account(&email).await?;
    let Some((user_id, hash)) = account else {
        return Err(refused());
    };
    if !state.hasher.verify(body.password, hash).await? {
        return Err(refused());
    }
    let session = uuid::Uuid::new_v4().simple().to_string();
    let lifetime = state.authn.tokens.lifetime().as_secs();
    state
        .authn
        .sessions
        .open(&session, &user_id, unix_now() + lifetime + SESSION_LEEWAY)
        .await?;
    let token = state.authn.tokens.issue(&user_id, &session)?;
    Ok(Json(serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "user_id": user_id,
    })))
}

async fn logout(
    State(state): State<Arc<AuthState>>,
    User(claims): User,
) -> Result<StatusCode, ApiError> {
    state.authn.sessions.end(&claims).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_conversation(
    State(state): State<Arc<AuthState>>,
    User(claims): User,
    JsonBody(body): JsonBody<NewConversation>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    if body.members.len() > 256 || body.members.iter().any(|m| m.is_empty() || m.len() > 128) {
        return Err(ApiError::bad_request(
            "invalid_members",
            "at most 256 member ids of 1 to 128 bytes",
        ));
    }
    let id = format!("c-{}", uuid::Uuid::new_v4().simple());
    let mut members: BTreeSet<String> = body.members.into_iter().collect();
    members.insert(claims.sub.clone());
    state
        .store
        .create_conversation(&id, &claims.sub, members.into_iter().collect(), unix_now())
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn get_conversation(
    State(state): State<Arc<AuthState>>,
    User(claims): User,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let members = state.store.members(&id).await?;
    if members.is_empty() {
        return Err(ApiError::not_found("no such conversation"));
    }
    if !members.contains(&claims.sub) {
        // The audit layer records this 403 with the actor.
        return Err(ApiError::forbidden(
            Actor::user(claims.sub),
            "not a member of this conversation",
        ));
    }
    Ok(Json(serde_json::json!({ "id": id, "members": members })))
}

/// How many logins and registrations may wait for a hashing thread, per thread.
const HASH_QUEUE_PER_THREAD: usize = 32;

/// The auth service's routes, on `db` (opened with [`migrations`]).
///
/// # Errors
///
/// When the password hashing threads cannot be started.
pub fn router(kit: &Kit, db: crate::db::Db) -> std::io::Result<Router> {
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let state = Arc::new(AuthState {
        store: AuthStore::new(db),
        authn: kit.authn(),
        hasher: Hasher::new(threads, threads * HASH_QUEUE_PER_THREAD)?,
    });
    Ok(Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/conversations", post(create_conversation))
        .route("/v1/conversations/{id}", get(get_conversation))
        .with_state(state))
}
