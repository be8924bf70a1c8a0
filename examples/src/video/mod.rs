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
    CallError, CallHub, RedisCallStore, RejoinToken, Signal, StoreConfig,
};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::kit::Kit;
use crate::token::User;

const REJOIN_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct VideoState {
    hub: CallHub,
    sockets: Gauge,
}

fn call_error(e: CallError) -> ApiError {
    match e {
        CallError::NotFound(_) => ApiError::not_found("no such call"),
        CallError::InvalidId(_) => ApiError::bad_request("invalid_id", e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

async fn create_call(
    State(state): State<Arc<VideoState>>,
    User(_): User,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = format!("call-{}", uuid::Uuid::new_v4().simple());
    state.hub.create(&id).await.map_err(call_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "call_id": id }))))
}

fn participants_json(state: &VideoState, call: &str) -> Option<serde_json::Value> {
    let call = state.hub.get(call)?;
    Some(json!(call
        .participants
        .values()
        .map(|p| json!({ "participant_id": p.id, "user_id": p.user_id, "state": p.state }))
        .collect::<Vec<_>>()))
}

async fn get_call(
    State(state): State<Arc<VideoState>>,
    User(_): User,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let participants =
        participants_json(&state, &id).ok_or_else(|| ApiError::not_found("no such call"))?;
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
        .on_upgrade(move |socket| session(state, id, claims.sub, socket)))
}

#[derive(Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    participant_id: Option<String>,
    token: Option<String>,
    to: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
}

async fn session(state: Arc<VideoState>, call: String, user: String, socket: WebSocket) {
    state.sockets.inc();
    let (mut tx, mut rx) = socket.split();
    let mut me: Option<String> = None;
    let mut signals: Option<secureconnect_callstate::SignalReceiver> = None;
    let mut left = false;
    loop {
        let incoming = tokio::select! {
            message = rx.next() => message,
            signal = async {
                match signals.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(signal) = signal else { break };
                let payload: serde_json::Value = serde_json::from_str(&signal.payload).unwrap_or_default();
                let text = json!({ "type": payload["type"], "from": signal.from, "payload": payload["payload"] });
                if tx.send(Message::Text(text.to_string().into())).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(Ok(message)) = incoming else { break };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match serde_json::from_str::<ClientMessage>(&text) {
            Err(_) => {
                json!({ "type": "error", "code": "bad_message", "message": "expected a JSON object with a type" })
            }
            Ok(m) => match (m.kind.as_str(), &me) {
                ("join", None) => match state.hub.join(&call, &user).await {
                    Ok((pid, token)) => {
                        signals = state.hub.subscribe(&call, &pid).ok();
                        me = Some(pid.clone());
                        json!({ "type": "joined", "participant_id": pid, "rejoin_token": token.secret(),
                                "participants": participants_json(&state, &call) })
                    }
                    Err(e) => {
                        json!({ "type": "error", "code": "join_failed", "message": e.to_string() })
                    }
                },
                ("rejoin", None) => {
                    let pid = m.participant_id.unwrap_or_default();
                    let token = RejoinToken::from_client(m.token.unwrap_or_default());
                    match state.hub.rejoin(&call, &pid, &token) {
                        Ok(p) if p.user_id == user => {
                            signals = state.hub.subscribe(&call, &pid).ok();
                            me = Some(pid.clone());
                            json!({ "type": "rejoined", "participant_id": pid, "participants": participants_json(&state, &call) })
                        }
                        Ok(_) | Err(CallError::BadToken { .. }) => {
                            json!({ "type": "error", "code": "bad_token", "message": "wrong rejoin token" })
                        }
                        Err(e) => {
                            json!({ "type": "error", "code": "rejoin_failed", "message": e.to_string() })
                        }
                    }
                }
                ("offer" | "answer" | "ice", Some(pid)) => {
                    let relayed = json!({ "type": m.kind, "payload": m.payload }).to_string();
                    match state.hub.relay(
                        &call,
                        Signal {
                            from: pid.clone(),
                            to: m.to,
                            payload: relayed,
                        },
                    ) {
                        Ok(_) => continue,
                        Err(e) => {
                            json!({ "type": "error", "code": "relay_failed", "message": e.to_string() })
                        }
                    }
                }
                ("leave", Some(pid)) => {
                    let _ = state.hub.leave(&call, pid).await;
                    left = true;
                    let _ = tx
                        .send(Message::Text(json!({ "type": "left" }).to_string().into()))
                        .await;
                    break;
                }
                _ => {
                    json!({ "type": "error", "code": "unexpected", "message": "join or rejoin first, once" })
                }
            },
        };
        if tx
            .send(Message::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // A dropped connection keeps its place: the client may rejoin with its token
    // within the grace period.
    let _ = left;
    state.sockets.dec();
}

/// The video service's routes; recovers the calls this node owned.
///
/// # Errors
///
/// A message for a malformed node id.
pub async fn router(kit: &mut Kit, node: &str) -> Result<Router, String> {
    let store = RedisCallStore::new(kit.redis.clone(), node, StoreConfig::default())
        .map_err(|e| format!("VIDEO_NODE_ID: {e}"))?;
    let hub = CallHub::new(node, Some(store), &mut kit.registry)
        .map_err(|e| format!("VIDEO_NODE_ID: {e}"))?;
    match hub.recover().await {
        Ok(report) => tracing::info!(
            calls = report.calls.len(),
            skipped = report.skipped.len(),
            "video calls recovered"
        ),
        Err(e) => tracing::warn!(error = %e, "no calls recovered: redis unavailable"),
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
