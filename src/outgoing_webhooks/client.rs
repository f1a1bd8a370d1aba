// TEMPORARY STUB (not committed)
use crate::delivery::answer::{Answer, Code, Refusal};
use tokio_util::bytes::Bytes;
pub struct EndpointUrl(String);
impl EndpointUrl {
    pub fn parse(raw: &str, _allow: bool) -> Result<Self, String> {
        if raw.starts_with("http") {
            Ok(Self(raw.into()))
        } else {
            Err("bad".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
pub struct HookClientSettings {
    pub connect_timeout: std::time::Duration,
    pub total_timeout: std::time::Duration,
    pub max_answer_bytes: u64,
    pub allow_private_addresses: bool,
}
pub struct HookClient(reqwest::Client);
impl HookClient {
    pub fn new(s: &HookClientSettings) -> Result<Self, std::io::Error> {
        Ok(HookClient(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(s.total_timeout)
                .build()
                .unwrap(),
        ))
    }
    pub async fn post(&self, url: &EndpointUrl, headers: &[(&str, String)], body: Bytes) -> Answer {
        let mut r = self.0.post(&url.0).body(body);
        for (n, v) in headers {
            r = r.header(*n, v);
        }
        match r.send().await {
            Ok(a) if a.status().is_success() => Answer::Sent {
                message_id: None,
                provider: "webhook",
            },
            Ok(a) => Answer::Passing {
                error: Refusal::new("the endpoint refused").with_code(Code::Http {
                    status: a.status().as_u16(),
                    error_code: None,
                }),
                retry_after: None,
            },
            Err(_) => Answer::Passing {
                error: Refusal::new("no answer"),
                retry_after: None,
            },
        }
    }
}
