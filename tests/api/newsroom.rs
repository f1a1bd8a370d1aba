//! Signing in to the newsroom and using it as a browser does, for every
//! test of the admin pages.

use newsletter::admin::accounts;
use newsletter::admin::password::{self, NewPassword};
use newsletter::admin::username::AdminUsername;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{BROWSER_ACCEPT, TestApp};

/// The password of every admin these tests create.
pub const PASSWORD: &str = "correct horse battery staple";

/// An admin stored the way `newsletter admin create` stores one.
pub async fn create_admin(app: &TestApp, username: &str, password: &str) -> Uuid {
    create_admin_in(&app.db_pool, username, password).await
}

/// [`create_admin`], in the database behind `pool`: for a server the test
/// runs as a process of its own rather than through `spawn_app`.
pub async fn create_admin_in(pool: &PgPool, username: &str, password: &str) -> Uuid {
    let username = AdminUsername::parse(username).unwrap();
    let password = NewPassword::parse(SecretString::from(password)).unwrap();
    let hash = password::hash(&password).await.unwrap();
    let mut connection = pool.acquire().await.unwrap();
    accounts::create(&mut connection, &username, None, &hash)
        .await
        .unwrap()
}

/// A browser: keeps cookies, follows no redirect, asks for pages.
pub struct Browser {
    pub client: reqwest::Client,
    pub address: String,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self::of(&app.address)
    }

    /// A browser of the newsroom served at `address`, e.g.
    /// `http://127.0.0.1:40123`.
    pub fn of(address: &str) -> Self {
        Self::with(address, reqwest::Client::builder())
    }

    /// A browser whose requests the app believes come from `ip`: each says
    /// so in `X-Forwarded-For`, which an app that trusts 127.0.0.1 as its
    /// proxy believes.
    pub fn at(app: &TestApp, ip: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("X-Forwarded-For", ip.parse().unwrap());
        Self::with(
            &app.address,
            reqwest::Client::builder().default_headers(headers),
        )
    }

    fn with(address: &str, builder: reqwest::ClientBuilder) -> Self {
        Self {
            client: builder
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            address: address.to_owned(),
        }
    }

    /// A browser that keeps its cookies in `cookies`, for a test that
    /// looks at what the server set.
    pub fn with_cookie_store(
        app: &TestApp,
        cookies: std::sync::Arc<impl reqwest::cookie::CookieStore + 'static>,
    ) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_provider(cookies)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            address: app.address.clone(),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .header("Accept", BROWSER_ACCEPT)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("Accept", BROWSER_ACCEPT)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Signs in as a person does: opens the form (which sets its
    /// pre-session cookie), then sends it with the form's CSRF token.
    pub async fn log_in(&self, username: &str, password: &str) -> reqwest::Response {
        let token = self.sign_in_form_token().await;
        self.post(
            "/login",
            &[
                ("username", username),
                ("password", password),
                ("csrf_token", &token),
            ],
        )
        .await
    }

    /// Opens the sign-in form and returns its CSRF token.
    pub async fn sign_in_form_token(&self) -> String {
        let page = self.get("/login").await.text().await.unwrap();
        hidden_csrf_token(&page)
    }

    /// Signs in and checks it worked.
    pub async fn signed_in(app: &TestApp, username: &str, password: &str) -> Self {
        Self::signed_in_at(&app.address, username, password).await
    }

    /// [`Browser::signed_in`], to the newsroom served at `address`.
    pub async fn signed_in_at(address: &str, username: &str, password: &str) -> Self {
        let browser = Self::of(address);
        let response = browser.log_in(username, password).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&response), "/admin/dashboard");
        browser
    }

    /// The CSRF token in the forms of an admin page.
    pub async fn csrf_token(&self) -> String {
        let page = self.get("/admin/dashboard").await.text().await.unwrap();
        hidden_csrf_token(&page)
    }

    /// `POST` to an admin form with the CSRF token of the browser's session.
    pub async fn submit(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf_token().await;
        let mut form = fields.to_vec();
        form.push(("csrf_token", &token));
        self.post(path, &form).await
    }

    /// Changes the signed-in admin's password from `current` to `new` (typed
    /// twice alike).
    pub async fn change_password(&self, current: &str, new: &str) -> reqwest::Response {
        self.submit(
            "/admin/password",
            &[
                ("current_password", current),
                ("new_password", new),
                ("new_password_check", new),
            ],
        )
        .await
    }

    /// Erases subscriber `id`, confirmed by the address as `typed`.
    pub async fn erase_subscriber(&self, id: uuid::Uuid, typed: &str) -> reqwest::Response {
        self.submit(
            &format!("/admin/subscribers/{id}/erase"),
            &[("confirm_address", typed)],
        )
        .await
    }

    pub async fn is_signed_in(&self) -> bool {
        let status = self.get("/admin/dashboard").await.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::SEE_OTHER,
            "unexpected {status}"
        );
        status == StatusCode::OK
    }
}

/// For a client that keeps no cookies: opens the sign-in form and returns
/// the pre-session cookie it set (`name=value`, for a `Cookie` header) and
/// the form's CSRF token.
pub async fn sign_in_form(client: &reqwest::Client, app: &TestApp) -> (String, String) {
    let response = client
        .get(format!("{}/login", app.address))
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("sign-in=") || c.starts_with("__Host-sign-in="))
        .expect("the sign-in form's cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = hidden_csrf_token(&response.text().await.unwrap());
    (cookie, token)
}

pub fn hidden_csrf_token(page: &str) -> String {
    let marker = r#"name="csrf_token" value=""#;
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field in {page}"))
        + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

pub fn location(response: &reqwest::Response) -> &str {
    response.headers()[LOCATION].to_str().unwrap()
}

pub async fn audit_actions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}
