//! A deliberately broken route, for `scripts/fuzz_api.sh --self-test`,
//! which requires the fuzzer to fail on it: proof that a route answering
//! 5xx to some input does not pass unnoticed. It exists only in debug
//! builds (a release never compiles it), and there only when the process
//! starts with `NEWSLETTER_FUZZ_SELF_TEST_ROUTE=1`: the fuzzer's self-test
//! runs the very binary the rest of the test command built.

use std::sync::LazyLock;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(paths(broken))]
pub struct SelfTestDoc;

/// Whether this process serves the broken route.
pub fn enabled() -> bool {
    static ENABLED: LazyLock<bool> = LazyLock::new(|| {
        std::env::var_os("NEWSLETTER_FUZZ_SELF_TEST_ROUTE").is_some_and(|v| v == "1")
    });
    *ENABLED
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Input {
    n: i64,
}

/// Documented as always answering 200; answers 500 for a negative `n`.
#[utoipa::path(get, path = "/fuzz-self-test/broken", tag = "self-test",
    params(Input),
    responses(
        (status = 200, description = "The number, echoed.", body = String, content_type = "text/plain"),
        (status = 400, description = "Not a number.", body = String, content_type = "text/plain"),
    ))]
pub async fn broken(input: web::Query<Input>) -> HttpResponse {
    if input.n < 0 {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(input.n.to_string())
}
