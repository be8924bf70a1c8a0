//! Several video nodes behind one gateway, as real processes sharing one Redis (a
//! server or a Cluster): the scaffolding and the scenarios that the single-server and
//! the Cluster tests share.

use std::time::{Duration, Instant};

use secureconnect_redis_fallback::redis;
use secureconnect_redis_fallback::RedisClient;
use serde_json::{json as j, Value};

use super::{free_port, recv, register_and_login, send, ws, Session, Socket, System};

/// The nodes' lease in these tests, in seconds.
pub const LEASE_SECS: u64 = 3;

/// A gateway in front of video nodes (plus auth and storage).
pub struct Nodes {
    pub system: System,
    /// Node id → port.
    pub nodes: Vec<(String, u16)>,
}

impl Nodes {
    /// Starts auth and storage, the video nodes `ids` (each with `env_of(id)` on top),
    /// then a gateway whose `VIDEO_UPSTREAMS` lists them. `extra` goes to every process.
    pub async fn start(
        redis_url: &str,
        extra: &[(&str, &str)],
        ids: &[&str],
        env_of: impl Fn(&str) -> Vec<(String, String)>,
    ) -> Self {
        let lease = LEASE_SECS.to_string();
        let mut env: Vec<(&str, &str)> = extra.to_vec();
        env.push(("VIDEO_LEASE_SECS", &lease));
        let mut system = System::start_only(&["auth", "storage"], redis_url, &env).await;
        let mut nodes = Vec::new();
        for id in ids {
            let port = free_port();
            let own = env_of(id);
            let mut env: Vec<(&str, &str)> = vec![("VIDEO_NODE_ID", id)];
            env.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            system.spawn_labelled("video", id, port, &env).await;
            nodes.push(((*id).to_owned(), port));
        }
        let upstreams = nodes
            .iter()
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let gateway = system.port("gateway");
        system
            .spawn_labelled(
                "gateway",
                "gateway",
                gateway,
                &[("VIDEO_UPSTREAMS", &upstreams)],
            )
            .await;
        Self { system, nodes }
    }

    pub fn gateway(&self) -> String {
        self.system.gateway()
    }

    pub fn port(&self, node: &str) -> u16 {
        self.nodes.iter().find(|(n, _)| n == node).unwrap().1
    }

    /// The node that is not `node` (two nodes).
    pub fn other(&self, node: &str) -> String {
        self.nodes
            .iter()
            .find(|(n, _)| n != node)
            .unwrap()
            .0
            .clone()
    }

    /// Starts node `node` again, on its port, with `env` on top.
    pub async fn restart(&mut self, node: &str, env: &[(&str, &str)]) {
        let port = self.port(node);
        let mut all = vec![("VIDEO_NODE_ID", node)];
        all.extend_from_slice(env);
        self.system.spawn_labelled("video", node, port, &all).await;
    }
}

/// Reads the calls as Redis has them.
pub struct Observer(pub RedisClient);

/// A call in Redis: owner, epoch, version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub owner: String,
    pub epoch: u64,
    pub version: u64,
}

impl Observer {
    pub async fn call(&self, call: &str) -> Option<Stored> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(format!("sc:call:{{{call}}}"))
            .arg("owner")
            .arg("epoch")
            .arg("version");
        let (owner, epoch, version): (Option<String>, Option<u64>, Option<u64>) =
            self.0.query(&cmd).await.ok()?;
        Some(Stored {
            owner: owner?,
            epoch: epoch?,
            version: version?,
        })
    }

    /// Whether `call` is in `node`'s set.
    pub async fn in_set(&self, node: &str, call: &str) -> bool {
        let mut cmd = redis::cmd("SISMEMBER");
        cmd.arg(format!("sc:node:{{{node}}}:calls")).arg(call);
        self.0.query::<i64>(&cmd).await.unwrap() == 1
    }

    /// Waits up to `within` for `call` to be stored with an owner for which `done` holds.
    pub async fn wait(
        &self,
        call: &str,
        within: Duration,
        done: impl Fn(&Stored) -> bool,
    ) -> Option<Stored> {
        let until = Instant::now() + within;
        loop {
            let stored = self.call(call).await;
            if stored.as_ref().is_some_and(&done) {
                return stored;
            }
            if Instant::now() > until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The last lines of a log, for a failure message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `GET /v1/calls/{id}` through `base` (the gateway or a node): status and body.
pub async fn get_call(c: &reqwest::Client, base: &str, call: &str, token: &str) -> (u16, Value) {
    let r = c
        .get(format!("{base}/v1/calls/{call}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A participant: its socket through the gateway, its id and rejoin token.
pub struct Participant {
    pub user: Session,
    pub socket: Socket,
    pub id: String,
    pub token: String,
}

/// `user` joins `call` over a WebSocket through the gateway.
pub async fn join(system: &System, call: &str, user: Session) -> Participant {
    let mut socket = ws(system, call, &user.token).await;
    send(&mut socket, j!({ "type": "join" })).await;
    let joined = recv(&mut socket).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    Participant {
        id: joined["participant_id"].as_str().unwrap().to_owned(),
        token: joined["rejoin_token"].as_str().unwrap().to_owned(),
        user,
        socket,
    }
}

/// The participant opens a new socket through the gateway and rejoins with its token
/// (retrying while the gateway answers that the call is unavailable, or the node that
/// its call is recovering). Returns the `rejoined` message.
pub async fn rejoin(system: &System, call: &str, p: &mut Participant, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let url = format!(
            "ws://127.0.0.1:{}/v1/calls/{call}/ws?access_token={}",
            system.port("gateway"),
            p.user.token
        );
        if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await {
            send(
                &mut socket,
                j!({ "type": "rejoin", "participant_id": p.id, "token": p.token }),
            )
            .await;
            let reply = recv(&mut socket).await;
            if reply["type"] == "rejoined" {
                p.socket = socket;
                return reply;
            }
            assert_eq!(reply["code"], "recovering", "{reply}");
        }
        assert!(Instant::now() < until, "no rejoin within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `socket` is closed by the server within `within` (frames before the close
/// are skipped).
pub async fn closed_within(socket: &mut Socket, within: Duration) -> bool {
    use futures_util::StreamExt;
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, socket.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_))) => return true,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Alice's offer reaches Bob through their sockets.
pub async fn relayed(from: &mut Participant, to: &mut Participant) {
    send(
        &mut from.socket,
        j!({ "type": "offer", "payload": { "sdp": "v=0" } }),
    )
    .await;
    let got = recv(&mut to.socket).await;
    assert_eq!(got["type"], "offer", "{got}");
    assert_eq!(got["from"], from.id.as_str());
}

/// Creates `n` calls through the gateway (as `user`), each reachable through it; the
/// owner each has in Redis once written behind.
pub async fn create_calls(
    c: &reqwest::Client,
    nodes: &Nodes,
    observer: &Observer,
    user: &Session,
    n: usize,
) -> Vec<(String, String)> {
    let g = nodes.gateway();
    let mut calls = Vec::new();
    for _ in 0..n {
        let r = c
            .post(format!("{g}/v1/calls"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        let call = body["call_id"].as_str().unwrap().to_owned();
        // Reachable through the gateway at once, written behind or not.
        assert_eq!(get_call(c, &g, &call, &user.token).await.0, 200, "{call}");
        let stored = observer
            .wait(&call, Duration::from_secs(5), |_| true)
            .await
            .expect("the call in Redis");
        calls.push((call, stored.owner));
    }
    calls
}

/// Two users registered through the gateway.
pub async fn two_users(c: &reqwest::Client, nodes: &Nodes) -> (Session, Session) {
    let g = nodes.gateway();
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (
        register_and_login(c, &g, &format!("alice-{n}@example.org")).await,
        register_and_login(c, &g, &format!("bob-{n}@example.org")).await,
    )
}

/// Calls land on both nodes, each reachable through the gateway; the owner of a call
/// with two participants is SIGKILLed: within lease + 5 s the survivor serves the
/// call through the gateway, owns it in Redis with a higher epoch, and both
/// participants rejoin through the gateway with their tokens; the dead node, restarted
/// with its id, neither takes the call back nor writes it.
pub async fn killed_owner_scenario(
    mut nodes: Nodes,
    observer: Observer,
    restart_env: &[(&str, &str)],
) {
    let c = reqwest::Client::new();
    let g = nodes.gateway();
    let (alice, bob) = two_users(&c, &nodes).await;
    let calls = create_calls(&c, &nodes, &observer, &alice, 6).await;
    for (id, _) in &nodes.nodes {
        assert!(
            calls.iter().any(|(_, owner)| owner == id),
            "no call on {id}: {calls:?}"
        );
    }
    let (call, owner) = calls[0].clone();
    let survivor = nodes.other(&owner);
    let mut a = join(&nodes.system, &call, alice).await;
    let mut b = join(&nodes.system, &call, bob).await;
    relayed(&mut a, &mut b).await;
    let before = observer
        .wait(&call, Duration::from_secs(5), |_| true)
        .await
        .unwrap();

    let killed = Instant::now();
    nodes.system.kill(&owner);
    assert!(closed_within(&mut a.socket, Duration::from_secs(5)).await);
    let until = Duration::from_secs(LEASE_SECS + 5);
    let served = loop {
        let (status, body) = get_call(&c, &g, &call, &a.user.token).await;
        if status == 200 {
            break body;
        }
        assert!(
            killed.elapsed() < until,
            "not served within {until:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = killed.elapsed();
    eprintln!(
        "call served by {survivor} through the gateway {took:?} after the SIGKILL of {owner}"
    );
    assert!(
        served["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "awaiting_rejoin"),
        "{served}"
    );
    let after = observer.call(&call).await.unwrap();
    assert_eq!(after.owner, survivor);
    assert!(after.epoch > before.epoch, "{after:?} after {before:?}");
    // The direct answer of the survivor: it serves the call.
    let direct = format!("http://127.0.0.1:{}", nodes.port(&survivor));
    assert_eq!(get_call(&c, &direct, &call, &a.user.token).await.0, 200);

    // Both participants rejoin through the gateway with their tokens.
    rejoin(&nodes.system, &call, &mut a, Duration::from_secs(5)).await;
    let reply = rejoin(&nodes.system, &call, &mut b, Duration::from_secs(5)).await;
    assert_eq!(
        reply["participants"].as_array().unwrap().len(),
        2,
        "{reply}"
    );
    relayed(&mut b, &mut a).await;
    // Every other call of the dead node moved too, and all are reachable.
    for (other, _) in &calls {
        let (status, _) = get_call(&c, &g, other, &a.user.token).await;
        assert_eq!(status, 200, "{other}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = observer.call(&call).await.unwrap();

    // The dead node comes back with its id: it neither takes the call back nor writes it.
    nodes.restart(&owner, restart_env).await;
    tokio::time::sleep(Duration::from_secs(LEASE_SECS * 2 + 1)).await;
    assert_eq!(
        observer.call(&call).await.unwrap(),
        settled,
        "written after the restart"
    );
    assert!(!observer.in_set(&owner, &call).await);
    let back = format!("http://127.0.0.1:{}", nodes.port(&owner));
    assert_eq!(get_call(&c, &back, &call, &a.user.token).await.0, 404);
    assert_eq!(get_call(&c, &g, &call, &a.user.token).await.0, 200);
    relayed(&mut a, &mut b).await;
    // New calls land on the restarted node again.
    let more = create_calls(&c, &nodes, &observer, &a.user, 4).await;
    assert!(more.iter().any(|(_, o)| *o == owner), "{more:?}");
}

/// The owner of a call with two participants stops (SIGSTOP) past its lease, as a node
/// cut off from Redis would: its calls are adopted; once it resumes its writes are
/// refused, it drops those calls (their sockets close) and the call stays the
/// adopter's. `cut` cuts the node off and `heal` brings it back.
pub async fn partitioned_owner_scenario<Cut, Heal>(
    nodes: Nodes,
    observer: Observer,
    cut: Cut,
    heal: Heal,
) where
    Cut: FnOnce(&Nodes, &str),
    Heal: FnOnce(&Nodes, &str),
{
    let c = reqwest::Client::new();
    let g = nodes.gateway();
    let (alice, bob) = two_users(&c, &nodes).await;
    let calls = create_calls(&c, &nodes, &observer, &alice, 2).await;
    let (call, owner) = calls[0].clone();
    let adopter = nodes.other(&owner);
    let mut a = join(&nodes.system, &call, alice).await;
    let mut b = join(&nodes.system, &call, bob).await;
    relayed(&mut a, &mut b).await;
    let before = observer
        .wait(&call, Duration::from_secs(5), |s| s.version >= 3)
        .await
        .unwrap();

    cut(&nodes, &owner);
    let cut_at = Instant::now();
    let adopted = observer
        .wait(&call, Duration::from_secs(LEASE_SECS + 5), |s| {
            s.owner == adopter
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "not adopted within lease + 5 s; {adopter}: {}",
                tail(&nodes.system.stdout(&adopter))
            )
        });
    eprintln!(
        "{call} adopted by {adopter} {:?} after {owner} was cut off",
        cut_at.elapsed()
    );
    assert!(adopted.epoch > before.epoch);
    // Through the gateway, the call is the adopter's: both rejoin there.
    let (status, served) = get_call(&c, &g, &call, &a.user.token).await;
    assert_eq!(status, 200, "{served}");
    let mut old_a = std::mem::replace(&mut a.socket, ws(&nodes.system, &call, &a.user.token).await);
    let mut old_b = std::mem::replace(&mut b.socket, ws(&nodes.system, &call, &b.user.token).await);
    rejoin(&nodes.system, &call, &mut a, Duration::from_secs(5)).await;
    rejoin(&nodes.system, &call, &mut b, Duration::from_secs(5)).await;
    relayed(&mut a, &mut b).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = observer.call(&call).await.unwrap();

    // The cut-off node comes back: it drops the call, its old sockets close, and
    // nothing it writes reaches the call.
    heal(&nodes, &owner);
    let healed = Instant::now();
    assert!(
        closed_within(&mut old_a, Duration::from_secs(LEASE_SECS * 3 + 10)).await,
        "old socket still open"
    );
    eprintln!(
        "{owner} dropped {call} {:?} after it was back",
        healed.elapsed()
    );
    assert!(closed_within(&mut old_b, Duration::from_secs(5)).await);
    let direct = format!("http://127.0.0.1:{}", nodes.port(&owner));
    assert_eq!(get_call(&c, &direct, &call, &a.user.token).await.0, 404);
    tokio::time::sleep(Duration::from_secs(LEASE_SECS)).await;
    let now = observer.call(&call).await.unwrap();
    assert_eq!(
        (now.owner.as_str(), now.epoch),
        (adopter.as_str(), settled.epoch)
    );
    assert_eq!(
        now.version, settled.version,
        "the cut-off node wrote the call"
    );
    assert!(!observer.in_set(&owner, &call).await);
    relayed(&mut b, &mut a).await;
    let log = nodes.system.stdout(&owner);
    assert!(
        log.contains("another node owns this call now") || log.contains("dropping every call"),
        "no drop logged by {owner}"
    );
}
