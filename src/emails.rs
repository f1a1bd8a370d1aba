//! The emails the service sends, subject and both bodies. HTML bodies escape
//! what they interpolate.

use crate::domain::SubscriptionToken;

pub struct EmailContent {
    pub subject: &'static str,
    pub html_body: String,
    pub text_body: String,
}

/// Asks a new subscriber to confirm. Both bodies carry the same link.
pub fn confirmation(base_url: &str, token: &SubscriptionToken) -> EmailContent {
    let link = confirmation_link(base_url, token);
    EmailContent {
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

/// Sent instead of a confirmation when the address is already on the list,
/// so that the form answers the same whether or not an address is subscribed.
pub fn already_subscribed(base_url: &str) -> EmailContent {
    let home = base_url.trim_end_matches('/');
    EmailContent {
        subject: "You are already subscribed",
        html_body: format!(
            "<p>Someone, probably you, asked to subscribe this address to our newsletter at \
             {}.</p><p>It is already subscribed: there is nothing to do.</p>",
            escape_html(home)
        ),
        text_body: format!(
            "Someone, probably you, asked to subscribe this address to our newsletter at {home}.\n\n\
             It is already subscribed: there is nothing to do.\n"
        ),
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

/// Minimal escaping for a value placed in HTML text or a quoted attribute.
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
    fn both_confirmation_bodies_contain_the_confirmation_link() {
        let token = SubscriptionToken::generate();
        let email = confirmation("https://news.example.com", &token);
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
    fn markup_in_the_base_url_is_escaped_in_html_bodies() {
        let token = SubscriptionToken::generate();
        let base = "https://x.example.com/\"><script>";
        for email in [confirmation(base, &token), already_subscribed(base)] {
            assert!(!email.html_body.contains("<script>"), "{}", email.html_body);
        }
    }

    #[test]
    fn the_already_subscribed_notice_has_no_confirmation_link() {
        let email = already_subscribed("https://news.example.com");
        assert!(!email.text_body.contains("subscription_token"));
        assert!(!email.html_body.contains("subscription_token"));
    }
}
