//! `newsletter admin ...`: the commands an operator runs on the server to
//! make the first admin, to let an admin back in who lost their password,
//! and to seal every TOTP secret under the current key after a rotation.
//! Nothing else can create an admin: there is no sign-up page and no default
//! or seeded account.
//!
//! The password never appears on the command line, where other users of the
//! machine could read it in the process list and the shell would keep it in
//! its history: it is read from standard input, typed twice without echo at
//! a terminal, or as one line from a pipe (for scripts and tests).

use std::io::{self, BufRead, IsTerminal};

use anyhow::{Context, anyhow};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};

use crate::admin::accounts::{self, CreateError};
use crate::admin::audit::{self, Action, Actor};
use crate::admin::password::{self, NewPassword};
use crate::admin::totp_keys::{Place, TotpKeys};
use crate::admin::username::AdminUsername;
use crate::configuration::Settings;
use crate::domain::SubscriberEmail;

pub const USAGE: &str = "\
Usage:
  newsletter admin create --username NAME [--email ADDRESS]
            Add an admin
  newsletter admin reset-password --username NAME
            Give an admin a new password and end their sessions
  newsletter admin reseal-totp
            Seal every admin's TOTP secret under the current admin.totp_key:
            after a key rotation, before the previous key is dropped
  newsletter admin token create --name NAME --scope read[,write,publish] [--expires-in-days N]
            Make an API token and print it, once
  newsletter admin token revoke --name NAME
            Revoke an API token: it opens the API no more

create and reset-password read the new password from standard input: typed
twice at a terminal, or one line from a pipe.";

/// What the audit log says about changes made from here.
const FROM_THE_COMMAND_LINE: &str = "from the command line";

/// Runs `newsletter admin create --username NAME [--email ADDRESS]` or
/// `newsletter admin reset-password --username NAME`; `args` are the words
/// after `admin`.
pub async fn run(settings: &Settings, args: &[String]) -> Result<(), anyhow::Error> {
    if matches!(
        args.first().map(String::as_str),
        Some("-h" | "--help" | "help")
    ) {
        println!("{USAGE}");
        return Ok(());
    }
    let command = parse_args(args)?;
    // One connection for one command: no pool needed. It carries the
    // service's statement and lock timeouts.
    let mut conn = PgConnection::connect_with(&settings.database.with_limits())
        .await
        .context("Failed to connect to the database")?;
    match command {
        Command::Create { username, email } => create(&mut conn, username, email).await,
        Command::ResetPassword { username } => reset_password(&mut conn, username).await,
        Command::ResealTotp => {
            let keys = TotpKeys::from_settings(&settings.admin)?;
            reseal_totp(&mut conn, &keys).await
        }
    }
}

/// A command, its arguments parsed.
#[derive(Debug, PartialEq)]
enum Command {
    Create {
        username: AdminUsername,
        email: Option<SubscriberEmail>,
    },
    ResetPassword {
        username: AdminUsername,
    },
    ResealTotp,
}

/// Why the words after `admin` are not a command we can run.
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    /// The words do not form a command: the usage says what would.
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    /// A value that is not a valid username or address.
    #[error("{0}")]
    Invalid(String),
}

fn parse_args(args: &[String]) -> Result<Command, ArgsError> {
    let usage = |reason: String| ArgsError::Usage(reason);
    let (subcommand, flags) = args
        .split_first()
        .ok_or_else(|| usage("Which admin command?".into()))?;
    let takes_email = match subcommand.as_str() {
        "create" => true,
        "reset-password" => false,
        "reseal-totp" if flags.is_empty() => return Ok(Command::ResealTotp),
        "reseal-totp" => return Err(usage("`reseal-totp` takes no arguments.".into())),
        other => return Err(usage(format!("Unknown admin command `{other}`."))),
    };

    let (mut username, mut email) = (None, None);
    let mut words = flags.iter();
    while let Some(flag) = words.next() {
        let slot = match flag.as_str() {
            "--username" => &mut username,
            "--email" if takes_email => &mut email,
            _ => return Err(usage(format!("Unexpected `{flag}`."))),
        };
        if slot.is_some() {
            return Err(usage(format!("`{flag}` is given twice.")));
        }
        let value = words
            .next()
            .ok_or_else(|| usage(format!("`{flag}` needs a value.")))?;
        *slot = Some(value);
    }

    let username = username.ok_or_else(|| usage("`--username` is required.".into()))?;
    let username = AdminUsername::parse(username).map_err(ArgsError::Invalid)?;
    Ok(if takes_email {
        let email = email
            .map(|raw| SubscriberEmail::parse(raw))
            .transpose()
            .map_err(ArgsError::Invalid)?;
        Command::Create { username, email }
    } else {
        Command::ResetPassword { username }
    })
}

async fn create(
    conn: &mut PgConnection,
    username: AdminUsername,
    email: Option<SubscriberEmail>,
) -> Result<(), anyhow::Error> {
    // Checked before asking for a password, so that nobody types one for
    // nothing. The unique index still decides, should another run race us.
    if accounts::find_by_username(conn, &username).await?.is_some() {
        return Err(CreateError::UsernameTaken(username.to_string()).into());
    }
    let password_hash = password::hash(&new_password().await?).await?;

    let mut transaction = conn.begin().await?;
    let id = accounts::create(&mut transaction, &username, email.as_ref(), &password_hash).await?;
    let actor = command_line_actor(id, &username);
    audit::record(
        &mut transaction,
        &actor,
        Action::AdminCreated,
        FROM_THE_COMMAND_LINE,
    )
    .await?;
    transaction.commit().await?;

    println!("Created the admin {username}.");
    Ok(())
}

async fn reset_password(
    conn: &mut PgConnection,
    username: AdminUsername,
) -> Result<(), anyhow::Error> {
    let admin = accounts::find_by_username(conn, &username)
        .await?
        .ok_or_else(|| anyhow!("There is no admin named {username}."))?;
    let password_hash = password::hash(&new_password().await?).await?;

    let mut transaction = conn.begin().await?;
    // Raises the session generation: whoever knew the old password is
    // signed out everywhere.
    accounts::change_password(&mut transaction, admin.id, &password_hash).await?;
    let actor = command_line_actor(admin.id, &username);
    audit::record(
        &mut transaction,
        &actor,
        Action::PasswordReset,
        FROM_THE_COMMAND_LINE,
    )
    .await?;
    transaction.commit().await?;

    println!("Reset the password of {username}; their sessions have ended.");
    Ok(())
}

/// Seals every stored TOTP secret under the current key: plain ones from
/// before secrets were sealed, and ones sealed under a previous key. A row
/// is written only if it still holds what was read, so a sign-in or an
/// enrolment meanwhile (which writes a value sealed under the current key)
/// is not undone. A secret that opens under no configured key is left as it
/// is, and the command fails: a rotation must not drop a key still needed.
async fn reseal_totp(conn: &mut PgConnection, keys: &TotpKeys) -> Result<(), anyhow::Error> {
    let (mut resealed, mut current, mut unopened) = (0, 0, Vec::new());
    for (id, stored) in accounts::totp_secrets(conn).await? {
        match keys.open(&stored, Place::Account(id)) {
            Ok(opened) if opened.stale => {
                let sealed = keys.seal(&opened.secret, Place::Account(id));
                if accounts::replace_totp_secret(conn, id, &stored, &sealed).await? {
                    resealed += 1;
                } else {
                    current += 1;
                }
            }
            Ok(_) => current += 1,
            Err(e) => unopened.push(format!("admin {id}: {e}")),
        }
    }
    println!("Sealed {resealed} TOTP secrets under the current key; {current} already were.");
    if !unopened.is_empty() {
        anyhow::bail!(
            "{} TOTP secrets open under no configured key and were left as they are; keep \
             every previous key until they do:\n{}",
            unopened.len(),
            unopened.join("\n")
        );
    }
    Ok(())
}

/// The command line acts on an admin's account from no network address.
fn command_line_actor(id: uuid::Uuid, username: &AdminUsername) -> Actor {
    Actor {
        admin_id: Some(id),
        username: Some(username.to_string()),
        client_ip: None,
    }
}

/// The new password, from this process's standard input.
async fn new_password() -> Result<NewPassword, anyhow::Error> {
    // Reading waits on a person or a pipe: not on the async threads.
    tokio::task::spawn_blocking(|| {
        let stdin = io::stdin();
        let on_terminal = stdin.is_terminal();
        read_new_password(stdin.lock(), on_terminal, |prompt| {
            rpassword::prompt_password(prompt)
        })
    })
    .await
    .context("The task reading the password failed")?
}

/// Reads a new password. At a terminal, `prompt` asks for it twice (without
/// echo) and the two must match, since nobody can see a typing mistake.
/// Otherwise exactly one line is read from `input`, without its line ending
/// (`\n` or `\r\n`); whatever else the line holds, spaces included, is the
/// password. Either way the password must pass [`NewPassword::parse`].
fn read_new_password(
    mut input: impl BufRead,
    on_terminal: bool,
    mut prompt: impl FnMut(&str) -> io::Result<String>,
) -> Result<NewPassword, anyhow::Error> {
    if on_terminal {
        let first = SecretString::from(prompt("New password: ")?);
        // Refused before the second prompt: no point typing it again.
        let password = NewPassword::parse(first).map_err(|reason| anyhow!(reason))?;
        let again = SecretString::from(prompt("The same password again: ")?);
        if secrecy::ExposeSecret::expose_secret(&again) != password.expose() {
            anyhow::bail!("The two passwords differ; nothing was changed.");
        }
        return Ok(password);
    }
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .context("Failed to read the password from standard input")?;
    if read == 0 {
        anyhow::bail!(
            "No password on standard input: pipe it in as one line, or run the command \
             at a terminal to type it."
        );
    }
    let end = line
        .strip_suffix("\r\n")
        .or_else(|| line.strip_suffix('\n'))
        .unwrap_or(&line)
        .len();
    line.truncate(end);
    NewPassword::parse(SecretString::from(line)).map_err(|reason| anyhow!(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn from_pipe(input: &str) -> Result<NewPassword, anyhow::Error> {
        read_new_password(input.as_bytes(), false, |_| {
            panic!("a pipe is never prompted")
        })
    }

    /// A terminal where the person types `answers`, one per prompt.
    fn at_terminal(answers: &[&str]) -> (Result<NewPassword, anyhow::Error>, usize) {
        let mut answers = answers.iter();
        let mut prompts = 0;
        let outcome = read_new_password(io::empty(), true, |_| {
            prompts += 1;
            Ok(answers.next().expect("prompted too often").to_string())
        });
        (outcome, prompts)
    }

    #[test]
    fn a_piped_password_is_the_first_line_without_its_line_ending() {
        for (input, expected) in [
            ("correct horse battery\n", "correct horse battery"),
            ("correct horse battery\r\n", "correct horse battery"),
            ("correct horse battery", "correct horse battery"),
            ("  spaces count too  \n", "  spaces count too  "),
            (
                "first line is enough\nsecond line\n",
                "first line is enough",
            ),
            ("a lone return\r stays\n", "a lone return\r stays"),
        ] {
            let password = from_pipe(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(password.expose(), expected, "{input:?}");
        }
    }

    #[test]
    fn an_empty_pipe_is_refused() {
        let error = from_pipe("").unwrap_err().to_string();
        assert!(error.contains("No password"), "{error}");
    }

    #[test]
    fn a_piped_password_that_is_too_short_is_refused_with_the_reason() {
        let error = from_pipe("eleven char\n").unwrap_err().to_string();
        assert!(error.contains("at least 12 characters"), "{error}");
    }

    #[test]
    fn a_password_typed_twice_alike_at_a_terminal_is_accepted() {
        let (outcome, prompts) = at_terminal(&["correct horse battery"; 2]);
        assert_eq!(outcome.unwrap().expose(), "correct horse battery");
        assert_eq!(prompts, 2);
    }

    #[test]
    fn two_different_passwords_at_a_terminal_are_refused() {
        let (outcome, _) = at_terminal(&["correct horse battery", "correct horse batterY"]);
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("differ"), "{error}");
    }

    #[test]
    fn a_short_password_at_a_terminal_is_refused_before_it_is_asked_again() {
        let (outcome, prompts) = at_terminal(&["short"]);
        assert!(outcome.is_err());
        assert_eq!(prompts, 1);
    }

    #[test]
    fn create_takes_a_username_and_an_optional_email() {
        let command = parse_args(&args(&[
            "create",
            "--username",
            "Ada",
            "--email",
            "ada@example.com",
        ]))
        .unwrap();
        assert_eq!(
            command,
            Command::Create {
                username: AdminUsername::parse("ada").unwrap(),
                email: Some(SubscriberEmail::parse("ada@example.com").unwrap()),
            }
        );
        let command = parse_args(&args(&["reset-password", "--username", "ada"])).unwrap();
        assert_eq!(
            command,
            Command::ResetPassword {
                username: AdminUsername::parse("ada").unwrap()
            }
        );
        assert_eq!(
            parse_args(&args(&["reseal-totp"])).unwrap(),
            Command::ResealTotp
        );
    }

    #[test]
    fn words_that_are_no_command_are_refused_with_the_usage() {
        for words in [
            &[][..],
            &["delete", "--username", "ada"],
            &["create"],
            &["create", "--username"],
            &[
                "create",
                "--username",
                "ada",
                "--password",
                "hunter2hunter2",
            ],
            &["create", "--username", "ada", "--username", "bob"],
            &[
                "reset-password",
                "--username",
                "ada",
                "--email",
                "a@example.com",
            ],
            &["reset-password", "ada"],
            &["reseal-totp", "--username", "ada"],
        ] {
            match parse_args(&args(words)) {
                Err(e @ ArgsError::Usage(_)) => {
                    assert!(e.to_string().contains(USAGE), "{words:?}: {e}")
                }
                other => panic!("{words:?}: expected a usage error, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_invalid_username_or_email_is_refused_with_its_reason() {
        for (words, reason) in [
            (&["create", "--username", "ada lovelace"][..], "username"),
            (
                &["create", "--username", "ada", "--email", "not-an-address"],
                "not a valid email address",
            ),
        ] {
            match parse_args(&args(words)) {
                Err(ArgsError::Invalid(e)) => assert!(e.contains(reason), "{words:?}: {e}"),
                other => panic!("{words:?}: expected a refusal, got {other:?}"),
            }
        }
    }
}
