//! Minting UUID v7s (request ids, event ids) without a shared lock.
//!
//! `Uuid::now_v7` orders its ids through one process-wide mutex, which every worker
//! thread takes once per request. Here each thread keeps its own v7 context: the ids a
//! thread mints are in order, ids of different threads are ordered by their
//! millisecond, and each carries 42 bits of counter and 32 random bits, so two never
//! collide.

use uuid::timestamp::context::ContextV7;
use uuid::{NoContext, Timestamp, Uuid};

thread_local! {
    static CONTEXT: ContextV7 = const { ContextV7::new() };
}

/// A new UUID v7.
pub(crate) fn uuid_v7() -> Uuid {
    CONTEXT
        .try_with(|context| Uuid::new_v7(Timestamp::now(context)))
        // A thread being torn down: time and random bits only.
        .unwrap_or_else(|_| Uuid::new_v7(Timestamp::now(NoContext)))
}

#[cfg(test)]
mod tests {
    use super::uuid_v7;

    #[test]
    fn ids_of_one_thread_are_unique_and_ordered() {
        let ids: Vec<_> = (0..10_000).map(|_| uuid_v7()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order");
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
    }

    #[test]
    fn ids_of_threads_never_collide() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..10_000).map(|_| uuid_v7()).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 40_000);
    }
}
