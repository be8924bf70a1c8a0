//! Errors of the call stores.

/// Why a call-state operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No such call (never created, ended, or expired).
    #[error("no call {0:?}")]
    NotFound(String),
    /// A call with this id exists already.
    #[error("call {0:?} exists already")]
    AlreadyExists(String),
    /// This node no longer owns the call (another node adopted it): its write is
    /// refused. Drop the call locally.
    #[error("this node no longer owns call {0:?}")]
    NotOwner(String),
    /// The rejoin token does not match.
    #[error("wrong rejoin token for participant {participant:?} of call {call:?}")]
    BadToken {
        /// The call.
        call: String,
        /// The participant.
        participant: String,
    },
    /// No such participant in the call.
    #[error("no participant {participant:?} in call {call:?}")]
    NoParticipant {
        /// The call.
        call: String,
        /// The participant.
        participant: String,
    },
    /// An id is empty, too long, or contains `{`, `}` or control characters.
    #[error("invalid id {0:?}: 1 to 128 printable characters, without braces")]
    InvalidId(String),
    /// Redis is unavailable (take the in-memory path) or refused the command.
    #[error(transparent)]
    Redis(#[from] secureconnect_redis_fallback::Error),
    /// An entry in Redis could not be read.
    #[error("corrupt entry for call {call:?}: {reason}")]
    Corrupt {
        /// The call.
        call: String,
        /// What is wrong.
        reason: String,
    },
}

impl CallError {
    /// Whether Redis was unavailable (the operation may succeed later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Redis(e) if e.is_unavailable())
    }
}

/// Checks a call or participant id: it becomes part of Redis keys.
pub(crate) fn check_id(id: &str) -> Result<(), CallError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id
            .chars()
            .any(|c| c.is_control() || c == '{' || c == '}' || c == ' ');
    if ok {
        Ok(())
    } else {
        Err(CallError::InvalidId(id.chars().take(140).collect()))
    }
}
