//! The records' queries on both backends: an embedded SQLite file and a private
//! PostgreSQL cluster.

use prometheus_client::registry::Registry;
use secureconnect_testkit::postgres::PgServer;

use super::*;
use crate::config::Config;
use crate::db::DatabaseUrl;

async fn open(url: DatabaseUrl) -> Records {
    let mut config = Config::from_env().unwrap();
    config.database_url = Some(url);
    let db = Db::open("storage", &config, migrations(), &mut Registry::default())
        .await
        .unwrap();
    Records::new(db)
}

fn meta(owner: &str, size: u64) -> FileMeta {
    FileMeta {
        owner: owner.into(),
        name: "f".into(),
        size,
        content_type: String::new(),
        stage: Stage::Uploaded,
    }
}

#[tokio::test]
async fn records_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::sqlite_file(&dir.path().join("t.db"));
    scenarios(&open(url).await).await;
}

#[tokio::test]
async fn records_on_postgres() {
    let pg = PgServer::start_new();
    scenarios(&open(DatabaseUrl::parse(&pg.url()).unwrap()).await).await;
}

async fn scenarios(r: &Records) {
    the_quota_counts_reservations_and_expired_ones_are_released(r).await;
    an_upload_claims_once_and_a_failed_one_can_be_retried(r).await;
    a_file_deleted_during_its_upload_is_not_completed(r).await;
    an_unused_reservation_expires_after_its_last_second(r).await;
    concurrent_reservations_never_exceed_the_quota(r).await;
    a_claim_left_by_a_stopped_process_is_released_at_start(r).await;
}

async fn the_quota_counts_reservations_and_expired_ones_are_released(r: &Records) {
    assert!(r.reserve("a1", meta("u1", 60), 100, 10, 0).await.unwrap());
    assert!(!r.reserve("b1", meta("u1", 50), 100, 20, 0).await.unwrap());
    assert!(
        r.reserve("b1", meta("v1", 50), 100, 20, 0).await.unwrap(),
        "per owner"
    );
    // At 11, a1's reservation (until 10) no longer counts.
    assert!(r.reserve("c1", meta("u1", 100), 100, 30, 11).await.unwrap());
    assert_eq!(r.used_by("u1", 11).await, 100);
    assert_eq!(r.sweep(11).await.unwrap(), 1);
    assert!(r.get("a1").await.unwrap().is_none());
}

async fn an_upload_claims_once_and_a_failed_one_can_be_retried(r: &Records) {
    assert!(r.reserve("a2", meta("u2", 10), 100, 50, 0).await.unwrap());
    let claimed = r.claim("a2", 1).await.unwrap();
    assert_eq!((claimed.size, claimed.stage), (10, Stage::Uploading));
    assert!(matches!(
        r.claim("a2", 1).await,
        Err(ClaimRefused::InProgress)
    ));
    r.sweep(60).await.unwrap();
    assert!(
        r.get("a2").await.unwrap().is_some(),
        "an upload under way does not expire"
    );
    r.unclaim("a2").await.unwrap();
    r.claim("a2", 2).await.unwrap();
    assert!(r.complete("a2", 4).await.unwrap());
    assert_eq!(r.used_by("u2", 2).await, 4, "the unused part is released");
    assert!(matches!(
        r.claim("a2", 3).await,
        Err(ClaimRefused::AlreadyUploaded)
    ));
    assert!(matches!(
        r.claim("zz", 3).await,
        Err(ClaimRefused::NotFound)
    ));
    let stored = r.get("a2").await.unwrap().unwrap();
    assert_eq!((stored.owner.as_str(), stored.size), ("u2", 4));
    assert_eq!(stored.stage, Stage::Uploaded);
}

async fn a_file_deleted_during_its_upload_is_not_completed(r: &Records) {
    assert!(r.reserve("a3", meta("u3", 10), 100, 50, 0).await.unwrap());
    r.claim("a3", 1).await.unwrap();
    assert!(r.remove("a3").await.unwrap());
    assert!(!r.complete("a3", 10).await.unwrap());
    assert_eq!(r.used_by("u3", 1).await, 0);
}

async fn an_unused_reservation_expires_after_its_last_second(r: &Records) {
    assert!(r.reserve("a4", meta("u4", 10), 100, 50, 0).await.unwrap());
    r.sweep(50).await.unwrap();
    assert!(
        r.get("a4").await.unwrap().is_some(),
        "valid through second 50"
    );
    r.claim("a4", 50).await.unwrap();
    r.unclaim("a4").await.unwrap();
    assert!(matches!(
        r.claim("a4", 51).await,
        Err(ClaimRefused::NotFound)
    ));
    r.sweep(51).await.unwrap();
    assert!(r.get("a4").await.unwrap().is_none());
    assert_eq!(r.used_by("u4", 51).await, 0);
}

async fn concurrent_reservations_never_exceed_the_quota(r: &Records) {
    let attempts = (0..30).map(|i| {
        let r = r.clone();
        async move {
            r.reserve(&format!("q{i}"), meta("u5", 10), 100, 1000, 0)
                .await
                .unwrap()
        }
    });
    let granted = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(granted, 10, "100 bytes of quota hold ten 10-byte files");
    assert_eq!(r.used_by("u5", 0).await, 100);
}

async fn a_claim_left_by_a_stopped_process_is_released_at_start(r: &Records) {
    assert!(r.reserve("a6", meta("u6", 10), 100, 50, 0).await.unwrap());
    r.claim("a6", 1).await.unwrap();
    r.touch("a6", 5).await.unwrap();
    assert_eq!(r.recover(5).await.unwrap(), 0, "alive at 5");
    assert_eq!(r.get("a6").await.unwrap().unwrap().stage, Stage::Uploading);
    // The process is gone: nobody refreshes the claim, which is released.
    assert_eq!(r.recover(6).await.unwrap(), 1);
    assert_eq!(
        r.get("a6").await.unwrap().unwrap().stage,
        Stage::Reserved { expires: 50 }
    );
    r.claim("a6", 2).await.unwrap();
}
