//! Admin passwords: which new ones we accept, how we store them, and how a
//! sign-in is checked against what is stored.
//!
//! Passwords are stored as Argon2id hashes in PHC format
//! (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`): the parameters travel with
//! each hash, so they can be raised later without locking anyone out. A hash
//! made under weaker parameters still verifies, and the sign-in that proves
//! the password hands back a fresh hash under today's for the caller to store.
//!
//! Hashing is deliberately slow, so it runs on tokio's blocking pool and
//! never on the threads that serve requests. The check takes the same time
//! whether or not the account exists, so that timing does not tell an
//! attacker which usernames are real.

use std::fmt;
use std::sync::LazyLock;

use anyhow::{Context, anyhow};
use argon2::password_hash::Error as HashError;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretString};

/// The shortest new password, in characters. Length is what makes a
/// password hard to guess; NIST SP 800-63B asks for at least 8 and OWASP
/// for 12 where, as here, there is no second factor by default.
const MIN_CHARACTERS: usize = 12;
/// The longest new password, in characters: ample for a passphrase, and
/// a bound on the work one hash does.
const MAX_CHARACTERS: usize = 128;
/// A sign-in candidate longer than this many bytes is refused without being
/// hashed. No password we accept can be longer (128 characters of at most
/// four bytes each is 512 bytes), so nothing that could match is lost.
const MAX_CANDIDATE_BYTES: usize = 1024;

// Today's Argon2id parameters: OWASP's first recommended configuration
// (Password Storage Cheat Sheet): 19 MiB of memory, two passes, one lane.
// OWASP lists several configurations of equal strength that trade memory for
// passes; this one keeps the memory of each sign-in small, which matters on
// the small instances this service runs on, where a burst of sign-ins (up to
// the login rate limits) hashes in parallel. Raising them later costs only
// a change here: every admin's hash is upgraded at their next sign-in.
/// Memory, in KiB.
const M_COST: u32 = 19 * 1024;
/// Passes over the memory.
const T_COST: u32 = 2;
/// Lanes. One: a sign-in keeps to one core, leaving the rest to requests.
const P_COST: u32 = 1;
// Whoever edits the numbers above cannot go below OWASP's minimum.
const _: () = assert!(M_COST >= 19_456 && T_COST >= 2 && P_COST >= 1);

/// A password an admin chooses: 12..=128 characters (Unicode scalar values,
/// not bytes), with no other composition rules: those push people towards
/// predictable patterns (`Password1!`) rather than longer passwords.
/// Whitespace is kept as typed. `Debug` does not reveal it.
pub struct NewPassword(SecretString);

impl NewPassword {
    pub fn parse(raw: SecretString) -> Result<Self, String> {
        let characters = raw.expose_secret().chars().count();
        if characters < MIN_CHARACTERS {
            return Err(format!(
                "The password must be at least {MIN_CHARACTERS} characters long."
            ));
        }
        if characters > MAX_CHARACTERS {
            return Err(format!(
                "The password must be at most {MAX_CHARACTERS} characters long."
            ));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([hidden])")
    }
}

/// Hashes `password` under today's parameters with a fresh random salt, as a
/// PHC string.
///
/// New passwords come from a signed-in session or the command line, never
/// from a stranger: they take the vouched-for lane.
pub async fn hash(password: &NewPassword) -> Result<String, anyhow::Error> {
    // The blocking task needs its own copy; it is wiped when dropped.
    let password = SecretString::from(password.expose());
    on_a_hashing_slot(Asker::Vouched, move || hash_now(password.expose_secret()))
        .await
        .context("The password hashing task failed")?
}

/// Who a password check is for, which decides the slots it may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// Anyone at the sign-in form.
    Anyone,
    /// Someone already vouched for: a signed-in session re-checking its
    /// password, or a browser that signed in to this account before.
    Vouched,
}

/// Runs one Argon2 computation on the blocking pool, never more at once than
/// the machine has cores. Each takes 19 MiB and a core for tens of
/// milliseconds; unbounded, a burst of sign-in attempts from many addresses
/// would queue hundreds on tokio's blocking pool (up to 512 threads) and
/// hold gigabytes. Past the cores they wait here instead, costing nothing.
///
/// Everyone waits in one line for those slots, and attempts from enough
/// addresses, each within its budgets, can keep that line long. So one
/// more slot is kept for the vouched-for: the owner's usual browser and
/// their open sessions (changing the password) take whichever slot frees
/// first, and never wait behind a stranger's queue.
async fn on_a_hashing_slot<T: Send + 'static>(
    asker: Asker,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let _slot = match asker {
        Asker::Anyone => SLOTS.acquire().await,
        Asker::Vouched => tokio::select! {
            slot = SLOTS.acquire() => slot,
            slot = VOUCHED_SLOT.acquire() => slot,
        },
    }
    .expect("the semaphores are never closed");
    tokio::task::spawn_blocking(work).await
}

/// One per core, for everyone.
static SLOTS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    tokio::sync::Semaphore::new(cores)
});

/// One more, for [`Asker::Vouched`] only.
static VOUCHED_SLOT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The outcome of checking a candidate password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// The password is right. `rehashed` is `Some(new PHC string)` when the
    /// stored hash used weaker parameters (or another Argon2 variant) than
    /// today's: the caller stores it (see `accounts::upgrade_hash`).
    Yes {
        rehashed: Option<String>,
    },
    No,
}

/// Verifies `candidate` against `stored`.
///
/// When `stored` is `None` (no such user) it verifies against a dummy hash
/// made once with today's parameters, so the answer, always `No`, takes as
/// long as for a real account. A candidate longer than 1024 bytes is `No`
/// without being checked against `stored` (a login form may send anything
/// up to the body limit) but still spends one dummy verify, for the same
/// reason. A stored hash that is not a PHC string we can check is an error:
/// the database holds something we did not write.
pub async fn verify(
    asker: Asker,
    candidate: SecretString,
    stored: Option<String>,
) -> Result<Verified, anyhow::Error> {
    on_a_hashing_slot(asker, move || {
        verify_now(candidate.expose_secret(), stored.as_deref())
    })
    .await
    .context("The password checking task failed")?
}

/// Makes the dummy hash ahead of the first sign-in. Made on first use
/// instead, it would make the first check of an unknown username cost two
/// hashes, and that one answer slower than a wrong password's.
pub async fn warm_up() {
    let _ = tokio::task::spawn_blocking(|| LazyLock::force(&DUMMY_HASH)).await;
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(M_COST, T_COST, P_COST, None)
        .expect("The Argon2 parameters are within the algorithm's bounds");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> Result<String, anyhow::Error> {
    let hash = hasher()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow!("Failed to hash a password: {e}"))?;
    Ok(hash.to_string())
}

/// What unknown users and oversized candidates are checked against: a hash
/// of a random password nobody knows, made once, under today's parameters
/// so that checking against it costs what checking a real hash does.
static DUMMY_HASH: LazyLock<PasswordHash> = LazyLock::new(|| {
    let unguessable = uuid::Uuid::new_v4().to_string();
    hasher()
        .hash_password(unguessable.as_bytes())
        .expect("Hashing a short password under valid parameters does not fail")
});

fn verify_now(candidate: &str, stored: Option<&str>) -> Result<Verified, anyhow::Error> {
    let stored = stored
        .map(PasswordHash::new)
        .transpose()
        .map_err(|e| anyhow!("The stored password hash is malformed: {e}"))?;
    let stored = match stored {
        Some(stored) if candidate.len() <= MAX_CANDIDATE_BYTES => stored,
        _ => {
            // The outcome is known already; spend the time a real check
            // would take. An oversized candidate is not hashed itself: only
            // its first bytes are, which bounds the work.
            let bounded = &candidate.as_bytes()[..candidate.len().min(MAX_CANDIDATE_BYTES)];
            let _ = hasher().verify_password(bounded, &*DUMMY_HASH);
            return Ok(Verified::No);
        }
    };
    // The parameters, variant and version come from the stored hash, not
    // from `hasher()`.
    match hasher().verify_password(candidate.as_bytes(), &stored) {
        Ok(()) => {
            let rehashed = if is_weaker_than_today(&stored)? {
                Some(hash_now(candidate)?)
            } else {
                None
            };
            Ok(Verified::Yes { rehashed })
        }
        Err(HashError::PasswordInvalid) => Ok(Verified::No),
        Err(e) => Err(anyhow!(
            "Could not check a password against its stored hash: {e}"
        )),
    }
}

/// Whether `stored` was made with another Argon2 variant or version, or with
/// less memory or fewer passes, than today's. Stronger parameters are left
/// alone: a hash is never downgraded.
fn is_weaker_than_today(stored: &PasswordHash) -> Result<bool, anyhow::Error> {
    let algorithm = Algorithm::new(stored.algorithm.as_str())
        .map_err(|e| anyhow!("The stored password hash names an unknown algorithm: {e}"))?;
    let params = Params::try_from(stored)
        .map_err(|e| anyhow!("The stored password hash has invalid parameters: {e}"))?;
    Ok(algorithm != Algorithm::Argon2id
        || stored.version != Some(Version::V0x13.into())
        || params.m_cost() < M_COST
        || params.t_cost() < T_COST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> NewPassword {
        NewPassword::parse(SecretString::from(raw)).unwrap()
    }

    /// A hash of `raw` made the way an older release (or another library)
    /// might have made it.
    fn hash_with(algorithm: Algorithm, m_cost: u32, t_cost: u32, raw: &str) -> String {
        let params = Params::new(m_cost, t_cost, 1, None).unwrap();
        Argon2::new(algorithm, Version::V0x13, params)
            .hash_password(raw.as_bytes())
            .unwrap()
            .to_string()
    }

    fn assert_has_todays_parameters(phc: &str) {
        let hash = PasswordHash::new(phc).unwrap();
        let params = Params::try_from(&hash).unwrap();
        assert_eq!(hash.algorithm.as_str(), "argon2id", "{phc}");
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (M_COST, T_COST, P_COST),
            "{phc}"
        );
    }

    #[test]
    fn a_password_of_12_to_128_characters_is_accepted() {
        for length in [12, 128] {
            assert!(
                NewPassword::parse(SecretString::from("x".repeat(length))).is_ok(),
                "{length} characters were refused"
            );
        }
    }

    #[test]
    fn a_password_shorter_than_12_characters_is_refused() {
        let reason = NewPassword::parse(SecretString::from("x".repeat(11))).unwrap_err();
        assert!(reason.contains("at least 12"), "{reason}");
    }

    #[test]
    fn a_password_longer_than_128_characters_is_refused() {
        let reason = NewPassword::parse(SecretString::from("x".repeat(129))).unwrap_err();
        assert!(reason.contains("at most 128"), "{reason}");
    }

    #[test]
    fn a_password_is_measured_in_characters_not_bytes() {
        // 12 characters, 36 bytes: long enough.
        assert!(NewPassword::parse(SecretString::from("€".repeat(12))).is_ok());
        // 11 characters, 44 bytes: too short.
        assert!(NewPassword::parse(SecretString::from("🔑".repeat(11))).is_err());
        // 128 characters of four bytes each: not too long.
        assert!(NewPassword::parse(SecretString::from("🔑".repeat(128))).is_ok());
    }

    #[test]
    fn a_password_keeps_its_surrounding_whitespace() {
        assert_eq!(password(" twelve chars ").expose(), " twelve chars ");
    }

    #[test]
    fn the_debug_form_of_a_new_password_does_not_reveal_it() {
        let printed = format!("{:?}", password("correct horse battery"));
        assert!(!printed.contains("correct"), "{printed}");
        assert!(!printed.contains("horse"), "{printed}");
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_needs_no_rehash() {
        let stored = hash(&password("correct horse battery")).await.unwrap();
        assert_has_todays_parameters(&stored);

        let verified = verify(
            Asker::Anyone,
            SecretString::from("correct horse battery"),
            Some(stored),
        )
        .await
        .unwrap();

        assert_eq!(verified, Verified::Yes { rehashed: None });
    }

    #[tokio::test]
    async fn two_hashes_of_one_password_differ_by_their_salt() {
        let new = password("correct horse battery");
        assert_ne!(hash(&new).await.unwrap(), hash(&new).await.unwrap());
    }

    #[tokio::test]
    async fn a_wrong_password_does_not_verify() {
        let stored = hash(&password("correct horse battery")).await.unwrap();

        for candidate in ["correct horse batterY", "", "correct horse battery "] {
            let verified = verify(
                Asker::Anyone,
                SecretString::from(candidate),
                Some(stored.clone()),
            )
            .await
            .unwrap();
            assert_eq!(verified, Verified::No, "{candidate:?}");
        }
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let verified = verify(
            Asker::Anyone,
            SecretString::from("correct horse battery"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(verified, Verified::No);
    }

    #[tokio::test]
    async fn a_candidate_longer_than_1024_bytes_is_refused_even_when_it_matches() {
        // Made under the weakest parameters, so that hashing 2 KiB is quick:
        // only the cap can make this `No`.
        let long = "x".repeat(2048);
        let stored = hash_with(Algorithm::Argon2id, 8, 1, &long);

        let verified = verify(Asker::Anyone, SecretString::from(long), Some(stored))
            .await
            .unwrap();

        assert_eq!(verified, Verified::No);
    }

    #[tokio::test]
    async fn a_hash_made_with_weaker_parameters_verifies_and_is_rehashed_with_todays() {
        let raw = "correct horse battery";
        for (case, stored) in [
            ("less memory", hash_with(Algorithm::Argon2id, 4096, 2, raw)),
            (
                "fewer passes",
                hash_with(Algorithm::Argon2id, M_COST, 1, raw),
            ),
            (
                "argon2i",
                hash_with(Algorithm::Argon2i, M_COST, T_COST, raw),
            ),
        ] {
            let verified = verify(Asker::Anyone, SecretString::from(raw), Some(stored))
                .await
                .unwrap();

            let Verified::Yes {
                rehashed: Some(rehashed),
            } = verified
            else {
                panic!("{case}: expected a rehash, got {verified:?}");
            };
            assert_has_todays_parameters(&rehashed);
            assert_eq!(
                verify(Asker::Anyone, SecretString::from(raw), Some(rehashed))
                    .await
                    .unwrap(),
                Verified::Yes { rehashed: None },
                "{case}: the new hash does not verify"
            );
        }
    }

    #[tokio::test]
    async fn a_hash_made_with_stronger_parameters_is_not_downgraded() {
        let raw = "correct horse battery";
        let stored = hash_with(Algorithm::Argon2id, M_COST, T_COST + 1, raw);

        let verified = verify(Asker::Anyone, SecretString::from(raw), Some(stored))
            .await
            .unwrap();

        assert_eq!(verified, Verified::Yes { rehashed: None });
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_error() {
        for stored in [
            "",
            "not a hash",
            "$argon2id$v=19$m=lots,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            let outcome = verify(
                Asker::Anyone,
                SecretString::from("correct horse battery"),
                Some(stored.into()),
            )
            .await;
            assert!(outcome.is_err(), "{stored:?}: {outcome:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vouched_for_check_runs_while_strangers_hold_every_slot() {
        // Strangers' checks on every slot, each held until its sender is
        // dropped.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (releases, waits): (Vec<_>, Vec<_>) =
            (0..cores).map(|_| std::sync::mpsc::channel::<()>()).unzip();
        let strangers: Vec<_> = waits
            .into_iter()
            .map(|wait| {
                tokio::spawn(on_a_hashing_slot(Asker::Anyone, move || {
                    let _ = wait.recv();
                }))
            })
            .collect();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while SLOTS.available_permits() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the slots never filled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let stranger = tokio::spawn(on_a_hashing_slot(Asker::Anyone, || "stranger"));

        let vouched = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            on_a_hashing_slot(Asker::Vouched, || "owner"),
        )
        .await;

        assert_eq!(
            vouched.expect("the owner waited behind strangers").unwrap(),
            "owner"
        );
        assert!(!stranger.is_finished(), "a stranger skipped the line");
        drop(releases);
        for held in strangers {
            held.await.unwrap().unwrap();
        }
        assert_eq!(stranger.await.unwrap().unwrap(), "stranger");
    }
}
