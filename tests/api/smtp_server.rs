//! A real SMTP server for the SMTP provider's tests: `tests/smtp_server.py`
//! (aiosmtpd) in a process of its own, on a port the system picks, writing
//! what it receives into a directory of its own. Options make it require
//! AUTH, speak STARTTLS or implicit TLS with a self-signed certificate,
//! refuse recipients, or turn transactions or sessions away. Dropping the
//! server ends the process and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use newsletter::delivery::smtp::{SmtpSettings, SmtpTls};
use secrecy::SecretString;

/// How long the server may take to start, and a test to see its mail
/// arrive: generous, since a loaded CI machine is slow, and only a broken
/// run ever waits that long.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// How the server behaves. The default takes every message, in plain text,
/// from anyone.
#[derive(Debug, Clone)]
pub struct SmtpServerOptions {
    /// Requires AUTH with this user and password.
    pub auth: Option<(String, String)>,
    /// STARTTLS (required before MAIL) or implicit TLS, with a self-signed
    /// certificate for 127.0.0.1 made for the server.
    pub tls: SmtpTls,
    /// Recipients answered with 550 at RCPT.
    pub refuse: Vec<String>,
    /// A reply to every MAIL, such as `451 4.3.0 Try again later`.
    pub answer: Option<String>,
    /// A reply to every EHLO and HELO, such as `421 4.3.2 Not now`: the
    /// session itself refused.
    pub session_answer: Option<String>,
}

impl Default for SmtpServerOptions {
    fn default() -> Self {
        Self {
            auth: None,
            tls: SmtpTls::None,
            refuse: Vec::new(),
            answer: None,
            session_answer: None,
        }
    }
}

/// One message as one recipient got it, decoded by Python's email parser.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_to: String,
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    // The file also holds the message as it came over the wire (`raw`),
    // for a person reading a failed test's files.
}

impl ReceivedMessage {
    /// The value of the first header called `name`, whatever its case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

pub struct SmtpServer {
    process: Child,
    dir: Directory,
    port: u16,
    options: SmtpServerOptions,
}

/// The server's directory, removed when dropped, also when the server
/// fails to start.
struct Directory(PathBuf);

impl Directory {
    fn create() -> Self {
        let path = std::env::temp_dir().join(format!("newsletter-smtp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("could not create the SMTP server's directory");
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SmtpServer {
    /// Starts a server and waits until it listens.
    pub async fn start(options: SmtpServerOptions) -> Self {
        let dir = Directory::create();
        let ready = dir.join("port");
        let mut command = Command::new(python());
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py"))
            .args(["--port", "0", "--ready-file"])
            .arg(&ready)
            .arg("--dir")
            .arg(dir.join("messages"));
        if let Some((user, password)) = &options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        match options.tls {
            SmtpTls::None => {}
            SmtpTls::Starttls => {
                command.arg("--starttls").args(certificate(&dir));
            }
            SmtpTls::Implicit => {
                command.arg("--implicit-tls").args(certificate(&dir));
            }
        }
        for address in &options.refuse {
            command.arg("--refuse").arg(address);
        }
        if let Some(reply) = &options.answer {
            command.arg("--answer").arg(reply);
        }
        if let Some(reply) = &options.session_answer {
            command.arg("--session-answer").arg(reply);
        }
        let log = std::fs::File::create(dir.join("server.log")).expect("could not create the log");
        let process = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("could not start tests/smtp_server.py");
        // From here on, a failure still ends the process, through Drop.
        let mut server = Self {
            process,
            dir,
            port: 0,
            options,
        };
        server.port = server.wait_until_listening(&ready).await;
        server
    }

    /// The script writes its port once it listens, under a temporary name
    /// and then renamed: the file is there whole or not at all.
    async fn wait_until_listening(&mut self, ready: &Path) -> u16 {
        let started = Instant::now();
        loop {
            if let Ok(port) = std::fs::read_to_string(ready) {
                return port.trim().parse().expect("the ready file holds a port");
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!(
                    "the SMTP test server exited with {status} before listening \
                     (is python3-aiosmtpd installed? scripts/lib.sh has \
                     ensure_smtp_test_server):\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the SMTP test server did not listen within {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Settings that reach this server: its credentials, its encryption
    /// with its self-signed certificate accepted, a pool of 4 and a timeout
    /// of 10 seconds.
    pub fn settings(&self) -> SmtpSettings {
        let (username, password) = match &self.options.auth {
            Some((user, password)) => (
                Some(user.clone()),
                Some(SecretString::from(password.as_str())),
            ),
            None => (None, None),
        };
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            tls: self.options.tls,
            username,
            password,
            pool_size: 4,
            timeout_milliseconds: 10_000,
            accept_invalid_certificates: self.options.tls != SmtpTls::None,
        }
    }

    /// Settings as `settings()`, with a timeout that fits the tests' claims
    /// of 5 seconds: a call may take twice it.
    pub fn app_settings(&self) -> SmtpSettings {
        SmtpSettings {
            timeout_milliseconds: 1_000,
            ..self.settings()
        }
    }

    /// Every message received so far, in the order they arrived.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("messages")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            // The script writes `.name.tmp` and renames it `name.json`.
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "json")
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).expect("a received message is readable");
                serde_json::from_str(&text).expect("a received message is the script's JSON")
            })
            .collect()
    }

    /// Waits until at least `count` messages have arrived, and returns them.
    pub async fn wait_for_messages(&self, count: usize) -> Vec<ReceivedMessage> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{} of {count} messages arrived within {DEADLINE:?}:\n{}",
                received.len(),
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    /// Ends the process before its directory goes (a field, dropped after
    /// this).
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The interpreter that has aiosmtpd: Debian's, where `apt-get install
/// python3-aiosmtpd` puts it, unless `SMTP_TEST_PYTHON` names another. The
/// first `python3` on PATH may be a pyenv or virtualenv one without it.
fn python() -> String {
    std::env::var("SMTP_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// A self-signed certificate for 127.0.0.1 and localhost, valid for a day,
/// in `dir`: the arguments `--starttls` and `--implicit-tls` take.
fn certificate(dir: &Directory) -> [PathBuf; 2] {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("could not run openssl");
    assert!(
        output.status.success(),
        "openssl could not make a certificate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    [cert, key]
}

/// Settings for a plain-text server on `port` of this host, as
/// [`SmtpServer::app_settings`] makes them: for a server that is not there.
pub fn plain_settings(port: u16) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        username: None,
        password: None,
        pool_size: 4,
        timeout_milliseconds: 1_000,
        accept_invalid_certificates: false,
    }
}
