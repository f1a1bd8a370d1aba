//! A deliberately broken route, compiled only with the `fuzz-self-test`
//! feature, which no release build turns on. `scripts/fuzz_api.sh
//! --self-test` builds the service with it and requires the fuzzer to
//! fail: proof that a route answering 5xx to some input does not pass
//! unnoticed.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(paths(broken))]
pub struct SelfTestDoc;

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
