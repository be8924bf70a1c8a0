//! [`ClusterView`]: which master serves each hash slot, and which masters are down, as
//! this client sees them. Read by every call without a lock (atomics), written by the
//! supervisor from `CLUSTER SLOTS` and probes, and by calls that fail on a node.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use super::slot::SLOTS;

/// At most this many distinct node addresses are tracked; slots of further nodes are
/// treated as unknown (calls go through, unattributed).
const MAX_NODES: usize = 512;

/// No node known for a slot.
const UNKNOWN: u16 = u16::MAX;

/// One node's health as calls and probes see it.
#[derive(Debug, Default)]
struct NodeHealth {
    down: AtomicBool,
    timeouts_in_a_row: AtomicU32,
}

/// What a call's outcome on a node says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeEvent {
    /// The node answered.
    Reply,
    /// The call ran out of time.
    Timeout,
    /// A connection error, or a state meaning "not now" (`CLUSTERDOWN`, `TRYAGAIN`…).
    Unavailable,
}

/// One hash-slot range and the address of the master serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) start: u16,
    pub(crate) end: u16,
    pub(crate) master: String,
}

/// The slot map and the health of each master, shared by calls and the supervisor.
#[derive(Debug)]
pub(crate) struct ClusterView {
    /// Slot → index of its master in `nodes` (or [`UNKNOWN`]).
    owners: Box<[AtomicU16]>,
    nodes: Box<[NodeHealth]>,
    /// Index → `host:port`; append-only, so an index never changes its meaning.
    addresses: Mutex<Vec<String>>,
    timeouts_to_down: u32,
}

impl ClusterView {
    /// An empty view: every slot unknown. A node is marked down after a connection
    /// error, or after `timeouts_to_down` timeouts in a row.
    pub(crate) fn new(timeouts_to_down: u32) -> Self {
        Self {
            owners: (0..SLOTS).map(|_| AtomicU16::new(UNKNOWN)).collect(),
            nodes: (0..MAX_NODES).map(|_| NodeHealth::default()).collect(),
            addresses: Mutex::new(Vec::new()),
            timeouts_to_down: timeouts_to_down.max(1),
        }
    }

    /// The node serving `slot`, if known.
    pub(crate) fn owner(&self, slot: u16) -> Option<u16> {
        let node = self.owners.get(usize::from(slot))?.load(Ordering::Acquire);
        (node != UNKNOWN).then_some(node)
    }

    /// Whether `node` is marked down: calls to its slots are refused at once.
    pub(crate) fn is_down(&self, node: u16) -> bool {
        self.nodes
            .get(usize::from(node))
            .is_some_and(|n| n.down.load(Ordering::Acquire))
    }

    /// Records what a call saw on `node`; `true` if this marked it down (the
    /// supervisor must look at it).
    pub(crate) fn record(&self, node: u16, event: NodeEvent) -> bool {
        let Some(health) = self.nodes.get(usize::from(node)) else {
            return false;
        };
        match event {
            NodeEvent::Reply => {
                if health.timeouts_in_a_row.load(Ordering::Relaxed) != 0 {
                    health.timeouts_in_a_row.store(0, Ordering::Relaxed);
                }
                false
            }
            NodeEvent::Timeout => {
                let n = health.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                n >= self.timeouts_to_down && !health.down.swap(true, Ordering::AcqRel)
            }
            NodeEvent::Unavailable => !health.down.swap(true, Ordering::AcqRel),
        }
    }

    /// Marks `node` up or down, as a probe found it.
    pub(crate) fn set_down(&self, node: u16, down: bool) {
        if let Some(health) = self.nodes.get(usize::from(node)) {
            health.timeouts_in_a_row.store(0, Ordering::Relaxed);
            health.down.store(down, Ordering::Release);
        }
    }

    /// The index of `address`, added if new (`None` once [`MAX_NODES`] are known).
    fn index(addresses: &mut Vec<String>, address: &str) -> Option<u16> {
        if let Some(i) = addresses.iter().position(|a| a == address) {
            return u16::try_from(i).ok();
        }
        if addresses.len() >= MAX_NODES {
            return None;
        }
        addresses.push(address.to_owned());
        u16::try_from(addresses.len() - 1).ok()
    }

    /// Takes a fresh slot map (from `CLUSTER SLOTS`): every slot gets its master; slots
    /// not in `ranges` become unknown. Returns the masters' indices and addresses, and
    /// whether a slot known before moved to another master (a failover, a resharding).
    pub(crate) fn update(&self, ranges: &[SlotRange]) -> (Vec<(u16, String)>, bool) {
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut owners = vec![UNKNOWN; usize::from(SLOTS)];
        let mut masters: Vec<(u16, String)> = Vec::new();
        for range in ranges {
            let Some(node) = Self::index(&mut addresses, &range.master) else {
                continue;
            };
            if !masters.iter().any(|(i, _)| *i == node) {
                masters.push((node, range.master.clone()));
            }
            let end = range.end.min(SLOTS - 1);
            for slot in range.start..=end {
                owners[usize::from(slot)] = node;
            }
        }
        let mut moved = false;
        for (slot, owner) in self.owners.iter().zip(owners) {
            let before = slot.swap(owner, Ordering::AcqRel);
            moved |= before != UNKNOWN && before != owner;
        }
        (masters, moved)
    }

    /// The masters serving slots now, with whether each is down.
    pub(crate) fn masters(&self) -> Vec<(u16, String, bool)> {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut seen = vec![false; addresses.len()];
        let mut masters = Vec::new();
        for slot in self.owners.iter() {
            let node = slot.load(Ordering::Acquire);
            let i = usize::from(node);
            if node != UNKNOWN && i < seen.len() && !seen[i] {
                seen[i] = true;
                masters.push((node, addresses[i].clone(), self.is_down(node)));
            }
        }
        masters
    }

    /// How many slots are served by a master marked down (their calls are refused).
    pub(crate) fn slots_down(&self) -> u32 {
        let mut down = [false; MAX_NODES];
        for (i, node) in self.nodes.iter().enumerate() {
            down[i] = node.down.load(Ordering::Acquire);
        }
        self.owners
            .iter()
            .filter(|slot| {
                let node = slot.load(Ordering::Acquire);
                node != UNKNOWN && down.get(usize::from(node)).copied().unwrap_or(false)
            })
            .count() as u32
    }

    /// Whether any master serving slots is marked down.
    pub(crate) fn any_down(&self) -> bool {
        self.masters().iter().any(|(_, _, down)| *down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Vec<SlotRange> {
        vec![
            SlotRange {
                start: 0,
                end: 5460,
                master: "a:1".into(),
            },
            SlotRange {
                start: 5461,
                end: 10922,
                master: "b:1".into(),
            },
            SlotRange {
                start: 10923,
                end: 16383,
                master: "c:1".into(),
            },
        ]
    }

    #[test]
    fn a_node_goes_down_on_an_error_or_repeated_timeouts_and_only_its_slots_are_affected() {
        let view = ClusterView::new(2);
        assert_eq!(view.owner(0), None, "unknown before the first map");
        let (masters, moved) = view.update(&ranges());
        assert_eq!(masters.len(), 3);
        assert!(!moved, "nothing was known before");
        let a = view.owner(0).unwrap();
        let b = view.owner(6000).unwrap();
        assert_ne!(a, b);
        assert!(!view.record(a, NodeEvent::Timeout));
        assert!(!view.record(a, NodeEvent::Reply), "a reply resets");
        assert!(!view.record(a, NodeEvent::Timeout));
        assert!(view.record(a, NodeEvent::Timeout), "two in a row: down");
        assert!(!view.record(a, NodeEvent::Timeout), "reported once");
        assert!(view.is_down(a));
        assert!(!view.is_down(b));
        assert_eq!(view.slots_down(), 5461);
        assert!(view.record(b, NodeEvent::Unavailable));
        assert_eq!(view.slots_down(), 5461 + 5462);
        view.set_down(a, false);
        view.set_down(b, false);
        assert_eq!(view.slots_down(), 0);
        assert!(!view.any_down());
    }

    #[test]
    fn a_promotion_moves_the_slots_to_a_node_that_is_up() {
        let view = ClusterView::new(1);
        view.update(&ranges());
        let a = view.owner(100).unwrap();
        view.record(a, NodeEvent::Unavailable);
        assert!(view.is_down(view.owner(100).unwrap()));
        let mut promoted = ranges();
        promoted[0].master = "a-replica:1".into();
        assert!(view.update(&promoted).1, "slots moved");
        assert!(!view.update(&promoted).1, "once");
        let now = view.owner(100).unwrap();
        assert_ne!(now, a);
        assert!(!view.is_down(now));
        assert_eq!(
            view.slots_down(),
            0,
            "the dead master serves no slot any more"
        );
        assert_eq!(view.masters().len(), 3);
    }
}
