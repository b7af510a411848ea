//! Section 1: `POST /ingest`, a pprof body (raw or multipart) named by the query string.

use std::collections::BTreeMap;

use axum::{
    body::to_bytes,
    extract::{FromRequest, Multipart, Request, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

use super::{
    gate, headers_of, log,
    validate::{is_label_name, validate_labels, validate_profile},
    Accepted, Reject, Store, MAX_BODY_BYTES,
};

/// Section 1: `app{k=v,...}` parsed and checked; 400 on a bad name.
fn parse_ingest_name(name: &str) -> Result<(String, Vec<(String, String)>), Reject> {
    let bad = |m: String| Reject::invalid(m);
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i..])),
        None => (name, None),
    };
    if app.is_empty()
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
    {
        return Err(bad(format!("invalid application name {app:?}")));
    }
    let mut labels = Vec::new();
    if let Some(rest) = rest {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| bad(format!("unterminated labels in {name:?}")))?;
        for pair in inner.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("label {pair:?} has no value")))?;
            if k == "__name__" {
                return Err(bad("label __name__ is reserved".into()));
            }
            if !is_label_name(k) {
                return Err(bad(format!("invalid label name {k:?}")));
            }
            labels.push((k.to_string(), v.to_string()));
        }
    }
    Ok((app.to_string(), labels))
}

fn parse_time(text: Option<&str>) -> Result<Option<i64>, Reject> {
    match text {
        None => Ok(None),
        Some(t) => t.parse::<i64>().map(Some).map_err(|_| {
            Reject::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_argument",
                format!("bad time {t:?}"),
            )
        }),
    }
}

/// Section 1: `POST /ingest`.
pub(super) async fn ingest(State(store): State<Store>, request: Request) -> Response {
    let headers = request.headers().clone();
    let response = match gate(&store, &headers) {
        Some(response) => response,
        None => match handle_ingest(&store, request).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(reject) => reject.into_response(),
        },
    };
    log(&store, "/ingest", &response);
    response
}

async fn handle_ingest(store: &Store, request: Request) -> Result<(), Reject> {
    let headers = request.headers().clone();
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .map(|q| url_pairs(q).collect())
        .unwrap_or_default();
    let (app, mut labels) = parse_ingest_name(query.get("name").map(String::as_str).unwrap_or(""))?;
    let unprocessable =
        |m: String| Reject::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_argument", m);
    let from = parse_time(query.get("from").map(String::as_str))?;
    let until = parse_time(query.get("until").map(String::as_str))?;
    if query.get("format").map(String::as_str) != Some("pprof") {
        return Err(unprocessable(
            "the stand-in implements format=pprof only".into(),
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let raw = if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| unprocessable(format!("bad multipart body: {e}")))?;
        let mut profile = None;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| unprocessable(e.to_string()))?
        {
            match field.name() {
                Some("profile") => {
                    profile = Some(
                        field
                            .bytes()
                            .await
                            .map_err(|e| unprocessable(e.to_string()))?,
                    )
                }
                Some("prev_profile") => {
                    return Err(unprocessable("prev_profile is not supported".into()))
                }
                _ => {}
            }
        }
        profile.ok_or_else(|| unprocessable("multipart body without a profile field".into()))?
    } else {
        to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "resource_exhausted",
                    "request body too large",
                )
            })?
    };
    let (profile, truncated) = validate_profile(&raw).map_err(|r| Reject {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        ..r
    })?;
    if profile.sample.is_empty() {
        return Ok(());
    }
    let cpu = profile
        .sample_type
        .iter()
        .any(|t| profile.string_table[t.r#type as usize] == "cpu");
    labels.retain(|(name, _)| !name.starts_with("__"));
    if !labels.iter().any(|(n, _)| n == "service_name") {
        labels.push(("service_name".into(), app.clone()));
    }
    if let Some(spy) = query.get("spyName") {
        labels.push(("pyroscope_spy".into(), spy.clone()));
    }
    labels.push((
        "__name__".into(),
        if cpu {
            "process_cpu".into()
        } else {
            app.clone()
        },
    ));
    validate_labels(&labels)?;
    store.lock().unwrap().accepted.push(Accepted {
        protocol: "ingest",
        labels: labels.into_iter().collect(),
        profile,
        headers: headers_of(&headers),
        from_until: Some((from.unwrap_or(0), until.unwrap_or(0))),
        truncated,
    });
    Ok(())
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
