//! The video service: calls and WebSocket signaling on secureconnect-callstate.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/calls` | → 201 `{"call_id"}`; 429 `{"error":"too_many_calls","message"}` beyond `CALLS_PER_USER_MAX` open calls of the user |
//! | `GET /v1/calls/{id}` | participants and their state (`connected`, `awaiting_rejoin`); 404 once the call ended, 503 `recovering` while calls from before a restart may still come back (for at most `REJOIN_GRACE_SECS` after start: without Redis a recovery never ends) |
//! | `GET /v1/calls/{id}/ws` | WebSocket signaling (token in `Authorization` or `?access_token=`) |
//!
//! The WebSocket speaks JSON text frames:
//!
//! | client sends | server answers |
//! |---|---|
//! | `{"type":"join"}` | `{"type":"joined","participant_id","rejoin_token","participants":[…]}` |
//! | `{"type":"rejoin","participant_id","token"}` | `{"type":"rejoined",…}`, or `{"type":"error","code":"bad_token"}`, or `"code":"recovering"` (retry shortly) |
//! | `{"type":"offer"\|"answer"\|"ice","to"?,"payload"}` | relayed to `to` (or everyone else) as `{"type","from","payload"}` |
//! | `{"type":"leave"}` | `{"type":"left"}` |
//!
//! The session of the token that opened a WebSocket is checked again every
//! [`CACHE_TTL`]: once it ended (logout), the server sends
//! `{"type":"error","code":"session_ended"}` and closes the connection (the participant
//! awaits rejoin, as after any close without `leave`).
//!
//! Membership persists in Redis: after a restart (even `kill -9`) the calls come back
//! with every participant awaiting rejoin — recovery is retried in the background until
//! Redis answers, so Redis may be unreachable at start. A WebSocket that closes without
//! `leave` leaves its participant awaiting rejoin too. Settings (environment):
//!
//! | variable | default | |
//! |---|---|---|
//! | `REJOIN_GRACE_SECS` | 60 | a participant awaiting rejoin that is not back within this is removed |
//! | `CALL_EMPTY_TTL_SECS` | 300 | a call without participants ends after this |
//! | `CALLS_PER_USER_MAX` | 20 | open calls one user may have created; beyond, `POST /v1/calls` answers 429 |
//! | `VIDEO_NODE_ID` | `video-1` | this node's id: unique per node, kept across restarts |
//! | `VIDEO_ADVERTISE_ADDR` | `VIDEO_ADDR` | the `host:port` this node publishes, where the gateway reaches it |
//! | `VIDEO_LEASE_SECS` | 15 | this node's lease: refreshed every third of it; once it lapsed, another node adopts this node's calls |
//!
//! Several nodes share one Redis (see [`presence`]): each publishes itself, and adopts
//! the calls of a node whose lease lapsed; their participants rejoin through the
//! gateway, which routes each call's requests to its owner.
//!
//! A malformed or zero value stops the service at start with a message naming the
//! variable.
//!
//! The messages are the enums of [`messages`]; each connection is a
//! [`Session`], which handles them.

pub mod history;
pub mod messages;
pub mod presence;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use secureconnect_callstate::{
    CallHub, CallHubConfig, ErrorKind, RedisCallStore, RedisCallStoreConfig,
};
use serde_json::json;

use self::messages::{participants, ErrorCode, ServerMessage};
use self::session::{Connections, Reply, Session};
use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::kit::Kit;
use crate::sessions::{Verdict, CACHE_TTL};
use crate::token::{Authn, AuthnState, Claims, User};

#[derive(Debug)]
struct VideoState {
    hub: CallHub,
    history: history::CallHistory,
    sockets: Gauge,
    connections: Connections,
    authn: Authn,
}

impl AuthnState for VideoState {
    fn authn(&self) -> &Authn {
        &self.authn
    }
}

fn call_error(e: &secureconnect_callstate::Error) -> ApiError {
    match e.kind() {
        ErrorKind::NotFound => ApiError::not_found("no such call"),
        ErrorKind::InvalidId => ApiError::bad_request("invalid_id", e.to_string()),
        ErrorKind::TooManyCalls => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_calls",
            e.to_string(),
        ),
        ErrorKind::Recovering => recovering(),
        _ => ApiError::internal(e.to_string()),
    }
}

fn recovering() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "recovering",
        "calls are still being recovered; retry shortly",
    )
}

/// Waits for a recovery under way to list this node's calls and loads call `id` if
/// it is one of them (the hub's `recovery_wait`, 2 s); 503 `recovering` past that.
async fn ready(hub: &CallHub, id: &str) -> Result<(), ApiError> {
    hub.find(id).await.map(drop).map_err(|e| call_error(&e))
}

async fn create_call(
    State(state): State<Arc<VideoState>>,
    User(claims): User,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = format!("call-{}", uuid::Uuid::new_v4().simple());
    state
        .hub
        .create_for(&id, &claims.sub)
        .await
        .map_err(|e| call_error(&e))?;
    // Recorded before it is announced: a call the history cannot hold is not run.
    if let Err(e) = state.history.created(&id, &claims.sub).await {
        let _ = state.hub.end(&id).await;
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(json!({ "call_id": id }))))
}

async fn get_call(
    State(state): State<Arc<VideoState>>,
    User(_): User,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    ready(&state.hub, &id).await?;
    let participants =
        participants(&state.hub, &id).ok_or_else(|| ApiError::not_found("no such call"))?;
    Ok(Json(json!({ "call_id": id, "participants": participants })))
}

async fn websocket(
    State(state): State<Arc<VideoState>>,
    User(claims): User,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    ready(&state.hub, &id).await?;
    if state.hub.get(&id).is_none() {
        return Err(ApiError::not_found("no such call"));
    }
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| connection(state, id, claims, socket)))
}

fn text(message: &ServerMessage) -> Message {
    Message::Text(message.to_text().into())
}

/// Carries one WebSocket connection: client frames go to its [`Session`], which
/// answers what to send; signals from the other participants go out as they come; the
/// token's session is checked every [`CACHE_TTL`].
async fn connection(state: Arc<VideoState>, call: String, claims: Claims, socket: WebSocket) {
    state.sockets.inc();
    let (mut tx, mut rx) = socket.split();
    let mut session = Session::new(state.hub.clone(), call, claims.sub.clone())
        .with_connections(state.connections.clone());
    let mut recheck = tokio::time::interval(CACHE_TTL);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let incoming = tokio::select! {
            _ = recheck.tick() => {
                if matches!(state.authn.sessions.check(&claims).await, Ok(Verdict::Ended)) {
                    let ended = ServerMessage::error(
                        ErrorCode::SessionEnded,
                        "this session has ended (logged out): log in again",
                    );
                    let _ = tx.send(text(&ended)).await;
                    let close = axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::POLICY,
                        reason: "session ended".into(),
                    };
                    let _ = tx.send(Message::Close(Some(close))).await;
                    break;
                }
                continue;
            }
            message = rx.next() => message,
            signal = session.next_signal() => {
                let Some(frame) = signal else { break };
                if tx.send(Message::Text(frame.get().into())).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(Ok(message)) = incoming else { break };
        let frame = match message {
            Message::Text(frame) => frame,
            Message::Close(_) => break,
            _ => continue,
        };
        match session.handle_text(&frame).await {
            Reply::Nothing => {}
            Reply::Send(reply) => {
                if tx.send(text(&reply)).await.is_err() {
                    break;
                }
            }
            Reply::Close(reply) => {
                let _ = tx.send(text(&reply)).await;
                break;
            }
        }
    }
    // Closed without a leave: the participant awaits rejoin for the grace period.
    session.disconnected();
    state.sockets.dec();
}

/// The video service's routes; recovers the calls this node owned, in the background
/// until Redis answers, publishes this node's presence (adopting the calls of nodes
/// whose lease lapsed) and records its calls in `db` ([`history`]).
///
/// # Errors
///
/// A message for a malformed node id or setting.
pub fn router(kit: &mut Kit, config: &Config, db: Db) -> Result<Router, String> {
    let node = config.video_node.as_str();
    // Call keys outlive a dead node's lease long enough to be adopted.
    let store_config = RedisCallStoreConfig::default()
        .lease_ttl(config.video_lease)
        .call_ttl((config.video_lease * 4).max(Duration::from_secs(60)));
    let store = RedisCallStore::new(kit.redis.clone(), node, store_config, &mut kit.registry)
        .map_err(|e| format!("VIDEO_NODE_ID: {e}"))?;
    let hub_config = CallHubConfig::default()
        .rejoin_grace(config.rejoin_grace)
        .empty_call_ttl(config.call_empty_ttl)
        .calls_per_user(config.calls_per_user_max);
    let hub = CallHub::new(node, Some(store.clone()), hub_config, &mut kit.registry)
        .map_err(|e| format!("video settings: {}", crate::error::chain(&e)))?;
    hub.recover_in_background();
    let history = history::CallHistory::new(db);
    history.follow(&hub);
    presence::Presence::new(
        hub.clone(),
        store,
        config.video_advertise_addr.clone(),
        &mut kit.registry,
    )
    .start();
    let sockets = Gauge::default();
    kit.registry.register(
        "websocket_connections",
        "Open signaling WebSocket connections",
        sockets.clone(),
    );
    let state = Arc::new(VideoState {
        hub,
        history,
        sockets,
        connections: Connections::default(),
        authn: kit.authn(),
    });
    Ok(Router::new()
        .route("/v1/calls", post(create_call))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/calls/{id}/ws", get(websocket))
        .with_state(state))
}
