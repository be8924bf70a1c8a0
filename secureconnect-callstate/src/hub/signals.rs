//! Signaling between the participants of a call: [`Signal`], [`CallHub::subscribe`],
//! [`CallHub::relay`] and [`SignalReceiver`], one bounded broadcast channel per call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::value::RawValue;

use tokio::sync::broadcast;

use super::CallHub;
use crate::error::Error;

/// Signaling messages buffered per call.
const SIGNALS: usize = 256;

/// A signaling message between participants of a call.
#[derive(Clone, Debug)]
pub struct Signal {
    /// The sender.
    pub from: String,
    /// The recipient, or `None` for every other participant.
    pub to: Option<String>,
    /// What to deliver (an SDP offer or answer, an ICE candidate…, usually the whole
    /// frame the recipients get), as JSON text: built once by the sender's side, shared
    /// by every recipient, never re-parsed. Text rather than a `serde_json::Value`
    /// because a parsed tree can take a hundred times its text's size, and a call
    /// buffers up to 256 signals for its slowest reader.
    pub payload: Arc<RawValue>,
}

impl PartialEq for Signal {
    fn eq(&self, other: &Self) -> bool {
        self.from == other.from && self.to == other.to && self.payload.get() == other.payload.get()
    }
}

impl Eq for Signal {}

/// The broadcast channel of each call that has subscribers.
#[derive(Debug, Default)]
pub(super) struct Channels(Mutex<HashMap<String, broadcast::Sender<Signal>>>);

impl Channels {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Signal>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes a call's channel (the call ended): its receivers get `None`.
    pub(super) fn close(&self, call_id: &str) {
        self.lock().remove(call_id);
    }
}

impl CallHub {
    /// Receives the signals of a call addressed to `participant_id` or to everyone
    /// (its own are left out by [`SignalReceiver::recv`]).
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`].
    pub fn subscribe(&self, call_id: &str, participant_id: &str) -> Result<SignalReceiver, Error> {
        self.inner.memory.with_call(call_id, |_| Ok(()))?;
        let mut channels = self.inner.channels.lock();
        let sender = channels
            .entry(call_id.to_owned())
            .or_insert_with(|| broadcast::channel(SIGNALS).0);
        Ok(SignalReceiver {
            rx: sender.subscribe(),
            me: participant_id.to_owned(),
        })
    }

    /// Sends a signal to one participant (`to`) or to every other one; returns how many
    /// subscriptions it reached.
    ///
    /// # Errors
    ///
    /// [`Error::is_not_found`], [`Error::is_no_participant`] for an unknown sender.
    pub fn relay(&self, call_id: &str, signal: Signal) -> Result<usize, Error> {
        self.inner.memory.with_call(call_id, |call| {
            if call.participants.contains_key(&signal.from) {
                Ok(())
            } else {
                Err(Error::no_participant(call_id, &signal.from))
            }
        })?;
        let sender = self.inner.channels.lock().get(call_id).cloned();
        Ok(sender.map_or(0, |s| s.send(signal).unwrap_or(0)))
    }
}

/// The signals of one participant.
#[derive(Debug)]
pub struct SignalReceiver {
    rx: broadcast::Receiver<Signal>,
    me: String,
}

impl SignalReceiver {
    /// The next signal for this participant; `None` when the call is gone.
    pub async fn recv(&mut self) -> Option<Signal> {
        loop {
            match self.rx.recv().await {
                Ok(s) if s.from != self.me && s.to.as_ref().is_none_or(|to| *to == self.me) => {
                    return Some(s)
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
