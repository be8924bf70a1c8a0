//! Calls, participants and rejoin tokens.

use std::collections::BTreeMap;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of the layout of call entries in Redis. A call written with another
/// version is skipped at recovery and reported.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a participant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ParticipantState {
    /// Connected to this node's signaling.
    Connected,
    /// Known from before a restart; must rejoin with its token to get its place back.
    AwaitingRejoin,
}

/// A participant of a call. Media is never stored, only membership.
///
/// Plain data, built by callers of [`CallStore::join`](crate::CallStore::join): it is
/// the record stored in Redis, so a new field is a new [`SCHEMA_VERSION`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The participant's id within the call.
    pub id: String,
    /// The user behind it.
    pub user_id: String,
    /// SHA-256 (hex) of the rejoin token; the token itself is never stored.
    pub token_hash: String,
    /// When the participant joined (Unix milliseconds).
    pub joined_at_ms: u64,
    /// Connected or awaiting rejoin. Not persisted: every participant read back from
    /// Redis awaits rejoin.
    #[serde(skip, default = "awaiting")]
    pub state: ParticipantState,
}

impl ParticipantState {
    /// `connected` or `awaiting_rejoin`, as it is serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::AwaitingRejoin => "awaiting_rejoin",
        }
    }
}

fn awaiting() -> ParticipantState {
    ParticipantState::AwaitingRejoin
}

/// A call as the store knows it. Built by the stores; more fields may be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallState {
    /// The call's id.
    pub id: String,
    /// The node that owns (serves) the call.
    pub owner: String,
    /// The fencing epoch: bumped whenever another node adopts the call. Writes carrying
    /// an older epoch are refused.
    pub epoch: u64,
    /// Bumped by every change.
    pub version: u64,
    /// When the call was created (Unix milliseconds).
    pub created_at_ms: u64,
    /// Participants by id.
    pub participants: BTreeMap<String, Participant>,
}

/// A secret a participant presents to rejoin after a restart. Only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct RejoinToken(String);

impl std::fmt::Debug for RejoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RejoinToken(…)")
    }
}

impl RejoinToken {
    /// A new random token (256 bits, hex).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex(&bytes))
    }

    /// A token as a client presented it.
    pub fn from_client(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token, to hand to the participant once.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// SHA-256 (hex) of the token: what is stored.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }

    /// Whether this token hashes to `stored`, compared in constant time.
    pub fn matches(&self, stored: &str) -> bool {
        let hash = self.hash();
        hash.len() == stored.len()
            && hash
                .bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_as_serialized() {
        for state in [
            ParticipantState::Connected,
            ParticipantState::AwaitingRejoin,
        ] {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(serde_json::Value::from(state.as_str()))
            );
        }
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_matches() {
        let a = RejoinToken::generate();
        let b = RejoinToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.secret().len(), 64);
        assert!(a.matches(&a.hash()));
        assert!(!b.matches(&a.hash()));
        assert!(!RejoinToken::from_client("").matches(&a.hash()));
    }
}
