//! The reference services on a real Redis Cluster (`REDIS_MODE=cluster`, 3 masters and
//! 3 replicas): a master SIGKILLed or SIGSTOPped under load through the gateway, a call
//! that survives a video SIGKILL, and no `KEYS` on any node.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis_load::{
    all_healthy, assert_all_ok, call_with_two, readiness, users, within, GatewayLoad, UNLIMITED,
};
use common::{json, recv, send, ws, System};
use secureconnect_redis_fallback::testing::RedisCluster;

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn system_on(cluster: &RedisCluster) -> System {
    let mut env = UNLIMITED.to_vec();
    env.push(("REDIS_MODE", "cluster"));
    System::start(&cluster.urls().join(","), &env).await
}

fn assert_no_keys_command(cluster: &mut RedisCluster) {
    for i in 0..6 {
        let node = cluster.node_mut(i);
        if node.pid().is_none() {
            continue;
        }
        let stats = node
            .command(&["INFO", "commandstats"])
            .unwrap()
            .text()
            .unwrap();
        assert!(
            !stats.contains("cmdstat_keys:"),
            "KEYS was sent to node {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_costs_no_request_and_a_call_survives_a_video_kill() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let mut system = system_on(&cluster).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let users = users(&c, &g, 6).await;
    let (call, joined) = call_with_two(&system, &c, &users[0], &users[1]).await;
    let ready = readiness(&c, &system).await;
    assert!(
        ready
            .iter()
            .all(|r| r["redis"] == "healthy" && r["redis_slots_down"] == 0),
        "{ready:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await; // written behind, replicated

    // The master of the call's keys dies under load.
    let victim = block(|| cluster.master_of(&format!("sc:call:{{{call}}}"))).unwrap();
    let load = GatewayLoad::start(&g, &call, &users, 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    block(|| cluster.node_mut(victim).kill()).unwrap();
    let promoted = block(|| cluster.wait_for_promotion(victim, Duration::from_secs(60))).unwrap();
    let promoted_after = killed.elapsed();
    let healthy = all_healthy(&c, &system, Duration::from_secs(10)).await;
    assert!(
        healthy.is_some(),
        "every service sees Redis healthy within 10 s of the promotion: {:?}",
        readiness(&c, &system).await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = load.stop().await;
    eprintln!(
        "{} requests through the gateway; replica {promoted} promoted {promoted_after:?} after the kill, \
         every service healthy {:?} later; slowest request {:?}",
        answers.len(),
        healthy.unwrap(),
        answers.iter().map(|a| a.took).max().unwrap()
    );
    assert_all_ok(&answers);

    // The call survives a video SIGKILL on the cluster: recovered, and rejoined.
    let (owner_id, owner_rejoin) = (joined[0].1.clone(), joined[0].2.clone());
    drop(joined);
    system.kill("video");
    system.spawn("video").await;
    let url = format!("{g}/v1/calls/{call}");
    let token = users[0].token.clone();
    let recovered = within(Duration::from_secs(30), || {
        let (c, url, token) = (c.clone(), url.clone(), token.clone());
        async move {
            let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
            r.status() == 200
        }
    })
    .await;
    assert!(
        recovered.is_some(),
        "the call was recovered from the cluster"
    );
    let body = json(c.get(&url).bearer_auth(&token)).await;
    let participants = body["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 2, "{body}");
    assert!(
        participants.iter().all(|p| p["state"] == "awaiting_rejoin"),
        "{body}"
    );
    let mut socket = ws(&system, &call, &users[0].token).await;
    send(
        &mut socket,
        serde_json::json!({ "type": "rejoin", "participant_id": owner_id, "token": owner_rejoin }),
    )
    .await;
    let rejoined = recv(&mut socket).await;
    assert_eq!(rejoined["type"], "rejoined", "{rejoined}");
    block(|| assert_no_keys_command(&mut cluster));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_stopped_under_load_costs_each_request_at_most_about_the_call_deadline() {
    let mut cluster = block(RedisCluster::start).unwrap();
    let system = system_on(&cluster).await;
    let g = system.gateway();
    let c = reqwest::Client::new();
    let users = users(&c, &g, 6).await;
    let (call, _joined) = call_with_two(&system, &c, &users[0], &users[1]).await;
    let victim = block(|| cluster.master_of(&format!("sc:call:{{{call}}}"))).unwrap();
    let load = GatewayLoad::start(&g, &call, &users, 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    block(|| cluster.node_mut(victim).pause()).unwrap();
    block(|| cluster.wait_for_promotion(victim, Duration::from_secs(60))).unwrap();
    let healthy = all_healthy(&c, &system, Duration::from_secs(10)).await;
    block(|| cluster.node_mut(victim).resume()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = load.stop().await;
    let slowest = answers.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "{} requests; slowest {slowest:?}; healthy {healthy:?} after the promotion",
        answers.len()
    );
    assert!(healthy.is_some(), "healthy within 10 s of the promotion");
    assert_all_ok(&answers);
    // Two rate-limit checks on the stopped master's slots, each cut at the 250 ms call
    // deadline until the master is marked down, plus the proxying on a loaded machine.
    assert!(slowest < Duration::from_millis(1500), "{slowest:?}");
    block(|| assert_no_keys_command(&mut cluster));
}
