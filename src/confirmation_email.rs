//! The email that asks a new subscriber to confirm. Both bodies carry the same
//! link; the HTML one escapes what it interpolates.

use crate::domain::SubscriptionToken;

pub struct ConfirmationEmail {
    pub subject: &'static str,
    pub html_body: String,
    pub text_body: String,
}

impl ConfirmationEmail {
    pub fn new(base_url: &str, token: &SubscriptionToken) -> Self {
        let link = confirmation_link(base_url, token);
        Self {
            subject: "Please confirm your subscription",
            html_body: format!(
                "<p>Welcome to our newsletter!</p>\
                 <p>Click <a href=\"{}\">this link</a> to confirm your subscription.</p>\
                 <p>If you did not ask to subscribe, ignore this email: nothing more will be sent.</p>",
                escape_html(&link)
            ),
            text_body: format!(
                "Welcome to our newsletter!\n\n\
                 Visit {link} to confirm your subscription.\n\n\
                 If you did not ask to subscribe, ignore this email: nothing more will be sent.\n"
            ),
        }
    }
}

/// `{base_url}/subscriptions/confirm?subscription_token={token}`. The token is
/// alphanumeric, so it needs no percent-encoding.
pub fn confirmation_link(base_url: &str, token: &SubscriptionToken) -> String {
    format!(
        "{}/subscriptions/confirm?subscription_token={}",
        base_url.trim_end_matches('/'),
        token.as_ref()
    )
}

/// Minimal escaping for a value placed inside an HTML attribute.
fn escape_html(raw: &str) -> String {
    let mut escaped = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bodies_contain_the_confirmation_link() {
        let token = SubscriptionToken::generate();
        let email = ConfirmationEmail::new("https://news.example.com", &token);
        let link = format!(
            "https://news.example.com/subscriptions/confirm?subscription_token={}",
            token.as_ref()
        );
        assert!(email.html_body.contains(&link), "{}", email.html_body);
        assert!(email.text_body.contains(&link), "{}", email.text_body);
    }

    #[test]
    fn a_trailing_slash_in_the_base_url_is_not_doubled() {
        let token = SubscriptionToken::generate();
        let link = confirmation_link("https://news.example.com/", &token);
        assert!(link.starts_with("https://news.example.com/subscriptions/confirm?"));
    }

    #[test]
    fn markup_in_the_base_url_is_escaped_in_the_html_body() {
        let token = SubscriptionToken::generate();
        let email = ConfirmationEmail::new("https://x.example.com/\"><script>", &token);
        assert!(!email.html_body.contains("<script>"), "{}", email.html_body);
    }
}
