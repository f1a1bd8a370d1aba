//! Who is asking the API: the check in front of every `/api/v1` route,
//! and the [`ApiToken`] it leaves for handlers.
//!
//! Only `Authorization: Bearer <token>` opens the API. A session cookie is
//! not looked at, so a signed-in browser, and any page that can make it
//! send a request, cannot use the API on its admin's behalf; and the
//! `/admin` guard looks at cookies only, so a token opens no page.
//!
//! In order: the client's address is charged its API budget (429), so
//! that made-up or revoked tokens, each a database read, come at a bounded
//! pace from any one address; the header is read, the token is found by its
//! hash, it must be neither revoked nor expired (401 otherwise, with
//! `WWW-Authenticate: Bearer`), then the token's own budget is checked
//! (429). Only a live token gets a key of its own, so made-up tokens cannot
//! fill Redis with keys.
//! A use is written to `last_used_at` at most once a minute.

use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use chrono::Utc;

use crate::admin::audit::Actor;
use crate::api::problem::Problem;
use crate::api::tokens::{self, Scope, Token};
use crate::db::Db;
use crate::rate_limit::{Decision, RateLimiter};
use crate::web::answers::no_store;
use crate::web::client::client_ip;
use crate::web::error::DatabaseStep;

/// The token a request under `/api/v1` was made with. Handlers take it as
/// an argument and check the scope they need; only the guard creates it.
#[derive(Clone)]
pub struct ApiToken(Rc<Token>);

impl ApiToken {
    /// Refuses with 403 unless the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.0.scopes.allows(scope) {
            Ok(())
        } else {
            Err(Problem::MissingScope(scope))
        }
    }

    pub fn token(&self) -> &Token {
        &self.0
    }

    /// The audit log's actor for a change made with this token: no admin,
    /// the token by name, and the client's address.
    pub fn actor(&self, request: &HttpRequest) -> Actor {
        let limiter = request
            .app_data::<web::Data<RateLimiter>>()
            .expect("the rate limiter is registered as app data");
        Actor {
            admin_id: None,
            username: Some(format!("token {}", self.0.name)),
            client_ip: client_ip(request, limiter),
        }
    }
}

impl FromRequest for ApiToken {
    type Error = Problem;
    type Future = std::future::Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Only reachable without the guard through a routing mistake, which
        // must fail closed.
        std::future::ready(request.extensions().get::<ApiToken>().cloned().ok_or(
            Problem::Unauthorized {
                detail: "Send an API token: `Authorization: Bearer nl_...`.".into(),
                presented: false,
            },
        ))
    }
}

/// Lets through a request with a live token within its budget; anyone else
/// is answered with a problem.
pub async fn require_token(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let token = match authenticate(request.request()).await {
        Ok(token) => token,
        // An answer rather than an error, so that it gets the headers every
        // answer gets; the error stays on it for the log.
        Err(problem) => {
            let answer = HttpResponse::from_error(actix_web::Error::from(problem));
            return Ok(request.into_response(answer).map_into_right_body());
        }
    };
    request.extensions_mut().insert(token);
    let mut response = next.call(request).await?;
    no_store(response.headers_mut());
    Ok(response.map_into_left_body())
}

async fn authenticate(request: &HttpRequest) -> Result<ApiToken, Problem> {
    let refused = |detail: &str| Problem::Unauthorized {
        detail: detail.to_owned(),
        presented: true,
    };
    let Some(header) = request.headers().get(header::AUTHORIZATION) else {
        return Err(Problem::Unauthorized {
            detail: "Send an API token: `Authorization: Bearer nl_...`. A session cookie does \
                     not open the API."
                .into(),
            presented: false,
        });
    };
    let presented = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .ok_or_else(|| refused("The Authorization header is not `Bearer` and a token."))?;
    let limiter = request
        .app_data::<web::Data<RateLimiter>>()
        .expect("the rate limiter is registered as app data");
    if let Decision::Limited { retry_after } =
        limiter.check_api_client(client_ip(request, limiter)).await
    {
        return Err(Problem::TooManyRequests(retry_after));
    }
    let hash = tokens::presented_hash(presented).ok_or_else(|| refused("No such token."))?;
    let db = request
        .app_data::<web::Data<Db>>()
        .expect("the database is registered as app data");
    let token = db
        .transaction(async |tx| tokens::find_by_hash(tx, &hash).await)
        .await
        .step("find the API token")?
        .ok_or_else(|| refused("No such token."))?;
    let now = Utc::now();
    if token.revoked_at.is_some() {
        return Err(refused("This token was revoked."));
    }
    if !token.is_live(now) {
        return Err(refused("This token has expired."));
    }
    if let Decision::Limited { retry_after } = limiter.check_api_token(token.id).await {
        return Err(Problem::TooManyRequests(retry_after));
    }
    if tokens::needs_touch(&token, now) {
        // A convenience for the admin: a failure to write it is logged and
        // does not refuse the request it was about.
        let touched = db
            .transaction(async |tx| tokens::touch(tx, token.id).await)
            .await;
        if let Err(e) = touched {
            tracing::warn!(error = %e, token = %token.name, "Could not record an API token's use");
        }
    }
    Ok(ApiToken(Rc::new(token)))
}
