//! Minting UUID v7s (request ids, event ids) without a shared lock.
//!
//! `Uuid::now_v7` orders its ids through one process-wide mutex, which every worker
//! thread takes once per request. Here each thread keeps its own v7 context: the ids a
//! thread mints are in order, ids of different threads are ordered by their
//! millisecond, and each carries 42 bits of counter and 32 random bits, so two never
//! collide.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use uuid::timestamp::context::ContextV7;
use uuid::{NoContext, Timestamp, Uuid};

const ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

/// How many ids' text one block holds.
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    static CONTEXT: ContextV7 = const { ContextV7::new() };
    /// The rest of the block this thread writes request ids' text into.
    static TEXT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `id` as the value of an `X-Request-Id` header. The text goes into a block shared
/// by this thread's next ids (reference-counted, freed with its last id): one
/// allocation per 64 ids, not one per id.
pub(crate) fn header_value(id: Uuid) -> Option<HeaderValue> {
    let mut text = [0u8; ID_LEN];
    id.hyphenated().encode_lower(&mut text);
    let bytes = TEXT
        .try_with(|block| {
            let mut block = block.try_borrow_mut().ok()?;
            if block.capacity() - block.len() < ID_LEN {
                *block = BytesMut::with_capacity(ID_LEN * IDS_PER_BLOCK);
            }
            block.extend_from_slice(&text);
            Some(block.split().freeze())
        })
        .ok()
        .flatten()
        // A thread being torn down: a block of its own.
        .unwrap_or_else(|| Bytes::copy_from_slice(&text));
    HeaderValue::from_maybe_shared(bytes).ok()
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
    fn header_values_hold_their_own_id_across_blocks() {
        // More ids than one block holds, all alive at once: none overwrites another.
        let ids: Vec<_> = (0..200).map(|_| uuid_v7()).collect();
        let values: Vec<_> = ids.iter().map(|id| super::header_value(*id)).collect();
        for (id, value) in ids.iter().zip(&values) {
            let value = value.as_ref().map(|v| v.to_str().unwrap_or_default());
            assert_eq!(value, Some(id.hyphenated().to_string().as_str()));
        }
        drop(values);
        // A value outlives the thread that minted it.
        let value = std::thread::spawn(|| super::header_value(uuid_v7()))
            .join()
            .ok()
            .flatten();
        assert_eq!(value.map(|v| v.len()), Some(36));
    }

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
