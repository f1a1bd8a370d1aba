//! SIGTERM on the real binary, as a platform sends it on redeploy: the
//! server stops taking connections, finishes the requests it is serving,
//! sends the email they queued, and exits cleanly.

use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::Acquire;

use crate::helpers::{TestApp, eventually, spawn_app_with};

/// Starts `newsletter serve` on a free port, against the test's database,
/// Redis keys and mock email API.
pub fn serve(app: &TestApp) -> (ServerProcess, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = app
        .newsletter_command(&app.email_server.uri())
        .env("APP_APPLICATION__PORT", port.to_string())
        .env("APP_RATE_LIMIT__PER_IP__BURST", "1000")
        .spawn()
        .unwrap();
    (ServerProcess(child), port)
}

/// A `newsletter serve` process, killed and reaped when dropped: a test that
/// fails before it stops the server leaves nothing serving, and writing to
/// the test's Redis keys, after the test. Declared after the [`TestApp`],
/// it drops first.
pub struct ServerProcess(Child);

impl std::ops::Deref for ServerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Gone already after a test that stopped it: then both are no-ops.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sigterm(child: &Child) {
    let signalled = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
}

#[tokio::test]
async fn on_sigterm_the_server_finishes_a_request_in_flight_refuses_new_ones_and_exits() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    let (server, port) = serve(&app);
    let server = Mutex::new(server);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    eventually("the server to answer its health check", || async {
        let response = client.get(format!("{base}/health_check")).send().await;
        response.ok().filter(|r| r.status().is_success())
    })
    .await;

    // Hold a lock that makes the next subscription wait inside its
    // transaction, so that it is in flight when the signal arrives.
    let mut connection = app.db_pool.acquire().await.unwrap();
    let mut blocker = connection.begin().await.unwrap();
    sqlx::query("LOCK TABLE subscriptions IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/subscriptions");
        async move {
            client
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("name=Ursula&email=ursula%40example.com")
                .send()
                .await
        }
    });
    eventually("the subscription to wait for the lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks \
             WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND relation = 'subscriptions'::regclass AND NOT granted",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;

    sigterm(&server.lock().unwrap());
    // A fresh client, so the attempt needs a new connection.
    eventually("the server to stop accepting connections", || async {
        let attempt = reqwest::Client::new()
            .get(format!("{base}/health_check"))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        attempt.is_err().then_some(())
    })
    .await;
    // Keep the request waiting well past the signal: the server must wait
    // with it (the configured shutdown timeout is far longer).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        server.lock().unwrap().try_wait().unwrap().is_none(),
        "the server exited with a request still in flight"
    );
    blocker.rollback().await.unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight was cut off");
    assert_eq!(response.status().as_u16(), 200);
    let exit = eventually("the server to exit", || async {
        server.lock().unwrap().try_wait().unwrap()
    })
    .await;
    assert!(exit.success(), "the server exited with {exit}");
    assert_eq!(app.subscriber_status().await, "pending_confirmation");
    // The request's email was handed to the server's delivery task, which
    // sent it before the process exited.
    let outbox = app.outbox().await;
    assert_eq!(outbox[0].status, "sent", "{outbox:?}");
    assert_eq!(app.sent_emails().await.len(), 1);
}
