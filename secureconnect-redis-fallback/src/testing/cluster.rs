//! [`RedisCluster`]: a real Redis Cluster of `redis-server` child processes, three
//! masters and three replicas on free loopback ports, made with
//! `redis-cli --cluster create`.

use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::server::{free_port, RedisServer, Reply};
use crate::cluster::key_slot;

/// How long a new cluster has to agree on its slots.
const FORM_DEADLINE: Duration = Duration::from_secs(60);

/// A Redis Cluster for tests: 3 masters, 3 replicas. Every node is killed when dropped.
///
/// The nodes run with `cluster-node-timeout` 2 s (a dead master's replica is promoted
/// a few seconds later) and `cluster-require-full-coverage no` (the other masters keep
/// serving their slots meanwhile).
///
/// ```no_run
/// use std::time::Duration;
/// use secureconnect_redis_fallback::testing::RedisCluster;
///
/// let mut cluster = RedisCluster::start()?;
/// let seeds = cluster.urls();
/// let master = cluster.master_of("some-key")?;  // node index serving the key
/// cluster.node_mut(master).kill()?;             // SIGKILL
/// cluster.wait_for_promotion(master, Duration::from_secs(30))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster with one replica per master, and waits
    /// until every node says `cluster_state:ok` and every replica is in sync.
    ///
    /// # Errors
    ///
    /// If a node does not start, `redis-cli --cluster create` fails, or the cluster does
    /// not form within a minute.
    pub fn start() -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(RedisServer::start_with(
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "no",
                ],
                None,
                |_| {
                    // The bus port, free now (port + 10000 may not be).
                    free_port()
                        .map(|p| vec!["--cluster-port".to_owned(), p.to_string()])
                        .unwrap_or_default()
                },
            )?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run redis-cli: {e}")))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let mut cluster = Self { nodes };
        cluster.wait_until_ok(FORM_DEADLINE)?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:<port>/` of every node: seeds for a client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node at `index` (0 to 5).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// The node at `index`, to kill, pause, resume or restart it.
    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The index of the node whose port is `port`.
    fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// `CLUSTER NODES` as one running node sees it: (port, is master, master's port if
    /// a replica, slots served, failed).
    fn topology(&mut self) -> io::Result<Vec<NodeLine>> {
        let mut last = io::Error::other("no node is running");
        for node in &mut self.nodes {
            if node.pid().is_none() || is_stopped(node) {
                continue;
            }
            match node.command(&["CLUSTER", "NODES"]) {
                Ok(reply) => {
                    let text = reply
                        .text()
                        .ok_or_else(|| io::Error::other("CLUSTER NODES gave no text"))?;
                    return Ok(parse_nodes(&text));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The index of the master serving `key`'s slot now (as a running node sees it).
    ///
    /// # Errors
    ///
    /// If no node answers or the slot is not served.
    pub fn master_of(&mut self, key: &str) -> io::Result<usize> {
        let slot = key_slot(key.as_bytes());
        let topology = self.topology()?;
        topology
            .iter()
            .find(|n| n.master && !n.failed && n.serves(slot))
            .and_then(|n| self.index_of_port(n.port))
            .ok_or_else(|| io::Error::other(format!("no master serves slot {slot}")))
    }

    /// The index of a replica of the master at `index`.
    ///
    /// # Errors
    ///
    /// If no node answers or the master has no replica.
    pub fn replica_of(&mut self, index: usize) -> io::Result<usize> {
        let port = self.nodes[index].port();
        let topology = self.topology()?;
        let id = topology
            .iter()
            .find(|n| n.port == port)
            .map(|n| n.id.clone())
            .ok_or_else(|| io::Error::other("unknown node"))?;
        topology
            .iter()
            .find(|n| n.master_id.as_deref() == Some(id.as_str()))
            .and_then(|n| self.index_of_port(n.port))
            .ok_or_else(|| io::Error::other(format!("node {index} has no replica")))
    }

    /// The indices of the masters serving slots now.
    ///
    /// # Errors
    ///
    /// If no node answers.
    pub fn masters(&mut self) -> io::Result<Vec<usize>> {
        let topology = self.topology()?;
        Ok(topology
            .iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .filter_map(|n| self.index_of_port(n.port))
            .collect())
    }

    /// Waits until the slots the node at `index` served are served by another node
    /// (its replica promoted) and the cluster is ok again; returns the new master's
    /// index. Call it soon after the node is killed or paused, while the cluster still
    /// lists its slots.
    ///
    /// # Errors
    ///
    /// If that does not happen within `within`.
    pub fn wait_for_promotion(&mut self, index: usize, within: Duration) -> io::Result<usize> {
        let port = self.nodes[index].port();
        let deadline = Instant::now() + within;
        let mut slot = None;
        loop {
            if let Ok(topology) = self.topology() {
                if slot.is_none() {
                    slot = topology
                        .iter()
                        .find(|n| n.port == port)
                        .and_then(|n| n.slots.first().map(|range| range.0));
                }
                let owner = slot.and_then(|slot| {
                    topology
                        .iter()
                        .find(|n| n.master && !n.failed && n.port != port && n.serves(slot))
                });
                if let Some(new) = owner.and_then(|n| self.index_of_port(n.port)) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if self.wait_until_ok(left).is_ok() {
                        return Ok(new);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "the replica of node {index} was not promoted in time"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node says `cluster_state:ok` and knows 3 masters
    /// serving all 16 384 slots.
    ///
    /// # Errors
    ///
    /// If that does not happen within `within`.
    pub fn wait_until_ok(&mut self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("the cluster is not ok in time"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_ok(&mut self) -> bool {
        let mut answered = 0;
        for node in &mut self.nodes {
            if node.pid().is_none() || is_stopped(node) {
                continue;
            }
            let Ok(info) = node.command(&["CLUSTER", "INFO"]) else {
                return false;
            };
            let text = info.text().unwrap_or_default();
            if !text.contains("cluster_state:ok") || !text.contains("cluster_slots_ok:16384") {
                return false;
            }
            // A replica must be in sync, or a promotion could lose what it misses.
            match node.info_field("role").as_deref() {
                Ok("slave") => {
                    if node.info_field("master_link_status").as_deref().ok() != Some("up") {
                        return false;
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
            answered += 1;
        }
        answered > 0
    }
}

/// Whether a node is stopped (SIGSTOP): asking it would hang.
fn is_stopped(node: &RedisServer) -> bool {
    let Some(pid) = node.pid() else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_default()
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('T'))
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    master_id: Option<String>,
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.get(1)?;
            let port = address
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields.get(2)?;
            let master_id = fields
                .get(3)
                .filter(|m| **m != "-")
                .map(|m| (*m).to_owned());
            let slots = fields
                .iter()
                .skip(8)
                .filter(|f| !f.starts_with('['))
                .filter_map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect();
            Some(NodeLine {
                id: (*fields.first()?).to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                master_id,
                slots,
            })
        })
        .collect()
}

impl Reply {
    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_are_read() {
        let text = "a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460\n\
                    b2 127.0.0.1:7004@17004 slave a1 0 1 1 connected\n\
                    c3 127.0.0.1:7002@17002 master,fail - 0 1 2 connected\n\
                    d4 127.0.0.1:7005@17005 master - 0 1 3 connected 5461-10922 12000\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 4);
        assert_eq!(nodes[0].slots, vec![(0, 5460)]);
        assert_eq!(nodes[1].master_id.as_deref(), Some("a1"));
        assert!(!nodes[1].master);
        assert!(nodes[2].failed);
        assert_eq!(nodes[3].slots, vec![(5461, 10922), (12000, 12000)]);
        assert!(nodes[3].serves(12000));
        assert!(!nodes[3].serves(11000));
    }
}
