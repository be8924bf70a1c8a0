//! [`Session`]: one signaling WebSocket connection's state (its call, its
//! participant once joined, the signals addressed to it), handling each client
//! message and answering what to send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use secureconnect_callstate::{CallHub, RejoinToken, Signal, SignalReceiver};
use serde_json::value::RawValue;

use super::messages::{
    participants, ClientMessage, ErrorCode, Relay, Relayed, ServerMessage, SignalKind,
};

/// What the connection does after a client message.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Send this message.
    Send(ServerMessage),
    /// Send nothing (a signal went to the others).
    Nothing,
    /// Send this message, then close the connection (the participant left).
    Close(ServerMessage),
}

/// Which connection of each participant is the current one, shared by the sessions of
/// a service: a connection that closes marks its participant awaiting rejoin only if no
/// newer connection (a rejoin from the same client, before the old socket was found
/// dead) took the participant over.
///
/// A rejoin claims the participant before the hub marks it connected, so that a close
/// of the current connection meanwhile waits for the rejoin's outcome: it counts only
/// if no rejoin succeeds. A participant has an entry while a connection holds it or a
/// rejoin is under way, no longer (a leave, a close or a failed rejoin removes it).
#[derive(Clone, Debug, Default)]
pub struct Connections(Arc<Mutex<ConnectionTable>>);

#[derive(Debug, Default)]
struct ConnectionTable {
    next: u64,
    slots: HashMap<(String, String), Slot>,
}

/// One participant's connections.
#[derive(Debug, Default)]
struct Slot {
    /// The connection that holds the participant.
    current: Option<u64>,
    /// Rejoins under way.
    claims: usize,
    /// The current connection closed while a rejoin was under way: unless one
    /// succeeds, the participant awaits rejoin.
    closed: bool,
}

fn key(call: &str, participant: &str) -> (String, String) {
    (call.to_owned(), participant.to_owned())
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, ConnectionTable> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection holds the participant (it just joined).
    fn attach(&self, call: &str, participant: &str) -> u64 {
        let mut table = self.lock();
        table.next += 1;
        let id = table.next;
        table
            .slots
            .entry(key(call, participant))
            .or_default()
            .current = Some(id);
        id
    }

    /// A new connection is about to rejoin the participant; [`settle`](Self::settle)
    /// says how it went.
    fn claim(&self, call: &str, participant: &str) -> u64 {
        let mut table = self.lock();
        table.next += 1;
        let id = table.next;
        table
            .slots
            .entry(key(call, participant))
            .or_default()
            .claims += 1;
        id
    }

    /// Rejoin `id` is over. If it succeeded, its connection holds the participant.
    /// If not, and the connection that held the participant closed meanwhile with no
    /// other rejoin under way, runs `orphaned` (under the table's lock, as
    /// [`detach`](Self::detach) runs its `f`): that close counts after all.
    fn settle(
        &self,
        call: &str,
        participant: &str,
        id: u64,
        rejoined: bool,
        orphaned: impl FnOnce(),
    ) {
        let mut table = self.lock();
        let key = key(call, participant);
        let Some(slot) = table.slots.get_mut(&key) else {
            return;
        };
        slot.claims = slot.claims.saturating_sub(1);
        if rejoined {
            slot.current = Some(id);
            slot.closed = false;
        } else if slot.claims == 0 && slot.current.is_none() {
            let closed = slot.closed;
            table.slots.remove(&key);
            if closed {
                orphaned();
            }
        }
    }

    /// Connection `id` closed: if it still held the participant, runs `f` (under the
    /// table's lock) — or, while a rejoin is under way, leaves that to the rejoin's
    /// [`settle`](Self::settle).
    fn detach(&self, call: &str, participant: &str, id: u64, f: impl FnOnce()) {
        let mut table = self.lock();
        let key = key(call, participant);
        let Some(slot) = table.slots.get_mut(&key) else {
            return;
        };
        if slot.current != Some(id) {
            return;
        }
        slot.current = None;
        if slot.claims > 0 {
            slot.closed = true;
        } else {
            table.slots.remove(&key);
            f();
        }
    }

    /// Connection `id` let the participant go (it left): nothing to mark.
    fn release(&self, call: &str, participant: &str, id: u64) {
        let mut table = self.lock();
        let key = key(call, participant);
        let Some(slot) = table.slots.get_mut(&key) else {
            return;
        };
        if slot.current == Some(id) {
            slot.current = None;
            slot.closed = false;
            if slot.claims == 0 {
                table.slots.remove(&key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// The participant's last connection closed without a leave.
fn mark_awaiting(hub: &CallHub, call: &str, me: &str) {
    if let Err(e) = hub.disconnect(call, me) {
        tracing::debug!(call = %call, participant = %me, error = %e, "disconnect");
    }
}

/// One signaling connection: the call it is for, the user behind it, and, once it
/// joined or rejoined, its participant and the signals addressed to it.
///
/// A dropped connection keeps its place: [`Session::disconnected`] marks the
/// participant awaiting rejoin, and the client may rejoin with its token within the
/// grace period.
#[derive(Debug)]
pub struct Session {
    hub: CallHub,
    call: String,
    user: String,
    me: Option<String>,
    signals: Option<SignalReceiver>,
    connections: Connections,
    connection: u64,
}

impl Session {
    /// A connection of `user` to `call`, not joined yet.
    pub fn new(hub: CallHub, call: impl Into<String>, user: impl Into<String>) -> Self {
        Self {
            hub,
            call: call.into(),
            user: user.into(),
            me: None,
            signals: None,
            connections: Connections::default(),
            connection: 0,
        }
    }

    /// Shares the service's [`Connections`], so that only a participant's latest
    /// connection marks it awaiting rejoin when it closes.
    #[must_use]
    pub fn with_connections(mut self, connections: Connections) -> Self {
        self.connections = connections;
        self
    }

    /// The connection closed: unless the participant left (or a newer connection took
    /// it over), it awaits rejoin for the hub's grace period.
    pub fn disconnected(&mut self) {
        let Some(me) = self.me.take() else { return };
        self.signals = None;
        let (hub, call) = (&self.hub, &self.call);
        self.connections
            .detach(call, &me, self.connection, || mark_awaiting(hub, call, &me));
    }

    fn attach(&mut self, me: &str) {
        self.connection = self.connections.attach(&self.call, me);
    }

    /// The participant, once joined or rejoined.
    pub fn participant(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// Handles a text frame.
    pub async fn handle_text(&mut self, text: &str) -> Reply {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => self.handle(message).await,
            Err(_) => Reply::Send(ServerMessage::error(
                ErrorCode::BadMessage,
                "expected a JSON object with a type",
            )),
        }
    }

    /// Handles a client message.
    pub async fn handle(&mut self, message: ClientMessage) -> Reply {
        let reply = match (message, self.me.clone()) {
            (ClientMessage::Join, None) => self.join().await,
            (
                ClientMessage::Rejoin {
                    participant_id,
                    token,
                },
                None,
            ) => {
                self.rejoin(
                    participant_id.unwrap_or_default(),
                    &RejoinToken::from_client(token.unwrap_or_default()),
                )
                .await
            }
            (ClientMessage::Offer(relay), Some(me)) => {
                return self.relay(me, SignalKind::Offer, relay)
            }
            (ClientMessage::Answer(relay), Some(me)) => {
                return self.relay(me, SignalKind::Answer, relay)
            }
            (ClientMessage::Ice(relay), Some(me)) => return self.relay(me, SignalKind::Ice, relay),
            (ClientMessage::Leave, Some(me)) => {
                let _ = self.hub.leave(&self.call, &me).await;
                self.me = None;
                self.signals = None;
                self.connections.release(&self.call, &me, self.connection);
                return Reply::Close(ServerMessage::Left);
            }
            _ => ServerMessage::error(ErrorCode::Unexpected, "join or rejoin first, once"),
        };
        Reply::Send(reply)
    }

    async fn join(&mut self) -> ServerMessage {
        match self.hub.join(&self.call, &self.user).await {
            Ok((me, token)) => {
                self.signals = self.hub.subscribe(&self.call, &me).ok();
                self.attach(&me);
                self.me = Some(me.clone());
                ServerMessage::Joined {
                    participant_id: me,
                    rejoin_token: token.secret().to_owned(),
                    participants: participants(&self.hub, &self.call),
                }
            }
            Err(e) => ServerMessage::error(ErrorCode::JoinFailed, e.to_string()),
        }
    }

    async fn rejoin(&mut self, me: String, token: &RejoinToken) -> ServerMessage {
        self.rejoin_then(me, token, || {}).await
    }

    /// Rejoins, running `between` once the hub answered and before this connection
    /// holds the participant (where a test lets the old connection close).
    async fn rejoin_then(
        &mut self,
        me: String,
        token: &RejoinToken,
        between: impl FnOnce(),
    ) -> ServerMessage {
        // Claimed before the hub marks the participant connected: a close of its old
        // connection from now on cannot mark it awaiting rejoin unless this fails.
        let claim = self.connections.claim(&self.call, &me);
        // The hub checks the user and the token before it changes anything.
        let rejoined = self.hub.rejoin(&self.call, &me, &self.user, token).await;
        between();
        let (hub, call) = (&self.hub, &self.call);
        self.connections
            .settle(call, &me, claim, rejoined.is_ok(), || {
                mark_awaiting(hub, call, &me)
            });
        match rejoined {
            Ok(_) => {
                self.signals = self.hub.subscribe(&self.call, &me).ok();
                self.connection = claim;
                self.me = Some(me.clone());
                ServerMessage::Rejoined {
                    participant_id: me,
                    participants: participants(&self.hub, &self.call),
                }
            }
            Err(e) if e.is_bad_token() => {
                ServerMessage::error(ErrorCode::BadToken, "wrong rejoin token")
            }
            Err(e) if e.is_recovering() => ServerMessage::error(
                ErrorCode::Recovering,
                "calls are still being recovered; retry shortly",
            ),
            Err(e) => ServerMessage::error(ErrorCode::RejoinFailed, e.to_string()),
        }
    }

    fn relay(&self, me: String, kind: SignalKind, relay: Relay) -> Reply {
        // The recipients' frame, written once for all of them: the hub keeps text, not
        // a parsed tree, however long the slowest reader takes.
        let frame = kind.message(Relayed {
            from: me.clone(),
            payload: relay.payload,
        });
        let Ok(payload) = RawValue::from_string(frame.to_text()) else {
            return Reply::Send(ServerMessage::error(
                ErrorCode::RelayFailed,
                "the signal could not be encoded",
            ));
        };
        let signal = Signal {
            from: me,
            to: relay.to,
            payload: Arc::from(payload),
        };
        match self.hub.relay(&self.call, signal) {
            Ok(_) => Reply::Nothing,
            Err(e) => Reply::Send(ServerMessage::error(ErrorCode::RelayFailed, e.to_string())),
        }
    }

    /// The next signal for this participant, as the text frame to send; `None` when the
    /// call is gone. Pending until the participant joined or rejoined.
    pub async fn next_signal(&mut self) -> Option<Arc<RawValue>> {
        let Some(signals) = self.signals.as_mut() else {
            return std::future::pending().await;
        };
        Some(signals.recv().await?.payload)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus_client::registry::Registry;
    use secureconnect_callstate::{CallHubConfig, ParticipantState};
    use serde_json::json;
    use std::time::Duration;

    use super::*;

    async fn hub() -> CallHub {
        let hub = CallHub::new(
            "node-a",
            None,
            CallHubConfig::default(),
            &mut Registry::default(),
        )
        .unwrap();
        hub.create("c").await.unwrap();
        hub
    }

    fn error_code(reply: &Reply) -> Option<ErrorCode> {
        match reply {
            Reply::Send(ServerMessage::Error { code, .. }) => Some(*code),
            _ => None,
        }
    }

    #[tokio::test]
    async fn join_relay_and_leave() {
        let hub = hub().await;
        let mut alice = Session::new(hub.clone(), "c", "alice");
        let mut bob = Session::new(hub.clone(), "c", "bob");
        assert_eq!(
            error_code(&alice.handle_text(r#"{"type":"ice"}"#).await),
            Some(ErrorCode::Unexpected),
            "join first"
        );
        let Reply::Send(ServerMessage::Joined { participant_id, .. }) =
            alice.handle_text(r#"{"type":"join"}"#).await
        else {
            panic!("joined")
        };
        assert_eq!(alice.participant(), Some(participant_id.as_str()));
        assert_eq!(
            error_code(&alice.handle_text(r#"{"type":"join"}"#).await),
            Some(ErrorCode::Unexpected),
            "once"
        );
        let Reply::Send(ServerMessage::Joined { participants, .. }) =
            bob.handle_text(r#"{"type":"join"}"#).await
        else {
            panic!("joined")
        };
        assert_eq!(participants.map(|p| p.len()), Some(2));

        let offer = json!({ "type": "offer", "payload": { "sdp": "v=0" } }).to_string();
        assert_eq!(alice.handle_text(&offer).await, Reply::Nothing);
        assert_eq!(
            bob.next_signal().await.map(|frame| frame.get().to_owned()),
            Some(
                ServerMessage::Offer(Relayed {
                    from: participant_id.clone(),
                    payload: json!({ "sdp": "v=0" })
                })
                .to_text()
            )
        );
        assert_eq!(
            alice.handle_text(r#"{"type":"leave"}"#).await,
            Reply::Close(ServerMessage::Left)
        );
        assert_eq!(hub.get("c").unwrap().participants.len(), 1);
    }

    #[tokio::test]
    async fn bad_messages_and_wrong_tokens_get_errors() {
        let hub = hub().await;
        let mut s = Session::new(hub.clone(), "c", "alice");
        assert_eq!(
            error_code(&s.handle_text("{").await),
            Some(ErrorCode::BadMessage)
        );
        assert_eq!(
            error_code(&s.handle_text(r#"{"type":"dance"}"#).await),
            Some(ErrorCode::Unexpected)
        );
        assert_eq!(
            error_code(&s.handle_text(r#"{"type":"rejoin"}"#).await),
            Some(ErrorCode::RejoinFailed)
        );
        let (me, token) = hub.join("c", "alice").await.unwrap();
        hub.disconnect("c", &me).unwrap();
        let wrong = json!({ "type": "rejoin", "participant_id": me, "token": "guess" });
        assert_eq!(
            error_code(&s.handle_text(&wrong.to_string()).await),
            Some(ErrorCode::BadToken)
        );
        let right = json!({ "type": "rejoin", "participant_id": me, "token": token.secret() });
        let mut mallory = Session::new(hub.clone(), "c", "mallory");
        assert_eq!(
            error_code(&mallory.handle_text(&right.to_string()).await),
            Some(ErrorCode::BadToken),
            "another user's token"
        );
        assert_eq!(
            hub.get("c").unwrap().participants[&me].state,
            ParticipantState::AwaitingRejoin,
            "a refused rejoin changes nothing"
        );
        assert!(matches!(
            s.handle_text(&right.to_string()).await,
            Reply::Send(ServerMessage::Rejoined { .. })
        ));
    }

    #[tokio::test]
    async fn only_the_latest_connection_of_a_participant_marks_it_awaiting_when_it_closes() {
        let hub = hub().await;
        let connections = Connections::default();
        let session =
            |user: &str| Session::new(hub.clone(), "c", user).with_connections(connections.clone());
        let state = |me: &str| hub.get("c").unwrap().participants[me].state;
        let mut first = session("alice");
        let Reply::Send(ServerMessage::Joined {
            participant_id: me,
            rejoin_token,
            ..
        }) = first.handle_text(r#"{"type":"join"}"#).await
        else {
            panic!("joined")
        };
        // The client reconnects before its first socket is found dead.
        let mut second = session("alice");
        let rejoin = json!({ "type": "rejoin", "participant_id": me, "token": rejoin_token });
        assert!(matches!(
            second.handle_text(&rejoin.to_string()).await,
            Reply::Send(ServerMessage::Rejoined { .. })
        ));
        first.disconnected();
        assert_eq!(
            state(&me),
            ParticipantState::Connected,
            "the newer one holds it"
        );
        second.disconnected();
        assert_eq!(state(&me), ParticipantState::AwaitingRejoin);
        // A participant that left is not marked.
        let mut bob = session("bob");
        let Reply::Send(ServerMessage::Joined { participant_id, .. }) =
            bob.handle_text(r#"{"type":"join"}"#).await
        else {
            panic!("joined")
        };
        bob.handle_text(r#"{"type":"leave"}"#).await;
        bob.disconnected();
        assert!(!hub
            .get("c")
            .unwrap()
            .participants
            .contains_key(&participant_id));
    }

    #[tokio::test]
    async fn a_participant_that_leaves_leaves_no_connection_behind() {
        let hub = hub().await;
        // Someone stays, so that the call goes on.
        hub.join("c", "carol").await.unwrap();
        let connections = Connections::default();
        for _ in 0..3 {
            let mut alice =
                Session::new(hub.clone(), "c", "alice").with_connections(connections.clone());
            alice.handle_text(r#"{"type":"join"}"#).await;
            assert_eq!(connections.len(), 1);
            assert_eq!(
                alice.handle_text(r#"{"type":"leave"}"#).await,
                Reply::Close(ServerMessage::Left)
            );
            alice.disconnected();
        }
        // A rejoined participant that leaves, too.
        let (me, token) = hub.join("c", "alice").await.unwrap();
        hub.disconnect("c", &me).unwrap();
        let mut alice =
            Session::new(hub.clone(), "c", "alice").with_connections(connections.clone());
        let rejoin = json!({ "type": "rejoin", "participant_id": me, "token": token.secret() });
        assert!(matches!(
            alice.handle_text(&rejoin.to_string()).await,
            Reply::Send(ServerMessage::Rejoined { .. })
        ));
        alice.handle_text(r#"{"type":"leave"}"#).await;
        alice.disconnected();
        assert_eq!(connections.len(), 0, "every join and leave left an entry");
        assert_eq!(hub.get("c").unwrap().participants.len(), 1);
    }

    #[tokio::test]
    async fn a_connection_that_closes_while_its_successor_rejoins_leaves_it_connected() {
        let hub = hub().await;
        let connections = Connections::default();
        let session =
            |user: &str| Session::new(hub.clone(), "c", user).with_connections(connections.clone());
        let state = |me: &str| hub.get("c").unwrap().participants[me].state;
        let mut first = session("alice");
        let Reply::Send(ServerMessage::Joined {
            participant_id: me,
            rejoin_token,
            ..
        }) = first.handle_text(r#"{"type":"join"}"#).await
        else {
            panic!("joined")
        };
        let token = RejoinToken::from_client(rejoin_token);
        // The old socket is found dead while the client's new one rejoins.
        let mut second = session("alice");
        let reply = second
            .rejoin_then(me.clone(), &token, || first.disconnected())
            .await;
        assert!(matches!(reply, ServerMessage::Rejoined { .. }), "{reply:?}");
        assert_eq!(
            state(&me),
            ParticipantState::Connected,
            "the new connection holds it"
        );
        assert_eq!(hub.expire_awaiting(Duration::ZERO).await, 0);
        assert_eq!(state(&me), ParticipantState::Connected);
        // The new connection is the current one: its close is what counts.
        second.disconnected();
        assert_eq!(state(&me), ParticipantState::AwaitingRejoin);
        assert_eq!(connections.len(), 0);

        // A refused rejoin while the current connection closes: the close still counts.
        let mut third = session("alice");
        third.rejoin_then(me.clone(), &token, || {}).await;
        assert_eq!(state(&me), ParticipantState::Connected);
        let mut mallory = session("mallory");
        let reply = mallory
            .rejoin_then(me.clone(), &token, || third.disconnected())
            .await;
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    code: ErrorCode::BadToken,
                    ..
                }
            ),
            "{reply:?}"
        );
        assert_eq!(state(&me), ParticipantState::AwaitingRejoin);
        assert_eq!(connections.len(), 0);
    }

    #[test]
    fn a_close_during_overlapping_rejoins_counts_once_and_only_if_all_fail() {
        use std::cell::Cell;
        let marked = Cell::new(0);
        let mark = || marked.set(marked.get() + 1);
        let table = Connections::default();
        // Both rejoins fail: the close counts, once, when the last one is over.
        let old = table.attach("c", "p");
        let (b, c) = (table.claim("c", "p"), table.claim("c", "p"));
        table.detach("c", "p", old, mark);
        assert_eq!(marked.get(), 0, "decided by the rejoins");
        table.settle("c", "p", b, false, mark);
        assert_eq!(marked.get(), 0, "another rejoin is under way");
        table.settle("c", "p", c, false, mark);
        assert_eq!(marked.get(), 1);
        assert_eq!(table.len(), 0);
        // One succeeds: the close does not count; the rejoined connection's does.
        let old = table.attach("c", "p");
        let (b, c) = (table.claim("c", "p"), table.claim("c", "p"));
        table.detach("c", "p", old, mark);
        table.settle("c", "p", b, true, mark);
        table.settle("c", "p", c, false, mark);
        assert_eq!(marked.get(), 1);
        table.detach("c", "p", c, mark);
        assert_eq!(marked.get(), 1, "the failed rejoin never held it");
        table.detach("c", "p", b, mark);
        assert_eq!(marked.get(), 2);
        assert_eq!(table.len(), 0);
        // A failed rejoin of a participant nobody held leaves nothing behind.
        let b = table.claim("c", "q");
        table.settle("c", "q", b, false, mark);
        assert_eq!((marked.get(), table.len()), (2, 0));
    }
}
