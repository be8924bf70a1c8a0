//! TLS (feature `tls`): a real redis-server on a TLS port, with a certificate authority
//! and a server certificate made by `openssl` in the test.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_redis_fallback::testing::RedisServer;
use secureconnect_redis_fallback::{Health, RedisClient, RedisClientConfig};
use secureconnect_testkit::free_port;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority `<name>.crt`/`<name>.key` in `dir`.
fn authority(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// `server.crt`/`server.key` for 127.0.0.1 and localhost, signed by authority `ca`.
fn server_certificate(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ],
    );
}

/// A redis-server with a TLS port (its plain port stays for the harness) and the
/// PEM of the authority that signed its certificate.
struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        authority(dir.path(), "ca");
        authority(dir.path(), "other-ca");
        server_certificate(dir.path(), "ca");
        let tls_port = free_port();
        let path = |f: &str| dir.path().join(f).display().to_string();
        let server = RedisServer::start_with_args(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &path("server.crt"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.crt"),
            "--tls-auth-clients",
            "no",
        ])
        .unwrap();
        Self {
            server,
            tls_port,
            dir,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port)
    }

    fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(format!("{name}.crt"))).unwrap()
    }
}

#[tokio::test]
async fn a_client_trusting_the_custom_ca_talks_tls_and_heals_after_a_restart() {
    let mut redis = TlsRedis::start();
    let client = RedisClient::connect(
        RedisClientConfig::new(redis.url()).tls_ca(redis.pem("ca")),
        &mut Registry::default(),
    )
    .await
    .unwrap();
    assert!(
        client
            .wait_for(Health::Healthy, Duration::from_secs(10))
            .await
    );
    client
        .query::<()>(redis::cmd("SET").arg("k").arg("over tls"))
        .await
        .unwrap();
    let value: Option<String> = client.query(redis::cmd("GET").arg("k")).await.unwrap();
    assert_eq!(value.as_deref(), Some("over tls"));
    // Plain RESP on the TLS port is not understood: the client really spoke TLS.
    let plain = RedisClient::new(
        RedisClientConfig::new(format!("redis://127.0.0.1:{}/", redis.tls_port)),
        &mut Registry::default(),
    )
    .unwrap();
    assert!(
        !plain
            .wait_for(Health::Healthy, Duration::from_secs(2))
            .await
    );

    redis.server.restart().unwrap();
    let mut healed = false;
    for _ in 0..200 {
        // The first call after the restart fails on the old connection and degrades
        // the client; it comes back over TLS by itself.
        if client
            .query::<Option<String>>(redis::cmd("GET").arg("k"))
            .await
            .is_ok()
        {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healed, "calls work again over TLS after the restart");
    assert!(
        client
            .wait_for(Health::Healthy, Duration::from_secs(10))
            .await
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_authority_is_refused() {
    let redis = TlsRedis::start();
    let client = RedisClient::new(
        RedisClientConfig::new(redis.url()).tls_ca(redis.pem("other-ca")),
        &mut Registry::default(),
    )
    .unwrap();
    assert!(
        !client
            .wait_for(Health::Healthy, Duration::from_secs(2))
            .await,
        "an untrusted certificate never makes the client healthy"
    );
    let e = client
        .query::<Option<String>>(redis::cmd("GET").arg("k"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn a_custom_ca_needs_rediss_urls_and_a_certificate() {
    let redis = TlsRedis::start();
    let plain_url = RedisClient::new(
        RedisClientConfig::new(redis.server.url()).tls_ca(redis.pem("ca")),
        &mut Registry::default(),
    )
    .unwrap_err();
    assert!(plain_url.is_invalid_config(), "{plain_url}");
    let garbage = RedisClient::new(
        RedisClientConfig::new(redis.url()).tls_ca(b"not a certificate".to_vec()),
        &mut Registry::default(),
    )
    .unwrap_err();
    assert!(garbage.is_invalid_config(), "{garbage}");
}
