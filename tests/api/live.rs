//! What the tests of the newsroom's live pages share: reading a page's
//! live updates (`{page}/events`) as a browser's EventSource does.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde_json::Value;

use crate::newsroom::Browser;

/// A page's live updates, read as a browser's EventSource reads them.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub async fn open(browser: &Browser, path: &str) -> Self {
        let response = browser
            .client
            .get(format!("{}{path}/events", browser.address))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next block of the stream (an event or a comment), or `None` once
    /// the stream has ended; fails the test after `patience`.
    pub async fn next_block(&mut self, patience: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("no event within the deadline")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    /// Reads the stream to its end, events and comments alike; fails the
    /// test if it is still open after `patience`.
    pub async fn until_the_end(&mut self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("the stream was still open after {patience:?}"));
            if chunk.unwrap().is_none() {
                return;
            }
        }
    }

    /// The data of the next event, skipping comments.
    pub async fn next_event(&mut self) -> Value {
        self.next_event_within(Duration::from_secs(10)).await
    }

    pub async fn next_event_within(&mut self, patience: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self
                .next_block(left)
                .await
                .expect("the stream ended before the event");
            let data = block.lines().find_map(|line| line.strip_prefix("data: "));
            if let Some(data) = data {
                return serde_json::from_str(data).unwrap();
            }
        }
    }

    /// Events until one passes `check`, which is returned.
    pub async fn until(&mut self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.until_within(Duration::from_secs(10), what, check)
            .await
    }

    pub async fn until_within(
        &mut self,
        patience: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "no event with {what}");
            let event = self.next_event_within(left).await;
            if check(&event) {
                return event;
            }
        }
    }
}
