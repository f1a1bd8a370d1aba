//! `newsletter admin token ...`: making and revoking API tokens on the
//! server, for an operator who has no admin page at hand (a first
//! deployment, a script, a token to revoke in a hurry). The token is printed
//! once, on standard output and nowhere else; everything else goes to the
//! audit log as the admin pages' changes do.

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use crate::admin::audit::{self, Action, Actor};
use crate::api::tokens::{self, MAX_EXPIRES_IN_DAYS, NewToken, Scopes, TokenName};
use crate::configuration::Settings;

pub const USAGE: &str = "\
Usage:
  newsletter admin token create --name NAME --scope read[,write,publish] [--expires-in-days N]
            Make an API token and print it, once
  newsletter admin token revoke --name NAME
            Revoke an API token: it opens the API no more";

/// Who made a token from here, in the token list and the audit log.
const COMMAND_LINE: &str = "the command line";

#[derive(Debug, PartialEq)]
enum Command {
    Create {
        name: TokenName,
        scopes: Scopes,
        expires_in_days: Option<u32>,
    },
    Revoke {
        name: TokenName,
    },
}

/// Runs `newsletter admin token ...`; `args` are the words after `token`.
pub async fn run(settings: &Settings, args: &[String]) -> Result<(), anyhow::Error> {
    let command = parse_args(args).map_err(|reason| anyhow::anyhow!("{reason}\n\n{USAGE}"))?;
    let mut conn = PgConnection::connect_with(&settings.database.with_limits())
        .await
        .context("Failed to connect to the database")?;
    let actor = Actor {
        admin_id: None,
        username: None,
        client_ip: None,
    };
    let mut transaction = conn.begin().await?;
    match command {
        Command::Create {
            name,
            scopes,
            expires_in_days,
        } => {
            let new = NewToken {
                name: &name,
                scopes: &scopes,
                created_by: COMMAND_LINE,
                expires_in_days,
            };
            let (token, secret) = tokens::create(&mut transaction, &new).await?;
            let detail = format!(
                "token {} ({}), from {COMMAND_LINE}",
                token.name, token.scopes
            );
            audit::record(&mut transaction, &actor, Action::ApiTokenCreated, &detail).await?;
            transaction.commit().await?;
            eprintln!(
                "Created the API token {name} ({scopes}). It is shown this once; keep it \
                 somewhere safe:"
            );
            println!("{}", secret.expose());
        }
        Command::Revoke { name } => {
            let Some(token) = tokens::revoke_by_name(&mut transaction, &name).await? else {
                anyhow::bail!("There is no live API token named {name}.");
            };
            let detail = format!("token {}, from {COMMAND_LINE}", token.name);
            audit::record(&mut transaction, &actor, Action::ApiTokenRevoked, &detail).await?;
            transaction.commit().await?;
            println!("Revoked the API token {name}.");
        }
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let (subcommand, flags) = args
        .split_first()
        .ok_or_else(|| "Which token command: create or revoke?".to_owned())?;
    let creating = match subcommand.as_str() {
        "create" => true,
        "revoke" => false,
        other => return Err(format!("Unknown token command `{other}`.")),
    };
    let (mut name, mut scope, mut days) = (None, None, None);
    let mut words = flags.iter();
    while let Some(flag) = words.next() {
        let slot = match flag.as_str() {
            "--name" => &mut name,
            "--scope" if creating => &mut scope,
            "--expires-in-days" if creating => &mut days,
            _ => return Err(format!("Unexpected `{flag}`.")),
        };
        if slot.is_some() {
            return Err(format!("`{flag}` is given twice."));
        }
        *slot = Some(
            words
                .next()
                .ok_or_else(|| format!("`{flag}` needs a value."))?,
        );
    }
    let name = TokenName::parse(name.ok_or("`--name` is required.")?)?;
    if !creating {
        return Ok(Command::Revoke { name });
    }
    let scopes = Scopes::parse_list(scope.ok_or("`--scope` is required.")?)?;
    let expires_in_days = days.map(|raw| parse_days(raw)).transpose()?;
    Ok(Command::Create {
        name,
        scopes,
        expires_in_days,
    })
}

/// A lifetime in whole days, 1 to [`MAX_EXPIRES_IN_DAYS`].
pub fn parse_days(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(days) if (1..=MAX_EXPIRES_IN_DAYS).contains(&days) => Ok(days),
        _ => Err(format!(
            "`{raw}` is not a number of days from 1 to {MAX_EXPIRES_IN_DAYS}."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn create_takes_a_name_scopes_and_an_optional_lifetime() {
        let command = parse_args(&args(&[
            "create",
            "--name",
            "site build",
            "--scope",
            "write,publish",
            "--expires-in-days",
            "30",
        ]))
        .unwrap();
        assert_eq!(
            command,
            Command::Create {
                name: TokenName::parse("site build").unwrap(),
                scopes: Scopes::parse_list("read,write,publish").unwrap(),
                expires_in_days: Some(30),
            }
        );
        assert_eq!(
            parse_args(&args(&["revoke", "--name", "site build"])).unwrap(),
            Command::Revoke {
                name: TokenName::parse("site build").unwrap()
            }
        );
    }

    #[test]
    fn words_that_are_no_token_command_are_refused_with_a_reason() {
        for (words, reason) in [
            (&[][..], "Which token command"),
            (&["delete", "--name", "x"], "Unknown token command"),
            (&["create", "--name", "x"], "`--scope` is required"),
            (&["create", "--scope", "read"], "`--name` is required"),
            (&["create", "--name", "x", "--scope", "root"], "not a scope"),
            (
                &[
                    "create",
                    "--name",
                    "x",
                    "--scope",
                    "read",
                    "--expires-in-days",
                    "0",
                ],
                "number of days",
            ),
            (
                &["revoke", "--name", "x", "--scope", "read"],
                "Unexpected `--scope`",
            ),
            (&["revoke", "--name"], "needs a value"),
            (&["revoke", "--name", "a", "--name", "b"], "given twice"),
        ] {
            let error = parse_args(&args(words)).unwrap_err();
            assert!(error.contains(reason), "{words:?}: {error}");
        }
    }
}
