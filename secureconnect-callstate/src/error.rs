//! The crate's one error type: [`Error`], with its [`ErrorKind`].

use std::fmt;

/// What went wrong, for callers that branch on it. More kinds may be added; prefer the
/// predicates on [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such call (never created, ended, or expired).
    NotFound,
    /// A call with this id exists already, or ended (or was taken over) recently: an
    /// id is not used twice within the store's fence TTL.
    AlreadyExists,
    /// This node does not own the call (another node adopted it, another process with
    /// the same node id started since, or it ended elsewhere): its write is refused;
    /// drop the call locally. Also: another node's calls cannot be adopted while its
    /// lease is alive.
    NotOwner,
    /// The rejoin token does not match.
    BadToken,
    /// No such participant in the call.
    NoParticipant,
    /// An id is empty, too long, or contains `{`, `}`, spaces or control characters.
    InvalidId,
    /// The configuration is invalid (a zero duration or batch size).
    InvalidConfig,
    /// Redis is unavailable: take the in-memory path; the operation may succeed later.
    Unavailable,
    /// Redis refused the command (not a health signal).
    Redis,
    /// An entry in Redis could not be read.
    Corrupt,
    /// The user has as many open calls as the hub allows
    /// ([`CallHubConfig::calls_per_user`](crate::CallHubConfig::calls_per_user)): end
    /// one first.
    TooManyCalls,
    /// A newer process with this node's id took it over: this process may no longer
    /// write its calls (a rolling update, or a paused process that resumed); drop them
    /// and stop.
    Superseded,
    /// The hub is still recovering its calls from Redis (Redis was unreachable at
    /// start): the call may come back; retry shortly.
    Recovering,
}

/// Why a call-state operation failed: its [`kind`](Error::kind), the call and
/// participant concerned, and the Redis error behind it in
/// [`source`](std::error::Error::source).
///
/// `Display` describes this level only; the cause (a Redis error, what is wrong with a
/// corrupt entry) is the [`source`](std::error::Error::source).
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    call: Option<String>,
    participant: Option<String>,
    node: Option<String>,
    /// The rejected id, or what is wrong with the configuration.
    detail: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    fn new(kind: ErrorKind) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                call: None,
                participant: None,
                node: None,
                detail: None,
                source: None,
            }),
        }
    }

    fn call_id(mut self, call: &str) -> Self {
        self.inner.call = Some(call.to_owned());
        self
    }

    fn participant_id(mut self, participant: &str) -> Self {
        self.inner.participant = Some(participant.to_owned());
        self
    }

    pub(crate) fn not_found(call: &str) -> Self {
        Self::new(ErrorKind::NotFound).call_id(call)
    }

    pub(crate) fn already_exists(call: &str) -> Self {
        Self::new(ErrorKind::AlreadyExists).call_id(call)
    }

    pub(crate) fn not_owner(call: &str) -> Self {
        Self::new(ErrorKind::NotOwner).call_id(call)
    }

    /// Adoption refused: `node`'s lease is alive.
    pub(crate) fn lease_alive(node: &str) -> Self {
        let mut e = Self::new(ErrorKind::NotOwner);
        e.inner.node = Some(node.to_owned());
        e
    }

    /// An error of the same kind for `call`, without the cause (which the first
    /// call's error carries).
    pub(crate) fn same_for(&self, call: &str) -> Self {
        let mut e = Self::new(self.inner.kind).call_id(call);
        e.inner.node.clone_from(&self.inner.node);
        e
    }

    /// A newer process with this node's id claimed it: this one is fenced out.
    pub(crate) fn superseded(node: &str) -> Self {
        let mut e = Self::new(ErrorKind::Superseded);
        e.inner.node = Some(node.to_owned());
        e
    }

    pub(crate) fn bad_token(call: &str, participant: &str) -> Self {
        Self::new(ErrorKind::BadToken)
            .call_id(call)
            .participant_id(participant)
    }

    pub(crate) fn no_participant(call: &str, participant: &str) -> Self {
        Self::new(ErrorKind::NoParticipant)
            .call_id(call)
            .participant_id(participant)
    }

    pub(crate) fn invalid_id(id: &str) -> Self {
        let mut e = Self::new(ErrorKind::InvalidId);
        e.inner.detail = Some(id.chars().take(140).collect());
        e
    }

    pub(crate) fn invalid_config(what: &'static str) -> Self {
        let mut e = Self::new(ErrorKind::InvalidConfig);
        e.inner.detail = Some(what.to_owned());
        e
    }

    pub(crate) fn too_many_calls(user: &str, limit: usize) -> Self {
        let mut e = Self::new(ErrorKind::TooManyCalls);
        e.inner.detail = Some(format!(
            "user {user:?} has {limit} open calls, the most allowed"
        ));
        e
    }

    pub(crate) fn recovering(call: &str) -> Self {
        Self::new(ErrorKind::Recovering).call_id(call)
    }

    /// A script or command on `call` failed with this reply (wrong key type, …).
    pub(crate) fn refused(
        call: &str,
        reply: secureconnect_redis_fallback::redis::ServerError,
    ) -> Self {
        let mut e = Self::new(ErrorKind::Redis).call_id(call);
        e.inner.source = Some(Box::new(reply));
        e
    }

    pub(crate) fn corrupt(call: &str, reason: String) -> Self {
        let mut e = Self::new(ErrorKind::Corrupt).call_id(call);
        e.inner.source = Some(Box::new(Corruption(reason)));
        e
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether Redis is unavailable: take the in-memory path (the operation may succeed
    /// later).
    pub fn is_unavailable(&self) -> bool {
        self.inner.kind == ErrorKind::Unavailable
    }

    /// Whether there is no such call.
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == ErrorKind::NotFound
    }

    /// Whether a call with this id exists already.
    pub fn is_already_exists(&self) -> bool {
        self.inner.kind == ErrorKind::AlreadyExists
    }

    /// Whether this node does not own the call (drop it locally), or the node whose
    /// calls were to be adopted is alive.
    pub fn is_not_owner(&self) -> bool {
        self.inner.kind == ErrorKind::NotOwner
    }

    /// Whether the rejoin token does not match.
    pub fn is_bad_token(&self) -> bool {
        self.inner.kind == ErrorKind::BadToken
    }

    /// Whether there is no such participant in the call.
    pub fn is_no_participant(&self) -> bool {
        self.inner.kind == ErrorKind::NoParticipant
    }

    /// Whether an id was rejected.
    pub fn is_invalid_id(&self) -> bool {
        self.inner.kind == ErrorKind::InvalidId
    }

    /// Whether the configuration is invalid.
    pub fn is_invalid_config(&self) -> bool {
        self.inner.kind == ErrorKind::InvalidConfig
    }

    /// Whether an entry in Redis could not be read.
    pub fn is_corrupt(&self) -> bool {
        self.inner.kind == ErrorKind::Corrupt
    }

    /// Whether the user has as many open calls as allowed.
    pub fn is_too_many_calls(&self) -> bool {
        self.inner.kind == ErrorKind::TooManyCalls
    }

    /// Whether a newer process with this node's id took over ([`ErrorKind::Superseded`]):
    /// drop the calls and stop.
    pub fn is_superseded(&self) -> bool {
        self.inner.kind == ErrorKind::Superseded
    }

    /// Whether the hub is still recovering its calls from Redis: retry shortly.
    pub fn is_recovering(&self) -> bool {
        self.inner.kind == ErrorKind::Recovering
    }

    /// The call concerned, when there is one.
    pub fn call(&self) -> Option<&str> {
        self.inner.call.as_deref()
    }

    /// The participant concerned, when there is one.
    pub fn participant(&self) -> Option<&str> {
        self.inner.participant.as_deref()
    }

    /// The node concerned (the node whose calls were to be adopted), when there is one.
    pub fn node(&self) -> Option<&str> {
        self.inner.node.as_deref()
    }

    /// The Redis error behind this one, when there is one.
    pub fn redis_error(&self) -> Option<&secureconnect_redis_fallback::Error> {
        self.inner.source.as_ref()?.downcast_ref()
    }
}

impl From<secureconnect_redis_fallback::Error> for Error {
    fn from(e: secureconnect_redis_fallback::Error) -> Self {
        let mut error = Self::new(if e.is_unavailable() {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Redis
        });
        error.inner.source = Some(Box::new(e));
        error
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind);
        for (name, value) in [
            ("call", &i.call),
            ("participant", &i.participant),
            ("node", &i.node),
            ("detail", &i.detail),
        ] {
            if let Some(value) = value {
                d.field(name, value);
            }
        }
        if let Some(source) = &i.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = self.inner.call.as_deref().unwrap_or_default();
        let participant = self.inner.participant.as_deref().unwrap_or_default();
        let detail = self.inner.detail.as_deref().unwrap_or_default();
        match self.inner.kind {
            ErrorKind::NotFound => write!(f, "no call {call:?}"),
            ErrorKind::AlreadyExists => write!(f, "call {call:?} exists already"),
            ErrorKind::NotOwner => match &self.inner.node {
                Some(node) => write!(
                    f,
                    "the calls of node {node:?} cannot be adopted: its lease is alive"
                ),
                None => write!(f, "this node no longer owns call {call:?}"),
            },
            ErrorKind::BadToken => write!(
                f,
                "wrong rejoin token for participant {participant:?} of call {call:?}"
            ),
            ErrorKind::NoParticipant => {
                write!(f, "no participant {participant:?} in call {call:?}")
            }
            ErrorKind::InvalidId => write!(
                f,
                "invalid id {detail:?}: 1 to 128 printable characters, without braces"
            ),
            ErrorKind::InvalidConfig => write!(f, "invalid call-store configuration: {detail}"),
            ErrorKind::Unavailable => f.write_str("redis unavailable for call state"),
            ErrorKind::Redis => f.write_str("redis refused a call-state command"),
            ErrorKind::Corrupt => write!(f, "corrupt entry for call {call:?}"),
            ErrorKind::TooManyCalls => write!(f, "too many open calls: {detail}"),
            ErrorKind::Superseded => write!(
                f,
                "a newer process with node id {:?} took over: this one is fenced out",
                self.inner.node.as_deref().unwrap_or_default()
            ),
            ErrorKind::Recovering => write!(
                f,
                "calls are still being recovered from redis; retry call {call:?} shortly"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What is wrong with a corrupt entry: the source of an [`ErrorKind::Corrupt`] error.
#[derive(Debug)]
struct Corruption(String);

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corruption {}

/// Checks a call or participant id: it becomes part of Redis keys.
pub(crate) fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id
            .chars()
            .any(|c| c.is_control() || c == '{' || c == '}' || c == ' ');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_id(id))
    }
}

/// An error and its causes, `: `-separated, for the one log line that reports it
/// (each `Display` describes its own level only).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_describes_this_level_and_the_cause_is_the_source() {
        let e = Error::corrupt("c", "participant p1: bad JSON".into());
        assert_eq!(e.to_string(), "corrupt entry for call \"c\"");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("participant p1: bad JSON")
        );
        assert!(e.is_corrupt() && e.call() == Some("c"));

        let e = Error::bad_token("c", "p");
        assert_eq!(
            e.to_string(),
            "wrong rejoin token for participant \"p\" of call \"c\""
        );
        assert_eq!((e.call(), e.participant()), (Some("c"), Some("p")));
        assert!(e.source().is_none());
        assert!(check_id("a{b}").is_err_and(|e| e.is_invalid_id()));
        assert!(check_id("call-1").is_ok());
        assert_eq!(
            format!("{:?}", Error::not_owner("c")),
            r#"Error { kind: NotOwner, call: "c" }"#
        );
    }

    #[test]
    fn errors_go_across_threads_and_into_boxes() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }
}
