//! [`Conn`]: the connection a call is sent on, whatever the topology: a multiplexed
//! connection to one server (standalone, or the primary Sentinel named), or the
//! cluster connection behind the client's slot view.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::cluster::conn::{ClusterConn, Touched};

/// A call's connection. Cheap to clone: each call takes its own clone.
#[derive(Clone, Debug)]
pub(crate) enum Conn {
    /// One server.
    Single(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConn),
}

impl Conn {
    /// Which cluster node the last call went to (nothing on one server).
    pub(crate) fn touched(&self) -> Touched {
        match self {
            Self::Single(_) => Touched::default(),
            Self::Cluster(c) => c.touched(),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
