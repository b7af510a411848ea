//! What profilerd reads of a server's answer, which it does not control: a body read up to a
//! bound (a 300 MB error page must not become 300 MB of RSS), log excerpts without control
//! characters (a body or header must not forge or garble log lines), and `Retry-After` in
//! both of its forms.

use std::time::{Duration, SystemTime};

use reqwest::{header::HeaderMap, Response};

/// Longest excerpt of a server text (body, header) quoted in a log line.
const EXCERPT_CHARS: usize = 300;

/// The start of a response body.
pub(super) struct Body {
    pub bytes: Vec<u8>,
    /// The body went on past the bound; the rest was not read.
    pub truncated: bool,
}

/// Reads at most `max` bytes of the body, chunk by chunk; a longer body is left unread (the
/// connection is closed when the response drops). A body that breaks off keeps what came.
pub(super) async fn read_bounded(mut response: Response, max: usize) -> Body {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - bytes.len();
                if chunk.len() > room {
                    bytes.extend_from_slice(&chunk[..room]);
                    return Body {
                        bytes,
                        truncated: true,
                    };
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) | Err(_) => {
                return Body {
                    bytes,
                    truncated: false,
                }
            }
        }
    }
}

/// `text` fit for one log line: control characters (newlines, escapes) shown as `\u{..}`,
/// cut to a few hundred characters.
pub(super) fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.trim().chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `message` of a JSON error body, else the body itself, as an excerpt.
pub(super) fn server_message(body: &str) -> String {
    let message = body
        .split_once("\"message\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or(body, |(message, _)| message);
    excerpt(message)
}

/// A header's value as an excerpt (`None` when absent; non-UTF-8 bytes replaced).
pub(super) fn header_excerpt(
    headers: &HeaderMap,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    headers
        .get(name)
        .map(|v| excerpt(&String::from_utf8_lossy(v.as_bytes())))
}

/// How long the server asked us to wait, and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    pub wait: Duration,
    /// The header's value, as an excerpt.
    pub value: String,
}

/// `Retry-After: SECONDS` or `Retry-After: HTTP-date` (RFC 9110 10.2.3); a date in the past
/// is no wait, a value that is neither is ignored (the usual backoff applies).
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<RetryAfter> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let raw = raw.trim();
    let wait = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still "a long time": the cap applies.
        Duration::from_secs(raw.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        httpdate::parse_http_date(raw)
            .ok()?
            .duration_since(now)
            .unwrap_or_default()
    };
    Some(RetryAfter {
        wait,
        value: excerpt(raw),
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 00:00:00 GMT").unwrap();
        let wait = |v: &str| retry_after(&headers(v), now).map(|r| r.wait);
        assert_eq!(wait("999999"), Some(Duration::from_secs(999_999)));
        assert_eq!(wait(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(
            wait("Wed, 02 Dec 2026 00:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            wait("Tue, 01 Dec 2026 00:00:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        assert_eq!(wait("soon"), None);
        assert_eq!(wait("-1"), None);
        assert_eq!(
            wait("99999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(
            retry_after(&headers("999999"), now).unwrap().value,
            "999999"
        );
    }

    #[test]
    fn excerpts_are_one_bounded_line() {
        assert_eq!(excerpt("plain text\n"), "plain text");
        assert_eq!(
            excerpt("a\nlevel=ERROR forged\x1b[31m"),
            "a\\u{a}level=ERROR forged\\u{1b}[31m"
        );
        let long = excerpt(&"é".repeat(10_000));
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn server_messages_are_extracted_from_json() {
        assert_eq!(
            server_message(r#"{"code":"invalid_argument","message":"bad label"}"#),
            "bad label"
        );
        assert_eq!(server_message("plain text\n"), "plain text");
        assert_eq!(server_message("x\r\ny"), "x\\u{d}\\u{a}y");
    }
}
