//! The HTTP contract at `/openapi.json`: that it is served, is OpenAPI 3.1,
//! and describes exactly the routes the server registers, so that the two
//! cannot drift apart. (`scripts/fuzz_api.sh` checks the answers against
//! it on a live service.)

use std::collections::BTreeSet;

use newsletter::routes::endpoints;

use crate::helpers::spawn_app;

async fn document() -> serde_json::Value {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_contract_is_served_as_openapi_3_1() {
    let document = document().await;

    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi is {version}");
    assert_eq!(document["info"]["title"], "newsletter");
}

#[tokio::test]
async fn the_contract_documents_every_registered_route_and_no_other() {
    let document = document().await;

    let registered: BTreeSet<(String, String)> = endpoints()
        .iter()
        .flat_map(|endpoint| {
            endpoint
                .methods
                .iter()
                .map(|method| (method.as_str().to_lowercase(), endpoint.path.to_owned()))
        })
        .collect();
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|key| ["get", "post", "put", "patch", "delete"].contains(&key.as_str()))
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "not in the contract: {undocumented:?}"
    );
    assert!(
        unregistered.is_empty(),
        "documented, not served: {unregistered:?}"
    );
}

#[tokio::test]
async fn every_admin_form_requires_the_csrf_token() {
    let document = document().await;

    for endpoint in endpoints().iter().filter(|e| e.path.starts_with("/admin")) {
        let Some(post) = document["paths"][endpoint.path].get("post") else {
            continue;
        };
        // A form, or an upload (`multipart/form-data`).
        let content = post["requestBody"]["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no request body", endpoint.path));
        let form = &content
            .values()
            .next()
            .unwrap_or_else(|| panic!("{}: no request body", endpoint.path))["schema"];
        let required: Vec<&str> = form["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no required fields", endpoint.path))
            .iter()
            .map(|field| field.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"csrf_token"),
            "{}: csrf_token is not required",
            endpoint.path
        );
    }
}

#[tokio::test]
async fn a_path_that_names_no_route_gets_a_plain_text_404() {
    let app = spawn_app().await;

    let response = app.get("/no/such/page").await;

    assert_eq!(response.status().as_u16(), 404);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn the_fuzzers_broken_route_is_not_served_unless_asked_for() {
    let app = spawn_app().await;

    let response = app
        .api_client
        .get(format!("{}/fuzz-self-test/broken?n=-1", app.address))
        .send()
        .await
        .unwrap();
    let document: serde_json::Value = app
        .api_client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 404);
    assert!(document["paths"].get("/fuzz-self-test/broken").is_none());
}
