//! Production refuses to start with a placeholder: a secret written in the
//! repository, one too short, an address readers cannot use, a cookie that
//! may travel in the clear, the local inbox as an email provider. Checked on the real binary, as a deploy would
//! start it: the refusal is the process's exit, and its message names the
//! setting and its variable.

use std::process::{Command, Output};

use newsletter::configuration::get_configuration;
use secrecy::ExposeSecret;

use crate::helpers::{TestDatabase, production_variables};

fn migrate(variables: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_newsletter"));
    // Only the variables given, and where this machine's Postgres is.
    for (name, _) in std::env::vars() {
        let postgres = name == "APP_DATABASE__HOST" || name == "APP_DATABASE__PORT";
        if name.starts_with("APP_") && !postgres {
            command.env_remove(name);
        }
    }
    command.arg("migrate");
    for (name, value) in variables {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

#[tokio::test]
async fn production_refuses_to_start_with_each_placeholder_and_names_its_setting() {
    let settings = get_configuration().unwrap();
    let database = TestDatabase::create(&settings.database).await;
    let good = production_variables(&database.settings.database_name);

    // Without a placeholder, production starts (and migrates).
    let run = migrate(&good);
    assert!(
        run.status.success(),
        "production refused real-looking settings: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    // The TOTP key of configuration/local.yaml.
    let local_totp_key = get_configuration().unwrap().admin.totp_key;
    let local_totp_key = local_totp_key.expose_secret().to_owned();
    let cases: &[(&str, &str, &str)] = &[
        // The signing key of configuration/local.yaml.
        (
            "APP_APPLICATION__HMAC_SECRET",
            "local-development-secret-not-for-production-use",
            "written in the repository",
        ),
        (
            "APP_APPLICATION__HMAC_SECRET",
            "0123456789abcdef",
            "shorter than 32",
        ),
        (
            "APP_ADMIN__TOTP_KEY",
            &local_totp_key,
            "written in the repository",
        ),
        // The database password of configuration/base.yaml.
        (
            "APP_DATABASE__PASSWORD",
            "password",
            "written in the repository",
        ),
        (
            "APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN",
            "test-token",
            "written in the repository",
        ),
        (
            "APP_WEBHOOKS__POSTMARK_PASSWORD",
            "fifteen-chars15",
            "shorter than 16",
        ),
        (
            "APP_WEBHOOKS__POSTMARK_PASSWORD",
            "webhook password for tests",
            "written in the repository",
        ),
        (
            "APP_REDIS_URI",
            "redis://:password@127.0.0.1:6379",
            "written in the repository",
        ),
        // configuration/production.yaml's own value.
        (
            "APP_APPLICATION__BASE_URL",
            "http://localhost:8000",
            "not https",
        ),
        (
            "APP_APPLICATION__BASE_URL",
            "https://localhost",
            "this machine",
        ),
        (
            "APP_APPLICATION__BASE_URL",
            "https://127.0.0.1:8443",
            "this machine",
        ),
        ("APP_ADMIN__SECURE_COOKIE", "false", "plain HTTP"),
        // configuration/local.yaml's provider, which sends nothing.
        (
            "APP_EMAIL_CLIENT__PROVIDERS",
            "inbox",
            "for local runs only",
        ),
        (
            "APP_EMAIL_CLIENT__BROADCAST_PROVIDERS",
            "postmark,inbox",
            "for local runs only",
        ),
    ];
    for (variable, placeholder, reason) in cases {
        let variables: Vec<(&str, String)> = good
            .iter()
            .filter(|(name, _)| name != variable)
            .cloned()
            .chain([(*variable, (*placeholder).to_owned())])
            .collect();

        let run = migrate(&variables);

        let stderr = String::from_utf8_lossy(&run.stderr);
        let case = format!("{variable}={placeholder}");
        assert!(!run.status.success(), "{case}: production started");
        assert!(
            stderr.contains(variable),
            "{case}: the variable is not named: {stderr}"
        );
        assert!(stderr.contains(reason), "{case}: not said why: {stderr}");
        // (Short placeholders are words the message uses anyway.)
        if placeholder.len() >= 12 && !variable.ends_with("BASE_URL") {
            assert!(
                !stderr.contains(placeholder),
                "{case}: a secret was printed: {stderr}"
            );
        }
    }

    // A variable left out falls back to the files, whose values are
    // placeholders: each is named.
    let bare: Vec<(&str, String)> = good
        .iter()
        .filter(|(name, _)| {
            matches!(
                *name,
                "APP_ENVIRONMENT"
                    | "APP_DATABASE__REQUIRE_SSL"
                    | "APP_DATABASE__DATABASE_NAME"
                    | "APP_ADMIN__TOTP_KEY"
            )
        })
        .cloned()
        .chain([("APP_APPLICATION__HMAC_SECRET", "x".repeat(40))])
        .collect();
    let stderr = String::from_utf8_lossy(&migrate(&bare).stderr).into_owned();
    for variable in ["APP_DATABASE__PASSWORD", "APP_APPLICATION__BASE_URL"] {
        assert!(
            stderr.contains(variable),
            "{variable} is not named: {stderr}"
        );
    }
}
