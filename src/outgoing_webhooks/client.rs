//! The HTTP client that calls webhook endpoints, guarded: an endpoint is a
//! URL an operator typed, so a call must not become a way into the
//! service's own network (server-side request forgery). Unless
//! `allow_private_addresses` is set (for local runs and tests), a call is
//! never made to a loopback, private, link-local (the cloud metadata
//! address among them), CGNAT, multicast, broadcast or unspecified
//! address, nor to an IPv6 address that maps or embeds one of those.
//!
//! The check is made on the addresses a call really connects to: by the
//! client's own resolver, on every new connection, so a name that resolves
//! somewhere else between the form and the call is still refused; and for
//! a URL naming an address outright, which no resolver sees, before the
//! call. Redirects are not followed (a 3xx is a refusal like any other),
//! and no proxy is used, so neither can take a call elsewhere.
//!
//! An endpoint's answer counts by its status alone. Its body is read up to
//! `max_answer_bytes`, so that a connection can be reused and a huge or
//! endless answer costs nothing, and then dropped: none of it is kept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, redirect};

use crate::configuration::OutgoingWebhookSettings;
use crate::delivery::answer::{Answer, Code, Refusal};
use crate::metrics::Metrics;

/// The name answers from endpoints are recorded under.
pub const PROVIDER: &str = "webhook";

/// The longest an endpoint's `Retry-After` may hold a call back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The longest URL an endpoint may have.
const MAX_URL_CHARS: usize = 2000;

const USER_AGENT: &str = concat!(
    env!("CARGO_PKG_NAME"),
    "-webhooks/",
    env!("CARGO_PKG_VERSION")
);

const NOT_ALLOWED: Refusal = Refusal::new("the endpoint's address is not allowed")
    .because("a loopback, private, link-local or otherwise internal address");

/// How the client calls endpoints.
#[derive(Debug, Clone)]
pub struct HookClientSettings {
    /// The longest a connection (TCP and TLS) may take to set up.
    pub connect_timeout: Duration,
    /// The longest a whole call may take, the answer's body included.
    pub total_timeout: Duration,
    /// The most of an answer's body that is read.
    pub max_answer_bytes: usize,
    /// Whether endpoints may be on internal addresses: for local runs and
    /// tests only.
    pub allow_private_addresses: bool,
}

impl From<&OutgoingWebhookSettings> for HookClientSettings {
    fn from(settings: &OutgoingWebhookSettings) -> Self {
        Self {
            connect_timeout: Duration::from_millis(settings.connect_timeout_milliseconds),
            total_timeout: settings.call_time(),
            max_answer_bytes: settings.max_answer_bytes,
            allow_private_addresses: settings.allow_private_addresses,
        }
    }
}

/// Calls webhook endpoints. Cheap to clone: clones share connections.
#[derive(Debug, Clone)]
pub struct HookClient {
    http: reqwest::Client,
    max_answer_bytes: usize,
    allow_private_addresses: bool,
    metrics: Metrics,
}

/// An endpoint's URL, parsed: http or https, a host, no user or password,
/// at most 2000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(url::Url);

/// Why an endpoint's URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is longer than 2000 characters")]
    TooLong,
    #[error("the URL holds spaces or control characters")]
    ControlCharacter,
    #[error("the URL is not a valid URL")]
    NotAUrl,
    #[error("the URL must start with http:// or https://")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL must not hold a user name or password")]
    Userinfo,
    #[error("the URL's address is loopback, private, link-local or otherwise internal")]
    AddressNotAllowed,
}

impl EndpointUrl {
    /// Parses an endpoint's URL. With `allow_private_addresses` off, a URL
    /// naming an internal address outright is refused here already; a name
    /// is checked when it is called, on what it resolves to then.
    pub fn parse(text: &str, allow_private_addresses: bool) -> Result<Self, UrlError> {
        if text.chars().count() > MAX_URL_CHARS {
            return Err(UrlError::TooLong);
        }
        // The URL parser would drop tabs and line breaks silently: what is
        // stored must be what was typed.
        if text
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || is_format(c))
        {
            return Err(UrlError::ControlCharacter);
        }
        let url = url::Url::parse(text).map_err(|_| UrlError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Userinfo);
        }
        // What is stored is the parsed form, in which a character outside
        // ASCII or a brace takes three: the cap holds for it too.
        if url.as_str().len() > MAX_URL_CHARS {
            return Err(UrlError::TooLong);
        }
        // Names that mean this machine by definition (RFC 6761) are refused
        // as the loopback address they stand for; any other name is judged
        // by what it resolves to, at each connection.
        if !allow_private_addresses
            && url.host_str().is_some_and(|host| {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host == "localhost" || host.ends_with(".localhost")
            })
        {
            return Err(UrlError::AddressNotAllowed);
        }
        let url = Self(url);
        match url.literal_address() {
            Err(error) => Err(error),
            Ok(Some(ip)) if !allowed(ip, allow_private_addresses) => {
                Err(UrlError::AddressNotAllowed)
            }
            Ok(_) => Ok(url),
        }
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The address the URL names outright, if it names one rather than a
    /// host name.
    fn literal_address(&self) -> Result<Option<IpAddr>, UrlError> {
        match self.0.host() {
            None => Err(UrlError::NoHost),
            Some(url::Host::Domain("")) => Err(UrlError::NoHost),
            Some(url::Host::Domain(_)) => Ok(None),
            Some(url::Host::Ipv4(ip)) => Ok(Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => Ok(Some(IpAddr::V6(ip))),
        }
    }
}

impl std::fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unicode format characters (bidi overrides, zero-width ones): never
/// part of a URL anyone means.
fn is_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}')
}

impl HookClient {
    pub fn new(settings: &HookClientSettings) -> Result<Self, anyhow::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .no_proxy()
            .redirect(redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private_addresses: settings.allow_private_addresses,
            }))
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.total_timeout)
            .user_agent(USER_AGENT)
            .build()
            .context("Failed to build the webhook client")?;
        Ok(Self {
            http,
            max_answer_bytes: settings.max_answer_bytes,
            allow_private_addresses: settings.allow_private_addresses,
            metrics: Metrics::default(),
        })
    }

    /// The same client, timing its calls into `metrics`.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    /// POSTs `body` as JSON to `url` with `headers` (the signature's, see
    /// [`super::signing::headers`]), and says what the answer means: sent
    /// for a 2xx; anything else (a 3xx, a 429, a timeout, an address not
    /// allowed) refused for a reason that may pass, `Retry-After` honoured.
    /// Never `Throttled`: one endpoint's answer must not pause the calls to
    /// every other.
    #[tracing::instrument(name = "Call a webhook endpoint", skip_all)]
    pub async fn post(&self, url: &EndpointUrl, headers: &[(&str, String)], body: Bytes) -> Answer {
        // The resolver never sees an address written in the URL.
        match url.literal_address() {
            Ok(Some(ip)) if !allowed(ip, self.allow_private_addresses) => {
                return passing(NOT_ALLOWED, None);
            }
            Ok(_) => {}
            Err(_) => return passing(Refusal::new("the endpoint's URL has no host"), None),
        }
        let mut request = self
            .http
            .post(url.0.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                return passing(Refusal::new("a header of the call is not valid HTTP"), None);
            };
            request = request.header(name, value);
        }
        // Timed from here: a call the guard refused above went nowhere.
        let started = std::time::Instant::now();
        let mut response = match request.body(body).send().await {
            Ok(response) => response,
            Err(error) => {
                self.metrics
                    .outgoing_webhook_call_duration(started.elapsed());
                return passing(failed(&error), None);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(retry_after);
        self.read_some(&mut response).await;
        drop(response);
        self.metrics
            .outgoing_webhook_call_duration(started.elapsed());
        classify(status, retry_after)
    }

    /// Reads the answer's body up to the limit, and throws it away. What is
    /// left unread, the connection is closed on.
    async fn read_some(&self, response: &mut reqwest::Response) {
        let mut read = 0;
        while read < self.max_answer_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                // The end, or a failure half-way: the status has answered.
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// What an answer's status means.
fn classify(status: StatusCode, retry_after: Option<Duration>) -> Answer {
    let code = Code::Http {
        status: status.as_u16(),
        error_code: None,
    };
    let error = if status.is_success() {
        // Which 2xx, the endpoint's page shows.
        return Answer::Sent {
            message_id: None,
            provider: PROVIDER,
            code: Some(code),
        };
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Refusal::new("the endpoint asked to slow down")
    } else if status.is_redirection() {
        Refusal::new("the endpoint answered with a redirect").because("redirects are not followed")
    } else if status.is_server_error() {
        Refusal::new("the endpoint failed")
    } else {
        Refusal::new("the endpoint refused the call")
    };
    passing(error.with_code(code), retry_after)
}

fn passing(error: Refusal, retry_after: Option<Duration>) -> Answer {
    Answer::Passing { error, retry_after }
}

/// Whether `refusal` is the guard's: the endpoint's address is internal.
pub fn is_address_refusal(refusal: &Refusal) -> bool {
    *refusal == NOT_ALLOWED
}

/// What a call that got no answer means.
fn failed(error: &reqwest::Error) -> Refusal {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<AddressNotAllowed>() {
            return NOT_ALLOWED;
        }
        cause = error.source();
    }
    if error.is_timeout() {
        Refusal::new("the endpoint did not answer in time")
    } else if error.is_connect() {
        Refusal::new("could not connect to the endpoint")
    } else {
        Refusal::new("the call to the endpoint failed")
    }
}

/// `Retry-After` in seconds or as an HTTP date, capped.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.to_utc() - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Resolves names as the system does, and refuses a name if any of its
/// addresses is not allowed: picking the allowed ones would still let a
/// name that mixes them reach inside at a later resolution.
struct GuardedResolver {
    allow_private_addresses: bool,
}

/// A name resolved to an address calls may not go to.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint's host resolves to an address that is not allowed")]
struct AddressNotAllowed;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private_addresses = self.allow_private_addresses;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses
                .iter()
                .any(|address| !allowed(address.ip(), allow_private_addresses))
            {
                return Err(Box::new(AddressNotAllowed) as _);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// Whether calls may go to `ip`.
fn allowed(ip: IpAddr, allow_private_addresses: bool) -> bool {
    allow_private_addresses || is_public(ip)
}

/// Whether `ip` is an address on the internet at large, rather than this
/// host, its network, or no one's.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 among it
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the cloud metadata address among it
        || (a == 100 && (b & 0xc0) == 64) // CGNAT, 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || ip.is_multicast()
        || a >= 240) // reserved, the broadcast address among it
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address
    // they embed.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded_v4(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return is_public_v4(embedded_v4(segments[1], segments[2]));
    }
    !(segments[..6] == [0; 6] // ::, ::1 and the old IPv4-compatible ones
        || ip.is_multicast()
        || ip.is_unique_local() // fc00::/7
        || ip.is_unicast_link_local() // fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0) // site-local, fec0::/10
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
    }

    #[test]
    fn addresses_on_the_internet_are_public() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as internal");
        }
    }

    #[test]
    fn an_endpoint_url_is_http_or_https_with_a_host_and_no_user() {
        for (text, expected) in [
            ("https://hooks.example.com/in", Ok(())),
            ("http://hooks.example.com:8080/in?x=1", Ok(())),
            ("ftp://hooks.example.com/", Err(UrlError::Scheme)),
            ("file:///etc/passwd", Err(UrlError::Scheme)),
            ("hooks.example.com/in", Err(UrlError::NotAUrl)),
            (
                "https://user:pw@hooks.example.com/",
                Err(UrlError::Userinfo),
            ),
            ("https://user@hooks.example.com/", Err(UrlError::Userinfo)),
            (
                "https://hooks.example.com/a\tb",
                Err(UrlError::ControlCharacter),
            ),
            (
                "https://hooks.example.com/\n",
                Err(UrlError::ControlCharacter),
            ),
            (
                "https://hooks.example.com/\u{202E}",
                Err(UrlError::ControlCharacter),
            ),
            (
                "https://hooks.example .com/",
                Err(UrlError::ControlCharacter),
            ),
        ] {
            assert_eq!(
                EndpointUrl::parse(text, false).map(|_| ()),
                expected,
                "{text:?}"
            );
        }
        let braces = format!("https://hooks.example.com/{}", "{".repeat(700));
        assert_eq!(EndpointUrl::parse(&braces, false), Err(UrlError::TooLong));
        for name in [
            "http://localhost/",
            "http://LOCALHOST./hook",
            "http://api.localhost:8080/",
        ] {
            assert_eq!(
                EndpointUrl::parse(name, false),
                Err(UrlError::AddressNotAllowed),
                "{name}"
            );
            assert!(EndpointUrl::parse(name, true).is_ok(), "{name}");
        }
        let long = format!("https://hooks.example.com/{}", "a".repeat(2000));
        assert_eq!(EndpointUrl::parse(&long, false), Err(UrlError::TooLong));
    }

    #[test]
    fn an_internal_address_written_in_the_url_is_refused_unless_allowed() {
        for text in [
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0/",
        ] {
            assert_eq!(
                EndpointUrl::parse(text, false),
                Err(UrlError::AddressNotAllowed),
                "{text}"
            );
            assert!(EndpointUrl::parse(text, true).is_ok(), "{text} allowed");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_and_capped() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn no_answer_but_a_2xx_counts_as_sent_and_none_as_throttled() {
        for status in [200, 201, 204, 299] {
            assert!(
                matches!(
                    classify(StatusCode::from_u16(status).unwrap(), None),
                    Answer::Sent { .. }
                ),
                "{status}"
            );
        }
        for status in [301, 302, 307, 400, 404, 410, 429, 500, 503] {
            let answer = classify(StatusCode::from_u16(status).unwrap(), None);
            let Answer::Passing { error, .. } = answer else {
                panic!("{status} gave {answer:?}");
            };
            assert_eq!(
                error.code(),
                Some(Code::Http {
                    status,
                    error_code: None
                }),
                "{status}"
            );
        }
    }
}
