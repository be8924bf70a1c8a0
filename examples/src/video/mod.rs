//! The video service: calls and WebSocket signaling on secureconnect-callstate.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/calls` | → 201 `{"call_id"}` |
//! | `GET /v1/calls/{id}` | participants and their state |
//! | `GET /v1/calls/{id}/ws` | WebSocket signaling (token in `Authorization` or `?access_token=`) |
//!
//! The WebSocket speaks JSON text frames:
//!
//! | client sends | server answers |
//! |---|---|
//! | `{"type":"join"}` | `{"type":"joined","participant_id","rejoin_token","participants":[…]}` |
//! | `{"type":"rejoin","participant_id","token"}` | `{"type":"rejoined",…}` or `{"type":"error","code":"bad_token"}` |
//! | `{"type":"offer"\|"answer"\|"ice","to"?,"payload"}` | relayed to `to` (or everyone else) as `{"type","from","payload"}` |
//! | `{"type":"leave"}` | `{"type":"left"}` |
//!
//! Membership persists in Redis: after a restart (even `kill -9`) the calls come back
//! with every participant awaiting rejoin; participants not back within 60 s are
//! removed.
//!
//! The messages are the enums of [`messages`]; each connection is a
//! [`Session`], which handles them.

pub mod messages;
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
use secureconnect_callstate::{CallHub, ErrorKind, RedisCallStore, RedisCallStoreConfig};
use serde_json::json;

use self::messages::{participants, ServerMessage};
use self::session::{Reply, Session};
use crate::error::ApiError;
use crate::kit::Kit;
use crate::token::User;

const REJOIN_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct VideoState {
    hub: CallHub,
    sockets: Gauge,
}

fn call_error(e: &secureconnect_callstate::Error) -> ApiError {
    match e.kind() {
        ErrorKind::NotFound => ApiError::not_found("no such call"),
        ErrorKind::InvalidId => ApiError::bad_request("invalid_id", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

async fn create_call(
    State(state): State<Arc<VideoState>>,
    User(_): User,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = format!("call-{}", uuid::Uuid::new_v4().simple());
    state.hub.create(&id).await.map_err(|e| call_error(&e))?;
    Ok((StatusCode::CREATED, Json(json!({ "call_id": id }))))
}

async fn get_call(
    State(state): State<Arc<VideoState>>,
    User(_): User,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    if state.hub.get(&id).is_none() {
        return Err(ApiError::not_found("no such call"));
    }
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| connection(state, id, claims.sub, socket)))
}

fn text(message: &ServerMessage) -> Message {
    Message::Text(message.to_text().into())
}

/// Carries one WebSocket connection: client frames go to its [`Session`], which
/// answers what to send; signals from the other participants go out as they come.
async fn connection(state: Arc<VideoState>, call: String, user: String, socket: WebSocket) {
    state.sockets.inc();
    let (mut tx, mut rx) = socket.split();
    let mut session = Session::new(state.hub.clone(), call, user);
    loop {
        let incoming = tokio::select! {
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
    state.sockets.dec();
}

/// The video service's routes; recovers the calls this node owned.
///
/// # Errors
///
/// A message for a malformed node id.
pub async fn router(kit: &mut Kit, node: &str) -> Result<Router, String> {
    let store = RedisCallStore::new(
        kit.redis.clone(),
        node,
        RedisCallStoreConfig::default(),
        &mut kit.registry,
    )
    .map_err(|e| format!("VIDEO_NODE_ID: {e}"))?;
    let hub = CallHub::new(node, Some(store), &mut kit.registry)
        .map_err(|e| format!("VIDEO_NODE_ID: {e}"))?;
    match hub.recover().await {
        Ok(report) => tracing::info!(
            calls = report.calls.len(),
            skipped = report.skipped.len(),
            "video calls recovered"
        ),
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "no calls recovered: redis unavailable")
        }
    }
    let sockets = Gauge::default();
    kit.registry.register(
        "websocket_connections",
        "Open signaling WebSocket connections",
        sockets.clone(),
    );
    let expiring = hub.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let removed = expiring.expire_awaiting(REJOIN_GRACE).await;
            if removed > 0 {
                tracing::info!(removed, "participants that did not rejoin were removed");
            }
        }
    });
    let state = Arc::new(VideoState { hub, sockets });
    Ok(Router::new()
        .route("/v1/calls", post(create_call))
        .route("/v1/calls/{id}", get(get_call))
        .route("/v1/calls/{id}/ws", get(websocket))
        .with_state(state))
}
