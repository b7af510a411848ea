//! The credentials of `--web-config-file` and the decision on one request's `Authorization`.
//! In: the file's users (bcrypt hashes) and bearer token digests, then each request's header.
//! Out: allowed, or the [`Refusal`] that is counted and answered 401 (429 when rate limited).
//!
//! bcrypt is slow on purpose (about 60 ms at cost 10), and the runtime is one thread that
//! also answers `/healthz` and `/metrics`: a check runs on the blocking pool, one at a time,
//! and a token bucket bounds how many run ([`BURST`], then [`PER_SECOND`] of cost 10; a cost-12
//! hash takes four tokens), so a client hammering wrong passwords costs the host at most about
//! a quarter of a core and gets 429s beyond. A user and password that passed are remembered
//! (a SHA-256 of them, never the password; at most [`MAX_VERIFIED`], until the file is
//! re-read), so a scraper that sends the same credentials every 15 s pays bcrypt once and is
//! never rate limited. An unknown user is checked against a known user's hash all the same,
//! so that the time taken does not tell which users exist.
//!
//! Bearer tokens are compared by their SHA-256 digests, in constant time: the file holds no
//! token, and a long random token needs no slow hash.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::http::HeaderValue;
use base64::{engine::general_purpose::STANDARD, Engine as _};
use ring::digest::SHA256;
use subtle::{Choice, ConstantTimeEq};
use tokio::sync::Semaphore;

/// Highest bcrypt cost accepted: each check of a cost-13 hash takes about half a second.
pub(crate) const MAX_COST: u32 = 12;
/// bcrypt checks that may run at once (cost 10 each; a higher cost takes more).
pub(crate) const BURST: f64 = 8.0;
/// bcrypt checks of cost 10 per second, once the burst is spent.
pub(crate) const PER_SECOND: f64 = 4.0;
/// Users and passwords remembered as verified.
pub(crate) const MAX_VERIFIED: usize = 64;

/// Why a request was refused (`profilerd_http_auth_refused_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// Neither `Basic` with base64 `user:password` nor `Bearer`.
    Malformed,
    UnknownUser,
    WrongPassword,
    WrongToken,
    /// More bcrypt checks than [`BURST`] and [`PER_SECOND`] allow: 429.
    RateLimited,
}

impl Refusal {
    pub const ALL: [Self; 6] = [
        Self::Missing,
        Self::Malformed,
        Self::UnknownUser,
        Self::WrongPassword,
        Self::WrongToken,
        Self::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownUser => "unknown_user",
            Self::WrongPassword => "wrong_password",
            Self::WrongToken => "wrong_token",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Its place in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A user's bcrypt hash and what checking it costs, in tokens of the bucket.
struct User {
    hash: String,
    tokens: f64,
}

/// The users and tokens of one reading of the file.
pub struct Credentials {
    users: BTreeMap<String, User>,
    tokens: Vec<[u8; 32]>,
    /// SHA-256 of the users and passwords that passed, oldest first.
    verified: Mutex<VecDeque<[u8; 32]>>,
    bucket: Mutex<Bucket>,
    /// One bcrypt check at a time, on the blocking pool.
    serial: Arc<Semaphore>,
}

/// A key of the file, what is wrong with it, and the fix.
pub(crate) type Invalid = (String, String, String);

impl Credentials {
    /// Checks every hash and digest of the file.
    pub(crate) fn new(users: BTreeMap<String, String>, tokens: &[String]) -> Result<Self, Invalid> {
        let mut checked = BTreeMap::new();
        for (name, hash) in users {
            let user = check_user(&name, hash)?;
            checked.insert(name, user);
        }
        let tokens = tokens
            .iter()
            .enumerate()
            .map(|(i, hex)| {
                parse_digest(hex).ok_or_else(|| {
                    (
                        format!("bearer_tokens_sha256[{i}]"),
                        "not 64 hex digits (the SHA-256 digest of a token)".into(),
                        "write the digest of the token, e.g. `tr -d '\\n' < token | sha256sum`"
                            .into(),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            users: checked,
            tokens,
            verified: Mutex::default(),
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                at: Instant::now(),
            }),
            serial: Arc::new(Semaphore::new(1)),
        })
    }

    /// Users and bearer tokens.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.users.len(), self.tokens.len())
    }

    pub(crate) fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    pub(crate) fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether the request's `Authorization` header is one of the credentials.
    pub(crate) async fn check(&self, header: Option<&HeaderValue>) -> Result<(), Refusal> {
        let value = header.ok_or(Refusal::Missing)?;
        let value = value.to_str().map_err(|_| Refusal::Malformed)?;
        let (scheme, rest) = value.trim().split_once(' ').ok_or(Refusal::Malformed)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.check_token(rest);
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Refusal::Malformed);
        }
        let decoded = STANDARD.decode(rest).map_err(|_| Refusal::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| Refusal::Malformed)?;
        let (user, password) = decoded.split_once(':').ok_or(Refusal::Malformed)?;
        self.check_basic(user, password).await
    }

    fn check_token(&self, token: &str) -> Result<(), Refusal> {
        let presented = sha256(&[token.as_bytes()]);
        // Every digest is compared, whichever matches.
        let found = self
            .tokens
            .iter()
            .fold(Choice::from(0), |found, t| found | t.ct_eq(&presented));
        if bool::from(found) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }

    async fn check_basic(&self, name: &str, password: &str) -> Result<(), Refusal> {
        // No user: nothing to check against, and nothing to learn from the time taken.
        let Some((_, stand_in)) = self.users.first_key_value() else {
            return Err(Refusal::UnknownUser);
        };
        let key = sha256(&[
            &(name.len() as u64).to_le_bytes(),
            name.as_bytes(),
            password.as_bytes(),
        ]);
        if self.lock_verified().contains(&key) {
            return Ok(());
        }
        let user = self.users.get(name);
        let User { hash, tokens } = user.unwrap_or(stand_in);
        if !self.take(*tokens) {
            return Err(Refusal::RateLimited);
        }
        let permit = Arc::clone(&self.serial)
            .acquire_owned()
            .await
            .map_err(|_| Refusal::RateLimited)?;
        let (hash, password) = (hash.clone(), password.to_owned());
        // The permit moves along: a client that leaves does not let a second check start.
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        match (user.is_some(), matched) {
            (false, _) => Err(Refusal::UnknownUser),
            (true, false) => Err(Refusal::WrongPassword),
            (true, true) => {
                let mut verified = self.lock_verified();
                if verified.len() >= MAX_VERIFIED {
                    verified.pop_front();
                }
                verified.push_back(key);
                Ok(())
            }
        }
    }

    /// Takes `tokens` from the bucket; false when it holds fewer.
    fn take(&self, tokens: f64) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens < tokens {
            return false;
        }
        bucket.tokens -= tokens;
        true
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, VecDeque<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// bcrypt checks allowed now, refilled at [`PER_SECOND`] up to [`BURST`].
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A user of `basic_auth_users`, its hash parsed and its cost bounded.
fn check_user(name: &str, hash: String) -> Result<User, Invalid> {
    let key = format!("basic_auth_users.{name}");
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
        return Err((
            key,
            "a user name is not empty and has no `:` nor control character".into(),
            "rename the user".into(),
        ));
    }
    let fix = format!(
        "hash the password with `htpasswd -nBC 10 {name}` and write the part after `{name}:`"
    );
    let parts: bcrypt::HashParts = hash.parse().map_err(|err| {
        (
            key.clone(),
            format!("not a bcrypt hash ({err})"),
            fix.clone(),
        )
    })?;
    let cost = parts.get_cost();
    if cost > MAX_COST {
        return Err((
            key,
            format!("bcrypt cost {cost} is over {MAX_COST}: each wrong password would cost the daemon over half a second of CPU"),
            fix,
        ));
    }
    Ok(User {
        hash,
        tokens: 2f64.powi(cost as i32 - 10).max(1.0),
    })
}

/// A SHA-256 digest written in 64 hex digits.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

#[cfg(test)]
mod tests;
