//! Password hashing on a pool of its own: one thread per core, each reusing one argon2
//! memory area (19 MiB with the default parameters) for every hash it computes, so the
//! service's memory stays at `threads × 19 MiB` however many logins arrive at once.
//! Requests wait in a bounded queue; when it is full the caller gets a 503 at once
//! instead of a slot in an ever longer line.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// The largest memory cost a stored hash may ask for (4× the default): a corrupt or
/// foreign hash cannot make a worker allocate without bound.
const MAX_M_COST: u32 = 4 * Params::DEFAULT_M_COST;

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Option<String>>,
    },
    Verify {
        password: String,
        phc: String,
        reply: oneshot::Sender<bool>,
    },
}

/// The handle of the pool; the threads end when it is dropped.
#[derive(Debug)]
pub(crate) struct Hasher {
    jobs: Sender<Job>,
}

impl Hasher {
    /// `threads` workers and room for `queue` waiting requests.
    pub(crate) fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, rx) = crossbeam_channel::bounded(queue.max(1));
        for i in 0..threads.max(1) {
            let rx: Receiver<Job> = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Self { jobs })
    }

    /// The PHC string of `password` with a fresh salt and the default parameters.
    pub(crate) async fn hash(&self, password: String) -> Result<String, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer
            .await
            .ok()
            .flatten()
            .ok_or_else(|| ApiError::internal("hashing failed"))
    }

    /// Whether `password` matches the PHC string `phc`.
    pub(crate) async fn verify(&self, password: String, phc: String) -> Result<bool, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            phc,
            reply,
        })?;
        answer
            .await
            .map_err(|_| ApiError::internal("hashing failed"))
    }

    fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                ApiError::unavailable("too many logins at once; retry in a moment")
            }
            TrySendError::Disconnected(_) => {
                ApiError::unavailable("password hashing is shutting down")
            }
        })
    }
}

/// One worker: its memory blocks live as long as the thread.
fn work(jobs: &Receiver<Job>) {
    let mut blocks = vec![Block::default(); Params::DEFAULT.block_count()];
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Hash { password, reply } => {
                // A caller that gave up (its request was dropped) costs no hash.
                if reply.is_closed() {
                    continue;
                }
                let _ = reply.send(hash(&password, &mut blocks));
            }
            Job::Verify {
                password,
                phc,
                reply,
            } => {
                if reply.is_closed() {
                    continue;
                }
                let _ = reply.send(verify(&password, &phc, &mut blocks));
            }
        }
    }
}

fn hash(password: &str, blocks: &mut [Block]) -> Option<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.as_salt().decode_b64(&mut salt_bytes).ok()?;
    let params = Params::DEFAULT;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::default(), Version::default(), params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, &mut *blocks)
        .ok()?;
    let phc = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(&params).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(phc.to_string())
}

fn verify(password: &str, phc: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    if blocks.len() < params.block_count() {
        blocks.resize(params.block_count(), Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let count = params.block_count();
    let ok = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, out, &mut blocks[..count])
        .is_ok();
    // `Output`'s equality takes the same time whichever byte differs.
    ok && Output::new(out).is_ok_and(|actual| actual == expected)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_verify_both_ways_with_the_argon2_crate() {
        let mut blocks = vec![Block::default(); Params::DEFAULT.block_count()];
        let ours = hash("correct horse", &mut blocks).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(verify("correct horse", &ours, &mut blocks));
        assert!(!verify("correct horsf", &ours, &mut blocks));
        // A hash made by the crate's own path (as stored before the pool existed).
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify("battery staple", &theirs, &mut blocks));
        assert!(!verify("battery stapler", &theirs, &mut blocks));
        assert!(!verify("x", "not a hash", &mut blocks));
    }

    #[test]
    fn a_hash_asking_for_too_much_memory_is_refused_without_allocating() {
        let mut blocks = vec![Block::default(); 8];
        let phc = "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                   AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!verify("password", phc, &mut blocks));
        assert_eq!(blocks.len(), 8);
    }

    #[tokio::test]
    async fn a_full_queue_answers_503_at_once() {
        // One worker kept busy, a queue of one: the third request cannot wait.
        let hasher = Hasher::new(1, 1).unwrap();
        let first = hasher.hash("password-1".into());
        let second = hasher.hash("password-2".into());
        let third = hasher.hash("password-3".into());
        let (a, b, c) = tokio::join!(first, second, third);
        let refused = [&a, &b, &c]
            .iter()
            .filter(|r| {
                r.as_ref()
                    .is_err_and(|e| e.status() == axum::http::StatusCode::SERVICE_UNAVAILABLE)
            })
            .count();
        assert!(refused >= 1, "no request refused with a queue of one");
        assert!(a.is_ok(), "the first request was refused");
    }
}
