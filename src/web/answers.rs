//! The shapes of answer several newsroom pages give: a redirect after a
//! form, cookies added to an answer, `Retry-After` on a limited attempt with
//! the words that go with it, and `Cache-Control: no-store` on every admin
//! page. Sign-in, the account pages, the guard and the subscriber and issue
//! pages all answer this way, so the helpers live here rather than in any
//! one of them.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::cookie::Cookie;
use actix_web::http::header::{self, CacheControl, CacheDirective, HeaderValue};

use crate::web::error::{ApiError, retry_after_seconds, try_again_in};

/// Admin pages hold subscriber data: no cache, shared or private, keeps a
/// copy that outlives the session.
pub fn no_store(headers: &mut header::HeaderMap) {
    let value = CacheControl(vec![CacheDirective::NoStore]);
    headers.insert(
        header::CACHE_CONTROL,
        header::TryIntoHeaderValue::try_into_value(value).expect("a valid header"),
    );
}

/// A `303 See Other` to `location`, never cached: the answer to a form.
pub fn see_other(location: impl Into<String>) -> HttpResponse {
    let mut answer = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.into()))
        .finish();
    no_store(answer.headers_mut());
    answer
}

/// `answer` with `cookies` set on it.
pub fn with_cookies<const N: usize>(
    mut answer: HttpResponse,
    cookies: [Cookie<'static>; N],
) -> Result<HttpResponse, ApiError> {
    for cookie in cookies {
        answer
            .add_cookie(&cookie)
            .map_err(|e| ApiError::Unexpected(e.into()))?;
    }
    Ok(answer)
}

/// A limited attempt's answer, with when to try again.
pub fn with_retry_after(mut answer: HttpResponse, wait: Duration) -> HttpResponse {
    answer.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_seconds(wait)),
    );
    answer
}

/// What a limited code or password check answers, with when to come back
/// (also in `Retry-After`).
pub fn too_many_attempts(wait: Duration) -> String {
    format!("Too many attempts. {}", try_again_in(wait))
}
