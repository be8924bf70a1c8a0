//! [`ClusterConn`]: redis-rs's cluster connection behind the [`ClusterView`]: a call
//! whose slot is served by a master marked down is refused before it is sent, the node
//! a call went to is remembered (so its outcome counts for that node), and a pipeline
//! whose commands span several slots is split into one pipeline per master (per slot
//! where the master is not known yet), sent concurrently, its replies put back in
//! order.

use std::sync::Arc;

use std::collections::HashMap;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::slot::cmd_slot;
use super::view::ClusterView;

/// Which node a call went to, and whether it was refused before it was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// The master of the call's slot (of the failing part, for a split pipeline).
    pub(crate) node: Option<u16>,
    /// The call was refused at once: its slot's master is marked down.
    pub(crate) refused: bool,
}

/// A cluster connection for one call. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ClusterConn {
    conn: ClusterConnection,
    view: Arc<ClusterView>,
    touched: Touched,
}

impl std::fmt::Debug for ClusterConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConn")
            .field("touched", &self.touched)
            .finish_non_exhaustive()
    }
}

fn refused() -> RedisError {
    RedisError::from((
        redis::ErrorKind::ClusterConnectionNotFound,
        "the master of this slot is down",
    ))
}

impl ClusterConn {
    pub(crate) fn new(conn: ClusterConnection, view: Arc<ClusterView>) -> Self {
        Self {
            conn,
            view,
            touched: Touched::default(),
        }
    }

    /// What the last call did.
    pub(crate) fn touched(&self) -> Touched {
        self.touched
    }

    /// Checks the master of `slot`; remembers it.
    fn admit(&mut self, slot: Option<u16>) -> Result<(), RedisError> {
        let node = slot.and_then(|s| self.view.owner(s));
        self.touched.node = node;
        if node.is_some_and(|n| self.view.is_down(n)) {
            self.touched.refused = true;
            return Err(refused());
        }
        Ok(())
    }

    /// Splits a pipeline: one group per master (per slot where the view does not know
    /// the master), in order of first appearance, each keeping its commands' order;
    /// and every command without a key on its own (redis-rs routes it: `SCRIPT LOAD`
    /// to every master, `PING` to any node). Each group: its first slot, its commands.
    fn groups(&self, pipeline: &Pipeline) -> Vec<(Option<u16>, Vec<usize>)> {
        #[derive(Hash, PartialEq, Eq)]
        enum Key {
            Node(u16),
            Slot(u16),
        }
        let mut groups: Vec<(Option<u16>, Vec<usize>)> = Vec::new();
        let mut index: HashMap<Key, usize> = HashMap::new();
        for (i, cmd) in pipeline.cmd_iter().enumerate() {
            let Some(slot) = cmd_slot(cmd) else {
                groups.push((None, vec![i]));
                continue;
            };
            let key = match self.view.owner(slot) {
                Some(node) => Key::Node(node),
                None => Key::Slot(slot),
            };
            match index.get(&key) {
                Some(&g) => groups[g].1.push(i),
                None => {
                    index.insert(key, groups.len());
                    groups.push((Some(slot), vec![i]));
                }
            }
        }
        groups
    }

    async fn split(
        &mut self,
        pipeline: &Pipeline,
        groups: Vec<(Option<u16>, Vec<usize>)>,
    ) -> Result<Vec<Value>, RedisError> {
        let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
        for cmd in &cmds {
            // Every command's master: one down refuses the pipeline at once.
            if let Some(slot) = cmd_slot(cmd) {
                self.admit(Some(slot))?;
            }
        }
        self.touched.node = None;
        let sends = groups.iter().map(|(slot, members)| {
            let mut conn = self.conn.clone();
            let node = slot.and_then(|s| self.view.owner(s));
            let cmds = &cmds;
            async move {
                let result = match slot {
                    None => conn
                        .req_packed_command(cmds[members[0]])
                        .await
                        .map(|v| vec![v]),
                    Some(slot) => {
                        let mut part = redis::pipe();
                        for &i in members {
                            part.add_command(cmds[i].clone());
                        }
                        // To the master of the group's first slot: the others of the
                        // group are on it too, as far as the view knows (a stale view
                        // gets `MOVED` replies, read as unavailable).
                        let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                            *slot,
                            SlotAddr::Master,
                        ));
                        conn.route_pipeline(part, 0, members.len(), route).await
                    }
                };
                (node, result)
            }
        });
        let mut values = vec![Value::Nil; cmds.len()];
        for ((_, members), (node, result)) in groups.iter().zip(join_all(sends).await) {
            match result {
                Ok(replies) => {
                    for (&i, value) in members.iter().zip(replies) {
                        values[i] = value;
                    }
                }
                Err(e) => {
                    self.touched.node = node;
                    return Err(e);
                }
            }
        }
        Ok(values)
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.admit(cmd_slot(cmd))?;
            self.conn.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut slots = pipeline.cmd_iter().map(cmd_slot);
            let first = slots.next().flatten();
            let one_slot = first.is_some() && slots.all(|s| s == first);
            if pipeline.is_transaction() || one_slot || pipeline.is_empty() {
                // One slot (or a transaction, which must be one slot): as it is.
                self.admit(first)?;
                return self.conn.req_packed_commands(pipeline, offset, count).await;
            }
            let groups = self.groups(pipeline);
            self.split(pipeline, groups).await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
