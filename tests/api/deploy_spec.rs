//! `spec.yaml` deploys the service to DigitalOcean App Platform, and nothing
//! but a failed deploy would tell that it no longer matches the service: a
//! renamed setting, a moved health check, a job that stopped migrating. These
//! tests read the spec and hold it to what the service expects. The
//! platform's own rules they pin (sizes that allow several instances, ingress
//! rules, the health check timeout) are cited in the spec's comments.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use config::FileFormat;
use newsletter::configuration::{Environment, Settings, load};
use newsletter::readiness::{FIRST_REPORT_PATIENCE, REFRESH_INTERVAL};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::spawn_app;

/// The secrets `scripts/do_spec.sh` adds, with values of the right shape.
const SECRETS: &[(&str, &str)] = &[
    ("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", "a-postmark-token"),
    (
        "APP_APPLICATION__HMAC_SECRET",
        "0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    ("APP_WEBHOOKS__POSTMARK_USERNAME", "postmark"),
    ("APP_WEBHOOKS__POSTMARK_PASSWORD", "a-long-random-password"),
    (
        "APP_ADMIN__TOTP_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    ),
];

fn yaml(path: &Path) -> Value {
    config::Config::builder()
        .add_source(config::File::new(path.to_str().unwrap(), FileFormat::Yaml))
        .build()
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        .try_deserialize()
        .unwrap()
}

fn committed_spec() -> Value {
    yaml(Path::new("spec.yaml"))
}

fn service(spec: &Value) -> &Value {
    spec["services"]
        .as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == "newsletter"))
        .expect("spec.yaml has no service named newsletter")
}

fn migrate_job(spec: &Value) -> &Value {
    spec["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["name"] == "migrate"))
        .expect("spec.yaml has no job named migrate")
}

/// `(key, value, type)` of each of a component's variables.
fn envs(component: &Value) -> Vec<(String, String, String)> {
    component["envs"]
        .as_array()
        .expect("the component has no envs")
        .iter()
        .map(|env| {
            let text = |field: &str| match &env[field] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (text("key"), text("value"), text("type"))
        })
        .collect()
}

/// A value of the shape the platform would put in place of each binding.
fn resolved(value: &str) -> String {
    match value {
        "${APP_URL}" => "https://newsletter.example.com".into(),
        "${newsletter-db.HOSTNAME}" => "db.example.com".into(),
        "${newsletter-db.PORT}" => "25060".into(),
        "${newsletter-db.USERNAME}" | "${newsletter-db.DATABASE}" => "newsletter".into(),
        "${newsletter-db.PASSWORD}" => "a-database-password".into(),
        "${newsletter-cache.DATABASE_URL}" => {
            "rediss://default:password@cache.example.com:25061".into()
        }
        other => {
            assert!(
                !other.contains("${"),
                "no test value for the binding {other}"
            );
            other.into()
        }
    }
}

/// The settings a production instance builds from these variables.
fn production_settings(envs: &[(String, String, String)]) -> Settings {
    let variables: HashMap<String, String> = envs
        .iter()
        .map(|(key, value, _)| (key.clone(), resolved(value)))
        .collect();
    load(
        Path::new("configuration"),
        Environment::Production,
        Some(variables),
    )
    .expect("the spec's variables do not make production settings")
}

/// Every `APP_<SECTION>__<KEY>` name the configuration files define.
fn configuration_variables() -> BTreeSet<String> {
    fn leaves(prefix: &str, value: &Value, names: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let name = if prefix.is_empty() {
                        key.to_uppercase()
                    } else {
                        format!("{prefix}__{}", key.to_uppercase())
                    };
                    leaves(&name, value, names);
                }
            }
            _ => {
                names.insert(format!("APP_{prefix}"));
            }
        }
    }
    let mut names = BTreeSet::new();
    for file in ["base.yaml", "production.yaml"] {
        leaves(
            "",
            &yaml(&Path::new("configuration").join(file)),
            &mut names,
        );
    }
    names
}

#[test]
fn every_variable_in_the_spec_is_a_configuration_setting() {
    let spec = committed_spec();
    let known = configuration_variables();

    for (key, _, _) in envs(service(&spec)) {
        assert!(
            key == "APP_ENVIRONMENT" || known.contains(&key),
            "{key} in spec.yaml is not a setting of configuration/base.yaml or \
             production.yaml: the service would ignore it"
        );
    }
}

#[test]
fn the_spec_and_its_secrets_make_production_settings_on_the_spec_port() {
    let spec = committed_spec();
    let mut variables = envs(service(&spec));
    variables.extend(
        SECRETS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string(), "SECRET".into())),
    );

    let settings = production_settings(&variables);

    assert_eq!(
        Some(u64::from(settings.application.port)),
        service(&spec)["http_port"].as_u64(),
        "http_port must be the port the service listens on"
    );
    assert_eq!(settings.application.host, "0.0.0.0");
    assert!(settings.database.require_ssl);
    assert_eq!(settings.database.port, 25060);
    assert_eq!(
        settings.rate_limit.forwarded_header, "do-connecting-ip",
        "App Platform sends the client's address in do-connecting-ip"
    );
    assert!(
        !settings.rate_limit.trusted_proxies.is_empty(),
        "without trusted proxies the platform's header is never believed"
    );
    // Each secret name reaches its setting.
    assert_eq!(
        settings
            .email_client
            .authorization_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("a-postmark-token".into())
    );
    assert_eq!(
        settings.application.hmac_secret.expose_secret(),
        SECRETS[1].1
    );
    assert_eq!(
        settings.webhooks.postmark_username.as_deref(),
        Some("postmark")
    );
    assert!(settings.webhooks.postmark_password.is_some());
    assert_eq!(settings.admin.totp_key.expose_secret(), SECRETS[4].1);
    newsletter::admin::totp_keys::TotpKeys::from_settings(&settings.admin)
        .expect("the secrets file's TOTP key is a key the service accepts");
}

#[tokio::test]
async fn the_spec_health_checks_ask_paths_that_answer_200() {
    let spec = committed_spec();
    let service = service(&spec);
    let app = spawn_app().await;

    for check in ["health_check", "liveness_health_check"] {
        let path = service[check]["http_path"]
            .as_str()
            .unwrap_or_else(|| panic!("{check} has no http_path"));
        let response = app.get(path).await;
        assert_eq!(response.status().as_u16(), 200, "{check}: GET {path}");
    }
    assert_eq!(service["health_check"]["http_path"], "/ready");
    assert_eq!(
        service["liveness_health_check"]["http_path"],
        "/health_check"
    );
}

#[test]
fn the_readiness_probe_outwaits_a_new_instances_first_check_and_polls_no_faster_than_checks_run() {
    let spec = committed_spec();
    let check = &service(&spec)["health_check"];
    // The platform's defaults are 1 s and 10 s.
    let timeout = check["timeout_seconds"].as_f64().unwrap_or(1.0);
    let period = check["period_seconds"].as_f64().unwrap_or(10.0);

    assert!(
        timeout > FIRST_REPORT_PATIENCE.as_secs_f64(),
        "the probe gives up after {timeout} s, no later than /ready waits for a new \
         instance's first check ({FIRST_REPORT_PATIENCE:?})"
    );
    assert!(
        period >= REFRESH_INTERVAL.as_secs_f64(),
        "the probe polls every {period} s, faster than the checks run ({REFRESH_INTERVAL:?}): \
         it would read the same report twice"
    );
}

#[test]
fn the_migrate_job_runs_before_every_deploy_with_the_service_settings() {
    let spec = committed_spec();
    let job = migrate_job(&spec);

    assert_eq!(job["kind"], "PRE_DEPLOY");
    let command = job["run_command"].as_str().unwrap_or_default();
    assert!(
        command.ends_with("newsletter migrate"),
        "the job runs {command:?}"
    );
    assert_eq!(
        envs(job),
        envs(service(&spec)),
        "the job must reach the database the service uses"
    );
}

#[test]
fn the_service_runs_two_instances_of_a_size_that_allows_several() {
    let spec = committed_spec();
    let service = service(&spec);
    let size = service["instance_size_slug"].as_str().unwrap_or_default();

    assert!(service["instance_count"].as_u64().unwrap_or(1) >= 2);
    // Current sizes that allow more than one instance (App Platform marks
    // apps-s-1vcpu-0.5gb and apps-s-1vcpu-1gb-fixed single_instance_only,
    // and the legacy basic-* and professional-* sizes map onto current ones).
    let several = [
        "apps-s-1vcpu-1gb",
        "apps-s-1vcpu-2gb",
        "apps-s-2vcpu-4gb",
        "apps-d-1vcpu-0.5gb",
        "apps-d-1vcpu-1gb",
        "apps-d-1vcpu-2gb",
        "apps-d-1vcpu-4gb",
        "apps-d-2vcpu-4gb",
        "apps-d-2vcpu-8gb",
        "apps-d-4vcpu-8gb",
        "apps-d-4vcpu-16gb",
        "apps-d-8vcpu-32gb",
    ];
    assert!(
        several.contains(&size),
        "{size} is not a current size that allows several instances"
    );
}

#[test]
fn traffic_reaches_the_service_through_ingress_rules() {
    let spec = committed_spec();

    assert!(
        service(&spec).get("routes").is_none(),
        "routes is deprecated in favour of ingress rules"
    );
    let rules = spec["ingress"]["rules"]
        .as_array()
        .expect("spec.yaml has no ingress rules");
    assert!(
        rules
            .iter()
            .any(|r| r["component"]["name"] == "newsletter" && r["match"]["path"]["prefix"] == "/"),
        "no ingress rule sends / to the service: {rules:?}"
    );
}

#[test]
fn the_metrics_port_is_internal_to_the_app() {
    let spec = committed_spec();
    let service = service(&spec);
    let mut envs = envs(service);
    envs.extend(
        SECRETS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string(), "SECRET".into())),
    );
    let metrics_port = u64::from(production_settings(&envs).metrics.port);
    let internal = service["internal_ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    assert!(
        internal.iter().any(|p| p.as_u64() == Some(metrics_port)),
        "internal_ports {internal:?} lack the metrics port {metrics_port}"
    );
    assert_ne!(service["http_port"].as_u64(), Some(metrics_port));
}

#[test]
fn no_secret_value_is_committed() {
    let spec = committed_spec();
    let secret_names = [
        "TOKEN", "SECRET", "PASSWORD", "USERNAME", "KEY", "URI", "URL",
    ];

    for component in [service(&spec), migrate_job(&spec)] {
        for (key, value, kind) in envs(component) {
            let is_reference = value.starts_with("${") && value.ends_with('}');
            assert!(
                kind != "SECRET" || is_reference,
                "{key} is a SECRET with a committed value: every `doctl apps update` \
                 would overwrite the real one with it"
            );
            let named_like_a_secret = key
                .rsplit("__")
                .next()
                .is_some_and(|last| secret_names.iter().any(|s| last.contains(s)));
            assert!(
                !named_like_a_secret || is_reference || key == "APP_APPLICATION__BASE_URL",
                "{key} carries a literal value in spec.yaml: {value:?}"
            );
            assert!(
                !value.to_lowercase().contains("replace-with"),
                "{key} has a placeholder value"
            );
        }
    }
    for (name, _) in SECRETS {
        assert!(
            !envs(service(&spec)).iter().any(|(key, _, _)| key == name),
            "{name} belongs in the secrets file, not spec.yaml"
        );
    }
}

#[test]
fn the_deploy_script_adds_the_secrets_to_the_service_and_the_job() {
    let directory = tempfile_directory();
    let secrets_file = directory.join("do-secrets.env");
    let lines: String = SECRETS.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&secrets_file, lines).unwrap();

    let output = std::process::Command::new("scripts/do_spec.sh")
        .env("NEWSLETTER_SECRETS", &secrets_file)
        .output()
        .unwrap();
    let rendered = directory.join("spec.yaml");
    std::fs::write(&rendered, &output.stdout).unwrap();
    let spec = output.status.success().then(|| yaml(&rendered));
    std::fs::remove_dir_all(&directory).unwrap();

    let spec = spec.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    for component in [service(&spec), migrate_job(&spec)] {
        let envs = envs(component);
        for (name, value) in SECRETS {
            assert!(
                envs.iter()
                    .any(|(k, v, t)| k == name && v == value && t == "SECRET"),
                "{name} is not a SECRET of {} in the rendered spec",
                component["name"]
            );
        }
    }
    // Everything else is the committed spec, untouched.
    let committed = committed_spec();
    let without_secrets: Vec<_> = envs(service(&spec))
        .into_iter()
        .filter(|(k, _, _)| !SECRETS.iter().any(|(name, _)| name == k))
        .collect();
    assert_eq!(without_secrets, envs(service(&committed)));
    assert_eq!(spec["ingress"], committed["ingress"]);
}

#[test]
fn the_deploy_script_also_adds_the_previous_totp_keys_during_a_rotation() {
    let directory = tempfile_directory();
    let secrets_file = directory.join("do-secrets.env");
    let mut lines: String = SECRETS.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    lines.push_str("APP_ADMIN__PREVIOUS_TOTP_KEYS=an-older-key\n");
    std::fs::write(&secrets_file, lines).unwrap();

    let output = std::process::Command::new("scripts/do_spec.sh")
        .env("NEWSLETTER_SECRETS", &secrets_file)
        .output()
        .unwrap();
    let rendered = directory.join("spec.yaml");
    std::fs::write(&rendered, &output.stdout).unwrap();
    let spec = output.status.success().then(|| yaml(&rendered));
    std::fs::remove_dir_all(&directory).unwrap();

    let spec = spec.unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert!(
        envs(service(&spec)).iter().any(|(k, v, t)| {
            k == "APP_ADMIN__PREVIOUS_TOTP_KEYS" && v == "an-older-key" && t == "SECRET"
        }),
        "the previous keys are not a SECRET of the service"
    );
}

#[test]
fn the_deploy_script_refuses_a_secrets_file_it_cannot_trust_and_never_echoes_a_secret() {
    let all: String = SECRETS.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let without_first: String = SECRETS[1..]
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let cases = [
        ("a secret missing", without_first, SECRETS[0].0),
        (
            "a pasted token on a line of its own",
            format!("{all}pasted-token-0123456789\n"),
            ":6:",
        ),
        (
            "a misspelt name",
            format!("{all}APP_WEBHOOK__POSTMARK_PASSWORD=x\n"),
            "APP_WEBHOOK__POSTMARK_PASSWORD is not one of",
        ),
        (
            "a name the spec binds itself",
            format!("{all}APP_DATABASE__PASSWORD=x\n"),
            "APP_DATABASE__PASSWORD is not one of",
        ),
    ];
    for (case, lines, reason) in cases {
        let directory = tempfile_directory();
        let secrets_file = directory.join("do-secrets.env");
        std::fs::write(&secrets_file, lines).unwrap();

        let output = std::process::Command::new("scripts/do_spec.sh")
            .env("NEWSLETTER_SECRETS", &secrets_file)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&directory).unwrap();

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: accepted");
        assert!(output.stdout.is_empty(), "{case}: a spec was printed");
        assert!(stderr.contains(reason), "{case}: {stderr}");
        assert!(!stderr.contains("pasted-token"), "{case}: echoed a secret");
    }
}

/// A fresh directory under `target/tmp`, for the test to remove.
fn tempfile_directory() -> std::path::PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("deploy-spec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}
