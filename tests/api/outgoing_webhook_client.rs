//! The webhook client against real sockets: it reaches no internal
//! address unless allowed, follows no redirect, and reads what an
//! endpoint answers as sent or as a refusal that may pass, within its
//! limits. The refused addresses fail before any connection, so these
//! tests need no network.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use newsletter::delivery::answer::{Answer, Code};
use newsletter::outgoing_webhooks::client::{EndpointUrl, HookClient, HookClientSettings};
use newsletter::outgoing_webhooks::signing::{self, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Far longer than any of these calls takes: reaching it means the client
/// waited on something it should not have.
const DEADLINE: Duration = Duration::from_secs(10);

fn settings(allow_private_addresses: bool) -> HookClientSettings {
    HookClientSettings {
        connect_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(60),
        max_answer_bytes: 16 * 1024,
        allow_private_addresses,
    }
}

fn client(allow_private_addresses: bool) -> HookClient {
    HookClient::new(&settings(allow_private_addresses)).unwrap()
}

/// `text` as an endpoint, whatever its address: what the client does with
/// it is under test, not the form's check.
fn url(text: &str) -> EndpointUrl {
    EndpointUrl::parse(text, true).unwrap()
}

async fn within_the_deadline<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, call)
        .await
        .expect("the call outlasted the deadline")
}

async fn post(client: &HookClient, url: &EndpointUrl) -> Answer {
    within_the_deadline(client.post(url, &[], Bytes::from_static(b"{}"))).await
}

/// The refusal's text, for a refusal that may pass.
fn passing(answer: &Answer) -> (String, Option<Code>, Option<Duration>) {
    match answer {
        Answer::Passing { error, retry_after } => (error.to_string(), error.code(), *retry_after),
        other => panic!("expected a refusal that may pass, got {other:?}"),
    }
}

fn http(status: u16) -> Option<Code> {
    Some(Code::Http {
        status,
        error_code: None,
    })
}

#[tokio::test]
async fn calls_to_internal_addresses_are_refused_before_connecting() {
    let client = client(false);
    for text in [
        "http://127.0.0.1:9/",
        "http://[::1]:9/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        // A name that resolves to loopback: refused by the resolver.
        "http://localhost:9/",
    ] {
        let (error, code, _) = passing(&post(&client, &url(text)).await);
        assert!(
            error.starts_with("the endpoint's address is not allowed"),
            "{text}: {error}"
        );
        assert_eq!(code, None, "{text}");
    }
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_even_with_a_receiver_listening_there() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let by_name = format!("http://localhost:{}/hook", receiver.address().port());

    let (error, ..) = passing(&post(&client(false), &url(&by_name)).await);

    assert!(
        error.starts_with("the endpoint's address is not allowed"),
        "{error}"
    );
    assert!(receiver.received_requests().await.unwrap().is_empty());
    // The same receiver, allowed: the refusal was the guard's.
    assert!(matches!(
        post(&client(true), &url(&by_name)).await,
        Answer::Sent { .. }
    ));
}

#[tokio::test]
async fn a_2xx_is_sent_and_the_call_carries_its_body_signature_and_json_type() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("content-type", "application/json"))
        .and(header_exists("webhook-signature"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&receiver)
        .await;
    let secret = Secret::generate();
    let body = br#"{"type":"subscriber.confirmed"}"#;
    let headers = signing::headers(&secret, "msg_1", 1_700_000_000, body);

    let answer = within_the_deadline(client(true).post(
        &url(&format!("{}/hook", receiver.uri())),
        &headers,
        Bytes::from_static(body),
    ))
    .await;

    assert_eq!(
        answer,
        Answer::Sent {
            message_id: None,
            provider: "webhook",
            code: Some(Code::Http {
                status: 204,
                error_code: None
            }),
        },
        "a 2xx is sent, with its status"
    );
    let received = &receiver.received_requests().await.unwrap()[0];
    assert_eq!(received.body, body);
    let header = |name: &str| received.headers.get(name).unwrap().to_str().unwrap();
    let verified = signing::verify(
        &secret,
        &signing::Headers {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
        },
        &received.body,
        1_700_000_000,
        Duration::from_secs(300),
    );
    assert_eq!(verified, Ok(()));
    assert!(
        header("user-agent").starts_with("newsletter"),
        "{}",
        header("user-agent")
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_may_pass() {
    let receiver = MockServer::start().await;
    Mock::given(path("/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    for location in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("{}/elsewhere", receiver.uri()),
    ] {
        Mock::given(path("/hook"))
            .respond_with(ResponseTemplate::new(302).insert_header("location", location.as_str()))
            .up_to_n_times(1)
            .mount(&receiver)
            .await;

        let answer = post(&client(true), &url(&format!("{}/hook", receiver.uri()))).await;

        let (error, code, _) = passing(&answer);
        assert_eq!(code, http(302), "to {location}: {error}");
    }
    let paths: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/hook", "/hook"], "a redirect was followed");
}

#[tokio::test]
async fn a_failing_or_busy_endpoint_may_pass_with_its_status_and_never_throttles() {
    let receiver = MockServer::start().await;
    let hook = url(&format!("{}/hook", receiver.uri()));
    for (status, retry_after, expected_retry_after) in [
        (500, None, None),
        (404, None, None),
        (429, Some("30"), Some(Duration::from_secs(30))),
        (503, Some("86400000"), Some(Duration::from_secs(3600))),
    ] {
        let mut answer = ResponseTemplate::new(status);
        if let Some(seconds) = retry_after {
            answer = answer.insert_header("retry-after", seconds);
        }
        Mock::given(method("POST"))
            .respond_with(answer)
            .up_to_n_times(1)
            .mount(&receiver)
            .await;

        let (error, code, waited) = passing(&post(&client(true), &hook).await);

        assert_eq!(code, http(status), "{status}: {error}");
        assert_eq!(waited, expected_retry_after, "{status}");
    }
}

#[tokio::test]
async fn an_endless_answer_is_read_no_further_than_the_cap() {
    // An endpoint that promises a gigabyte and sends until the client
    // hangs up: a client reading it all would wait out its total timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let endpoint = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n")
            .await
            .unwrap();
        let chunk = [b'x'; 8192];
        let mut sent = 0usize;
        while socket.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        sent
    });

    let answer = post(&client(true), &url(&format!("http://{address}/hook"))).await;

    assert!(matches!(answer, Answer::Sent { .. }), "{answer:?}");
    let sent = within_the_deadline(endpoint).await.unwrap();
    assert!(sent < 100_000_000, "the client read {sent} bytes");
}

#[tokio::test]
async fn an_endpoint_that_does_not_accept_the_connection_times_out_at_the_connect_timeout() {
    // A listener whose queue is full and which never accepts: the kernel
    // drops further connection attempts, as a firewall would.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    // Connections until one is no longer taken into the queue: how many it
    // holds is the kernel's to say.
    let mut filling = Vec::new();
    for _ in 0..8 {
        let connect = tokio::net::TcpStream::connect(address);
        match tokio::time::timeout(Duration::from_millis(500), connect).await {
            Ok(connected) => filling.push(connected.unwrap()),
            Err(_) => break,
        }
    }
    assert!(filling.len() < 8, "the listener's queue never filled");
    let client = HookClient::new(&HookClientSettings {
        connect_timeout: Duration::from_millis(300),
        ..settings(true)
    })
    .unwrap();

    let started = std::time::Instant::now();
    let answer = post(&client, &url(&format!("http://{address}/hook"))).await;

    let (error, code, _) = passing(&answer);
    assert_eq!(error, "the endpoint did not answer in time");
    assert_eq!(code, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}
