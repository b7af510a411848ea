//! Pieces every page shares: escaping, URL segments, the head with the embedded style sheet.

use std::{fmt::Write as _, sync::OnceLock};

use axum::http::{header, HeaderName};
use base64::Engine as _;

/// The style sheet of every page, embedded: the page works offline.
const STYLE: &str = include_str!("assets/page.css");

/// The script of the profile pages, embedded: the page works offline.
pub const SCRIPT: &str = include_str!("assets/page.js");

/// Headers of every page: the browser runs no script but the page's own (by its hash), loads
/// nothing from elsewhere, and takes the HTML for HTML. Names and values come from profiled
/// processes and are escaped; this is the second line if an escape were ever missed.
pub fn page_headers() -> [(HeaderName, &'static str); 2] {
    static POLICY: OnceLock<String> = OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        let hash = ring::digest::digest(&ring::digest::SHA256, SCRIPT.as_bytes());
        format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'unsafe-inline'; img-src 'self'; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            base64::engine::general_purpose::STANDARD.encode(hash.as_ref())
        )
    });
    [
        (header::CONTENT_SECURITY_POLICY, policy.as_str()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ]
}

/// Escapes text for HTML element content and attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes text for a URL path segment or a query value.
pub fn url_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The document's start up to `<body>`; `refresh`: reload every few seconds (a profile still
/// being captured).
pub fn head(title: &str, refresh: bool) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">{}\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        if refresh {
            "<meta http-equiv=\"refresh\" content=\"5\">"
        } else {
            ""
        },
        html(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_url_segments_are_escaped() {
        assert_eq!(html("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        assert_eq!(url_segment("a b/c.svg"), "a%20b%2Fc.svg");
        assert!(head("x<y", true).contains("<title>x&lt;y</title>"));
        assert!(head("x", true).contains("http-equiv=\"refresh\""));
        assert!(!head("x", false).contains("http-equiv"));
    }
}
