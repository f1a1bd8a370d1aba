//! The admin session store against the real Redis: what it writes, how long
//! it keeps it, and how it answers when Redis is gone. Each test has its own
//! key prefix, deleted when it ends.

use std::time::{Duration, Instant};

use newsletter::admin::sessions::{BrowserOwner, SessionData, SessionError, SessionStore, Stage};
use newsletter::configuration::{AdminSettings, get_configuration};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{RedisKeys, eventually_within};

/// A store on its own key prefix, and a direct connection to look behind it.
struct TestStore {
    store: SessionStore,
    redis: redis::aio::MultiplexedConnection,
    prefix: String,
    _keys: RedisKeys,
}

fn admin_settings(idle_seconds: u64, lifetime_seconds: u64) -> AdminSettings {
    AdminSettings {
        session_idle_timeout_seconds: idle_seconds,
        session_lifetime_seconds: lifetime_seconds,
        secure_cookie: false,
        totp_key: secrecy::SecretString::from("ab".repeat(32)),
        previous_totp_keys: Vec::new(),
    }
}

impl TestStore {
    async fn new(settings: AdminSettings) -> Self {
        let uri = get_configuration()
            .expect("Failed to read the configuration")
            .redis_uri;
        let prefix = format!("test:{}:", Uuid::new_v4().simple());
        let store = SessionStore::new(&uri, &prefix, &settings).unwrap();
        let redis = redis::Client::open(uri.expose_secret())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is not running on the configured address");
        Self {
            store,
            redis,
            prefix: prefix.clone(),
            _keys: RedisKeys { uri, prefix },
        }
    }

    /// Every key under this test's prefix.
    async fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    fn session_key(&self, id: &str) -> String {
        format!("{}session:{}", self.prefix, hex::encode(Sha256::digest(id)))
    }

    async fn pttl(&self, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    async fn pexpire(&self, key: &str, ms: i64) {
        let set: bool = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(ms)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap();
        assert!(set, "{key} does not exist");
    }
}

#[tokio::test]
async fn a_created_session_loads_back_with_its_data() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let admin = Uuid::new_v4();
    let mut data = SessionData::new(admin, 4, Stage::AwaitingCode);
    data.failed_codes = 1;

    let id = t.store.create(&data).await.unwrap();
    let session = t.store.load(&id).await.unwrap().expect("no session");

    assert_eq!(session.id.as_str(), id.as_str());
    assert_eq!(session.data.admin_id, admin);
    assert_eq!(session.data.generation, 4);
    assert_eq!(session.data.stage, Stage::AwaitingCode);
    assert_eq!(session.data.csrf_token, data.csrf_token);
    assert_eq!(session.data.created_at, data.created_at);
    assert_eq!(session.data.failed_codes, 1);
}

#[tokio::test]
async fn each_created_session_gets_a_new_id() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let data = SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn);

    let first = t.store.create(&data).await.unwrap();
    let second = t.store.create(&data).await.unwrap();

    assert_ne!(first.as_str(), second.as_str());
    assert!(t.store.load(&first).await.unwrap().is_some());
    assert!(t.store.load(&second).await.unwrap().is_some());
}

#[tokio::test]
async fn redis_holds_the_hash_of_a_session_id_never_the_id() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let admin = Uuid::new_v4();
    let id = t
        .store
        .create(&SessionData::new(admin, 0, Stage::SignedIn))
        .await
        .unwrap();

    let keys = t.keys().await;
    assert!(keys.contains(&t.session_key(id.as_str())), "{keys:?}");
    for key in &keys {
        assert!(!key.contains(id.as_str()), "{key} holds the id");
        let value: String = match redis::cmd("TYPE")
            .arg(key)
            .query_async::<String>(&mut t.redis.clone())
            .await
            .unwrap()
            .as_str()
        {
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query_async::<Vec<String>>(&mut t.redis.clone())
                .await
                .unwrap()
                .join(" "),
            _ => redis::cmd("GET")
                .arg(key)
                .query_async(&mut t.redis.clone())
                .await
                .unwrap(),
        };
        assert!(!value.contains(id.as_str()), "{key} = {value} holds the id");
    }
}

#[tokio::test]
async fn a_session_nobody_created_does_not_load() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let id = newsletter::admin::sessions::SessionId::parse(&"ab".repeat(32)).unwrap();
    assert!(t.store.load(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn loading_a_session_starts_its_idle_timeout_again() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let id = t
        .store
        .create(&SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn))
        .await
        .unwrap();
    let key = t.session_key(id.as_str());
    let ttl = t.pttl(&key).await;
    assert!(
        (55_000..=60_000).contains(&ttl),
        "TTL after create: {ttl} ms"
    );

    t.pexpire(&key, 5_000).await;
    assert!(t.pttl(&key).await <= 5_000);
    assert!(t.store.load(&id).await.unwrap().is_some());

    let ttl = t.pttl(&key).await;
    assert!((55_000..=60_000).contains(&ttl), "TTL after load: {ttl} ms");
}

#[tokio::test]
async fn saving_a_session_keeps_its_id_and_stores_the_new_data() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let id = t
        .store
        .create(&SessionData::new(Uuid::new_v4(), 0, Stage::AwaitingCode))
        .await
        .unwrap();
    let mut session = t.store.load(&id).await.unwrap().unwrap();
    session.data.failed_codes = 2;
    session.data.sealed_pending_totp_secret = Some(vec![9; 20]);
    session.data.stage = Stage::SignedIn;

    t.store.save(&session).await.unwrap();

    let reloaded = t.store.load(&id).await.unwrap().unwrap();
    assert_eq!(reloaded.data.failed_codes, 2);
    assert_eq!(reloaded.data.sealed_pending_totp_secret, Some(vec![9; 20]));
    assert_eq!(reloaded.data.stage, Stage::SignedIn);
    let ttl = t.pttl(&t.session_key(id.as_str())).await;
    assert!((55_000..=60_000).contains(&ttl), "TTL after save: {ttl} ms");
}

#[tokio::test]
async fn saving_a_destroyed_session_does_not_bring_it_back() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let id = t
        .store
        .create(&SessionData::new(Uuid::new_v4(), 0, Stage::AwaitingCode))
        .await
        .unwrap();
    let session = t.store.load(&id).await.unwrap().unwrap();

    t.store.destroy(&id).await.unwrap();
    t.store.save(&session).await.unwrap();

    assert!(t.store.load(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_busy_it_is() {
    let lifetime = Duration::from_secs(2);
    let t = TestStore::new(admin_settings(60, lifetime.as_secs())).await;
    let data = SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn);
    let id = t.store.create(&data).await.unwrap();
    let key = t.session_key(id.as_str());
    let ends_at_ms = (data.created_at as u128 + lifetime.as_secs() as u128) * 1000;

    eventually_within(Duration::from_secs(10), "the lifetime to end", || async {
        // The store reads its clock during the load, after this one, and
        // sets the TTL from it; the TTL has only shrunk since. So it is at
        // most what was left at this reading, however long the commands
        // took to reach Redis (a reading taken after the load overstated
        // nothing but could be later than the store's by a whole round
        // trip). A few ms cover the clock Redis reads per command.
        let before_ms = unix_now_millis();
        let loaded = t.store.load(&id).await.unwrap();
        let ttl = t.pttl(&key).await;
        if ttl > 0 {
            let left = ends_at_ms.saturating_sub(before_ms);
            assert!(
                ttl as u128 <= left + 5,
                "TTL {ttl} ms outlives the {left} ms left of the lifetime"
            );
        }
        loaded.is_none().then_some(())
    })
    .await;

    assert!(
        unix_now_millis() + 50 >= ends_at_ms,
        "the session ended before its lifetime"
    );
    assert_eq!(t.pttl(&key).await, -2, "the key is still in Redis");
}

#[tokio::test]
async fn a_session_past_its_lifetime_is_deleted_when_loaded() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let mut data = SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn);
    let id = t.store.create(&data).await.unwrap();
    let mut session = t.store.load(&id).await.unwrap().unwrap();

    // As if made before the lifetime: saved, it is deleted, not kept.
    data.created_at -= 3_601;
    session.data = data;
    t.store.save(&session).await.unwrap();

    assert!(t.store.load(&id).await.unwrap().is_none());
    assert_eq!(t.pttl(&t.session_key(id.as_str())).await, -2);
}

#[tokio::test]
async fn an_unreadable_session_is_deleted_and_not_loaded() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let id = t
        .store
        .create(&SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn))
        .await
        .unwrap();
    let key = t.session_key(id.as_str());
    let () = redis::cmd("SET")
        .arg(&key)
        .arg("{not json")
        .arg("XX")
        .arg("KEEPTTL")
        .query_async(&mut t.redis.clone())
        .await
        .unwrap();

    assert!(t.store.load(&id).await.unwrap().is_none());
    assert_eq!(t.pttl(&key).await, -2);
}

#[tokio::test]
async fn a_destroyed_session_does_not_load() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let data = SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn);
    let id = t.store.create(&data).await.unwrap();
    let other = t.store.create(&data).await.unwrap();

    t.store.destroy(&id).await.unwrap();

    assert!(t.store.load(&id).await.unwrap().is_none());
    assert!(t.store.load(&other).await.unwrap().is_some());
}

#[tokio::test]
async fn destroy_all_ends_every_session_of_one_admin_and_no_other() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let admin = Uuid::new_v4();
    let other_admin = Uuid::new_v4();
    let first = t
        .store
        .create(&SessionData::new(admin, 0, Stage::SignedIn))
        .await
        .unwrap();
    let second = t
        .store
        .create(&SessionData::new(admin, 0, Stage::AwaitingCode))
        .await
        .unwrap();
    let others = t
        .store
        .create(&SessionData::new(other_admin, 0, Stage::SignedIn))
        .await
        .unwrap();

    t.store.destroy_all(admin).await.unwrap();

    assert!(t.store.load(&first).await.unwrap().is_none());
    assert!(t.store.load(&second).await.unwrap().is_none());
    assert!(t.store.load(&others).await.unwrap().is_some());
    // A session made afterwards is ended by the next destroy_all.
    let later = t
        .store
        .create(&SessionData::new(admin, 1, Stage::SignedIn))
        .await
        .unwrap();
    t.store.destroy_all(admin).await.unwrap();
    assert!(t.store.load(&later).await.unwrap().is_none());
}

#[tokio::test]
async fn the_admin_index_lives_as_long_as_a_session_can() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let admin = Uuid::new_v4();
    t.store
        .create(&SessionData::new(admin, 0, Stage::SignedIn))
        .await
        .unwrap();

    let ttl = t.pttl(&format!("{}admin_sessions:{admin}", t.prefix)).await;
    assert!((3_590_000..=3_600_000).contains(&ttl), "index TTL {ttl} ms");
}

#[tokio::test]
async fn destroy_all_for_an_admin_without_sessions_succeeds() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    t.store.destroy_all(Uuid::new_v4()).await.unwrap();
}

#[tokio::test]
async fn a_remembered_device_names_its_admin_for_30_days() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let admin = Uuid::new_v4();

    let owner = BrowserOwner {
        admin_id: admin,
        generation: 3,
    };
    let token = t.store.remember_device(owner).await.unwrap();

    assert_eq!(t.store.device_admin(&token).await.unwrap(), Some(owner));
    let key = format!("{}device:{}", t.prefix, hex::encode(Sha256::digest(&token)));
    let ttl = t.pttl(&key).await;
    let thirty_days = 30 * 24 * 3_600 * 1_000;
    assert!(
        (thirty_days - 10_000..=thirty_days).contains(&ttl),
        "{ttl} ms"
    );
    assert!(
        t.keys().await.iter().all(|k| !k.contains(&token)),
        "Redis holds the device token"
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_device_token_names_nobody() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    let owner = BrowserOwner {
        admin_id: Uuid::new_v4(),
        generation: 0,
    };
    let token = t.store.remember_device(owner).await.unwrap();

    for (case, other) in [
        ("unknown", "0".repeat(64)),
        ("uppercase", token.to_uppercase()),
        ("truncated", token[..63].to_owned()),
        ("empty", String::new()),
        ("not hex", "z".repeat(64)),
    ] {
        assert_eq!(t.store.device_admin(&other).await.unwrap(), None, "{case}");
    }
}

#[tokio::test]
async fn a_malformed_device_token_is_answered_without_redis() {
    let store = unreachable_store();
    let started = Instant::now();
    assert_eq!(store.device_admin("not a token").await.unwrap(), None);
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn a_store_whose_redis_is_unreachable_answers_unavailable_within_two_seconds() {
    let store = unreachable_store();
    let data = SessionData::new(Uuid::new_v4(), 0, Stage::SignedIn);

    let started = Instant::now();
    let created = store.create(&data).await;
    assert!(
        matches!(created, Err(SessionError::Unavailable(_))),
        "{created:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let id = newsletter::admin::sessions::SessionId::parse(&"cd".repeat(32)).unwrap();
    let started = Instant::now();
    let loaded = store.load(&id).await;
    assert!(
        matches!(loaded, Err(SessionError::Unavailable(_))),
        "{loaded:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!store.is_available().await);
}

#[tokio::test]
async fn a_store_whose_redis_accepts_but_never_answers_gives_up_within_two_seconds() {
    // A listener that takes connections and never replies: a frozen Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            connections.push(socket);
        }
    });
    let store = SessionStore::new(
        &SecretString::from(format!("redis://127.0.0.1:{port}")),
        "frozen:",
        &admin_settings(60, 3_600),
    )
    .unwrap();

    let started = Instant::now();
    let loaded = store
        .load(&newsletter::admin::sessions::SessionId::parse(&"ef".repeat(32)).unwrap())
        .await;
    assert!(
        matches!(loaded, Err(SessionError::Unavailable(_))),
        "{loaded:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[tokio::test]
async fn a_store_whose_redis_answers_is_available() {
    let t = TestStore::new(admin_settings(60, 3_600)).await;
    assert!(t.store.is_available().await);
}

/// Nothing listens on port 1.
fn unreachable_store() -> SessionStore {
    SessionStore::new(
        &SecretString::from("redis://127.0.0.1:1"),
        "unreachable:",
        &admin_settings(60, 3_600),
    )
    .unwrap()
}

fn unix_now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}
