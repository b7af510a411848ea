//! The decision on a request's `Authorization`: each scheme, each refusal, the cache of
//! verified passwords and the bound on bcrypt work.

use super::*;

/// SHA-256 of "foo".
const FOO_DIGEST: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

fn credentials(tokens: &[&str]) -> Credentials {
    let users = BTreeMap::from([
        ("alice".to_string(), bcrypt::hash("secret", 4).unwrap()),
        ("bob".to_string(), bcrypt::hash("hunter2", 4).unwrap()),
    ]);
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    Credentials::new(users, &tokens).unwrap()
}

fn basic(user: &str, password: &str) -> HeaderValue {
    let encoded = STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
}

async fn check(c: &Credentials, header: Option<HeaderValue>) -> Result<(), Refusal> {
    c.check(header.as_ref()).await
}

#[tokio::test]
async fn basic_auth_passes_with_the_right_password_only() {
    let c = credentials(&[]);
    assert_eq!(check(&c, Some(basic("alice", "secret"))).await, Ok(()));
    assert_eq!(check(&c, Some(basic("bob", "hunter2"))).await, Ok(()));
    assert_eq!(
        check(&c, Some(basic("alice", "hunter2"))).await,
        Err(Refusal::WrongPassword)
    );
    assert_eq!(
        check(&c, Some(basic("mallory", "secret"))).await,
        Err(Refusal::UnknownUser)
    );
    // The scheme's name is case-insensitive (RFC 9110).
    let lower = HeaderValue::from_str(&format!("basic {}", STANDARD.encode("alice:secret")));
    assert_eq!(check(&c, Some(lower.unwrap())).await, Ok(()));
}

#[tokio::test]
async fn missing_and_malformed_headers_are_refused_without_bcrypt() {
    let c = credentials(&[]);
    assert_eq!(check(&c, None).await, Err(Refusal::Missing));
    for header in [
        "Basic !!!",
        "Basic",
        "Digest username=\"alice\"",
        &format!("Basic {}", STANDARD.encode("alice")),
    ] {
        let value = HeaderValue::from_str(header).unwrap();
        assert_eq!(
            check(&c, Some(value)).await,
            Err(Refusal::Malformed),
            "{header}"
        );
    }
    // None of them took a token of the bucket.
    assert_eq!(c.bucket.lock().unwrap().tokens, BURST);
}

#[tokio::test]
async fn bearer_tokens_are_compared_by_digest() {
    let c = credentials(&[FOO_DIGEST]);
    let bearer = |t: &str| Some(HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    assert_eq!(check(&c, bearer("foo")).await, Ok(()));
    assert_eq!(check(&c, bearer("foo2")).await, Err(Refusal::WrongToken));
    assert_eq!(
        check(&c, bearer(FOO_DIGEST)).await,
        Err(Refusal::WrongToken)
    );
    let none = credentials(&[]);
    assert_eq!(check(&none, bearer("foo")).await, Err(Refusal::WrongToken));
    assert_eq!(c.counts(), (2, 1));
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited_and_known_ones_are_not() {
    let c = credentials(&[]);
    assert_eq!(check(&c, Some(basic("alice", "secret"))).await, Ok(()));
    // The burst, less the check above (at most a few tokens came back meanwhile).
    let mut refused = Vec::new();
    for i in 0..12 {
        refused.push(check(&c, Some(basic("alice", &format!("guess{i}")))).await);
    }
    assert!(refused.contains(&Err(Refusal::RateLimited)), "{refused:?}");
    let wrong = refused
        .iter()
        .filter(|r| **r == Err(Refusal::WrongPassword))
        .count();
    assert!((7..=9).contains(&wrong), "{wrong} checks ran: {refused:?}");
    // The verified password is remembered: no bcrypt, no token needed.
    assert_eq!(check(&c, Some(basic("alice", "secret"))).await, Ok(()));
    // A password not verified yet waits for the bucket like any other.
    assert_eq!(
        check(&c, Some(basic("bob", "hunter2"))).await,
        Err(Refusal::RateLimited)
    );
}

#[test]
fn costlier_hashes_take_more_of_the_bucket() {
    let cost = |c: u32| {
        let hash = bcrypt::hash("x", 4)
            .unwrap()
            .replacen("$04$", &format!("${c:02}$"), 1);
        check_user("u", hash).map(|u| u.tokens)
    };
    assert_eq!(cost(4).unwrap(), 1.0);
    assert_eq!(cost(10).unwrap(), 1.0);
    assert_eq!(cost(11).unwrap(), 2.0);
    assert_eq!(cost(12).unwrap(), 4.0);
    assert!(cost(13).is_err());
    assert_eq!(
        Refusal::ALL.map(Refusal::name),
        [
            "missing",
            "malformed",
            "unknown_user",
            "wrong_password",
            "wrong_token",
            "rate_limited"
        ]
    );
}
