//! The signaling messages, as JSON text frames tagged by `"type"`: [`ClientMessage`]
//! (client → server) and [`ServerMessage`] (server → client). A relayed payload is
//! parsed once, with the sender's frame; the recipients' frame is written once, when the
//! signal is relayed, and sent to each of them as it is.

use secureconnect_callstate::{CallHub, ParticipantState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A message from the client.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// `{"type":"join"}`: join the call as a new participant.
    Join,
    /// `{"type":"rejoin","participant_id","token"}`: take one's place back after a
    /// restart of the service or a dropped connection.
    Rejoin {
        /// The participant id handed out by `joined`.
        participant_id: Option<String>,
        /// The rejoin token handed out by `joined`.
        token: Option<String>,
    },
    /// `{"type":"offer","to"?,"payload"}`: an SDP offer for `to` or everyone else.
    Offer(Relay),
    /// `{"type":"answer","to"?,"payload"}`: an SDP answer.
    Answer(Relay),
    /// `{"type":"ice","to"?,"payload"}`: an ICE candidate.
    Ice(Relay),
    /// `{"type":"leave"}`: leave the call (the last one out ends it).
    Leave,
    /// Any other `type`: answered with the error `unexpected`.
    #[serde(other)]
    Unknown,
}

/// A signal to relay: its recipient and its payload, as the client sent them.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Relay {
    /// The recipient, or everyone else when absent.
    pub to: Option<String>,
    /// Relayed as it is (`null` when absent).
    #[serde(default)]
    pub payload: Value,
}

/// Which signal is relayed: the `type` of the message the recipient gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// An ICE candidate.
    Ice,
}

impl SignalKind {
    /// `offer`, `answer` or `ice`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Offer => "offer",
            Self::Answer => "answer",
            Self::Ice => "ice",
        }
    }

    /// The frame its recipients get: `{"type": kind, "from", "payload"}`.
    pub fn message(self, relayed: Relayed) -> ServerMessage {
        match self {
            Self::Offer => ServerMessage::Offer(relayed),
            Self::Answer => ServerMessage::Answer(relayed),
            Self::Ice => ServerMessage::Ice(relayed),
        }
    }
}

/// A participant as `joined`, `rejoined` and `GET /v1/calls/{id}` list it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ParticipantView {
    /// The participant's id.
    pub participant_id: String,
    /// The user behind it.
    pub user_id: String,
    /// `connected` or `awaiting_rejoin`.
    pub state: ParticipantState,
}

/// The participants of a call, `None` when there is no such call.
pub fn participants(hub: &CallHub, call: &str) -> Option<Vec<ParticipantView>> {
    let call = hub.get(call)?;
    Some(
        call.participants
            .into_values()
            .map(|p| ParticipantView {
                participant_id: p.id,
                user_id: p.user_id,
                state: p.state,
            })
            .collect(),
    )
}

/// A relayed signal as its recipient gets it.
#[derive(Debug, Serialize, PartialEq)]
pub struct Relayed {
    /// The sender's participant id.
    pub from: String,
    /// As the sender sent it.
    pub payload: Value,
}

/// Why a client message failed: the `code` of an `error` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a JSON object with a `type`.
    BadMessage,
    /// The rejoin token does not match (or belongs to another user).
    BadToken,
    /// Joining failed (the call ended meanwhile, …).
    JoinFailed,
    /// Rejoining failed (no such participant, …).
    RejoinFailed,
    /// Relaying failed (the sender is no longer in the call, …).
    RelayFailed,
    /// The service is still recovering its calls after a restart: retry the rejoin
    /// shortly.
    Recovering,
    /// Not expected now: join or rejoin first, once.
    Unexpected,
    /// The session of the connection's token ended (logout): the server closes the
    /// connection after this message.
    SessionEnded,
}

/// A message to the client.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `{"type":"joined","participant_id","rejoin_token","participants":[…]}`.
    Joined {
        /// The new participant's id.
        participant_id: String,
        /// The token to present on `rejoin`; given once.
        rejoin_token: String,
        /// Everyone in the call.
        participants: Option<Vec<ParticipantView>>,
    },
    /// `{"type":"rejoined","participant_id","participants":[…]}`.
    Rejoined {
        /// The participant's id.
        participant_id: String,
        /// Everyone in the call.
        participants: Option<Vec<ParticipantView>>,
    },
    /// `{"type":"offer","from","payload"}`, relayed.
    Offer(Relayed),
    /// `{"type":"answer","from","payload"}`, relayed.
    Answer(Relayed),
    /// `{"type":"ice","from","payload"}`, relayed.
    Ice(Relayed),
    /// `{"type":"left"}`: the connection closes.
    Left,
    /// `{"type":"error","code","message"}`.
    Error {
        /// What failed.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
}

impl ServerMessage {
    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// The text frame. Keys come out in sorted order at every level, byte for byte as
    /// the service has always sent them.
    pub fn to_text(&self) -> String {
        serde_json::to_value(self)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn client_messages_read_as_before() {
        let read = |text: &str| serde_json::from_str::<ClientMessage>(text).ok();
        assert_eq!(read(r#"{"type":"join"}"#), Some(ClientMessage::Join));
        assert_eq!(
            read(r#"{"type":"leave","x":1}"#),
            Some(ClientMessage::Leave)
        );
        assert_eq!(
            read(r#"{"type":"rejoin","participant_id":"p-1","token":"t"}"#),
            Some(ClientMessage::Rejoin {
                participant_id: Some("p-1".into()),
                token: Some("t".into())
            })
        );
        assert_eq!(
            read(r#"{"type":"rejoin"}"#),
            Some(ClientMessage::Rejoin {
                participant_id: None,
                token: None
            })
        );
        assert_eq!(
            read(r#"{"type":"offer","to":"p-2","payload":{"sdp":"v=0"}}"#),
            Some(ClientMessage::Offer(Relay {
                to: Some("p-2".into()),
                payload: json!({ "sdp": "v=0" })
            }))
        );
        assert_eq!(
            read(r#"{"payload":{"candidate":"c1"},"type":"ice"}"#),
            Some(ClientMessage::Ice(Relay {
                to: None,
                payload: json!({ "candidate": "c1" })
            }))
        );
        assert_eq!(
            read(r#"{"type":"answer"}"#),
            Some(ClientMessage::Answer(Relay {
                to: None,
                payload: Value::Null
            }))
        );
        assert_eq!(read(r#"{"type":"hello"}"#), Some(ClientMessage::Unknown));
        for bad in [
            "not json",
            "{}",
            r#"{"type":1}"#,
            r#"{"type":"rejoin","token":7}"#,
            r#"{"type":"offer","to":7}"#,
        ] {
            assert_eq!(read(bad), None, "{bad}");
        }
    }

    /// Each message, byte for byte as the `json!` literals of the service wrote them.
    #[test]
    fn server_messages_are_written_as_before() {
        let participants = || {
            Some(vec![ParticipantView {
                participant_id: "p-1".into(),
                user_id: "u-1".into(),
                state: ParticipantState::AwaitingRejoin,
            }])
        };
        let listed =
            json!([{ "participant_id": "p-1", "user_id": "u-1", "state": "awaiting_rejoin" }]);
        let cases = [
            (
                ServerMessage::Joined {
                    participant_id: "p-1".into(),
                    rejoin_token: "t".into(),
                    participants: participants(),
                },
                json!({ "type": "joined", "participant_id": "p-1", "rejoin_token": "t", "participants": listed }),
            ),
            (
                ServerMessage::Joined {
                    participant_id: "p-1".into(),
                    rejoin_token: "t".into(),
                    participants: None,
                },
                json!({ "type": "joined", "participant_id": "p-1", "rejoin_token": "t", "participants": null }),
            ),
            (
                ServerMessage::Rejoined {
                    participant_id: "p-1".into(),
                    participants: participants(),
                },
                json!({ "type": "rejoined", "participant_id": "p-1", "participants": listed }),
            ),
            (
                SignalKind::Offer.message(Relayed {
                    from: "p-1".into(),
                    payload: json!({ "sdp": "v=0" }),
                }),
                json!({ "type": "offer", "from": "p-1", "payload": { "sdp": "v=0" } }),
            ),
            (
                SignalKind::Answer.message(Relayed {
                    from: "p-2".into(),
                    payload: Value::Null,
                }),
                json!({ "type": "answer", "from": "p-2", "payload": null }),
            ),
            (
                SignalKind::Ice.message(Relayed {
                    from: "p-2".into(),
                    payload: json!({ "candidate": "c1" }),
                }),
                json!({ "type": "ice", "from": "p-2", "payload": { "candidate": "c1" } }),
            ),
            (ServerMessage::Left, json!({ "type": "left" })),
            (
                ServerMessage::error(ErrorCode::BadToken, "wrong rejoin token"),
                json!({ "type": "error", "code": "bad_token", "message": "wrong rejoin token" }),
            ),
            (
                ServerMessage::error(ErrorCode::BadMessage, "m"),
                json!({ "type": "error", "code": "bad_message", "message": "m" }),
            ),
            (
                ServerMessage::error(ErrorCode::JoinFailed, "m"),
                json!({ "type": "error", "code": "join_failed", "message": "m" }),
            ),
            (
                ServerMessage::error(ErrorCode::RejoinFailed, "m"),
                json!({ "type": "error", "code": "rejoin_failed", "message": "m" }),
            ),
            (
                ServerMessage::error(ErrorCode::RelayFailed, "m"),
                json!({ "type": "error", "code": "relay_failed", "message": "m" }),
            ),
            (
                ServerMessage::error(ErrorCode::Recovering, "m"),
                json!({ "type": "error", "code": "recovering", "message": "m" }),
            ),
            (
                ServerMessage::error(ErrorCode::Unexpected, "m"),
                json!({ "type": "error", "code": "unexpected", "message": "m" }),
            ),
            (
                ServerMessage::error(ErrorCode::SessionEnded, "m"),
                json!({ "type": "error", "code": "session_ended", "message": "m" }),
            ),
        ];
        for (message, before) in cases {
            assert_eq!(message.to_text(), before.to_string());
        }
    }
}
