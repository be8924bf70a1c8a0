//! The call history on both backends: an embedded SQLite file and a private PostgreSQL
//! cluster, following a real hub.

use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_callstate::{CallHub, CallHubConfig};
use secureconnect_testkit::postgres::PgServer;

use super::*;
use crate::config::Config;
use crate::db::DatabaseUrl;

async fn open(url: DatabaseUrl) -> CallHistory {
    let mut config = Config::from_env().unwrap();
    config.database_url = Some(url);
    let db = Db::open("video", &config, migrations(), &mut Registry::default())
        .await
        .unwrap();
    CallHistory::new(db)
}

/// Created, then ended by the hub with its last participant: both recorded; an end
/// recorded twice keeps the first.
async fn scenarios(history: &CallHistory) {
    let hub = CallHub::new(
        "node-a",
        None,
        CallHubConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    history.follow(&hub);
    hub.create_for("c1", "alice").await.unwrap();
    history.created("c1", "alice").await.unwrap();
    let open = history.get("c1").await.unwrap().unwrap();
    assert_eq!(open.creator, "alice");
    assert!(open.created_ms > 1_700_000_000_000);
    assert_eq!(open.ended_ms, None);

    let (p, _) = hub.join("c1", "alice").await.unwrap();
    assert!(hub.leave("c1", &p).await.unwrap().call_ended);
    let mut ended = None;
    for _ in 0..100 {
        ended = history.get("c1").await.unwrap().and_then(|c| c.ended_ms);
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = ended.expect("the end was recorded");
    assert!(ended >= open.created_ms);
    history.ended("c1").await.unwrap();
    assert_eq!(
        history.get("c1").await.unwrap().unwrap().ended_ms,
        Some(ended)
    );

    // One id, one record: a second creation with an id in use is refused.
    assert!(matches!(
        history.created("c1", "bob").await,
        Err(DbError::Duplicate)
    ));
    assert_eq!(history.get("nope").await.unwrap(), None);
}

#[tokio::test]
async fn history_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("t.db"));
    scenarios(&open(url).await).await;
}

#[tokio::test]
async fn history_on_postgres() {
    let pg = PgServer::start_new();
    scenarios(&open(DatabaseUrl::parse(&pg.url()).unwrap()).await).await;
}
