//! Section 2: `POST /push.v1.PusherService/Push`, protobuf or JSON.

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use profilerd::push_proto::PushRequest;
use prost::Message;

use super::{
    gate, headers_of, log,
    validate::{
        gunzip_if_needed, is_label_name, metric_name_ok, validate_labels, validate_profile,
    },
    Accepted, Reject, Store, MAX_BODY_BYTES,
};

/// Section 2: `POST /push.v1.PusherService/Push`.
pub(super) async fn push(State(store): State<Store>, headers: HeaderMap, body: Bytes) -> Response {
    let response = match gate(&store, &headers) {
        Some(response) => response,
        None => match handle_push(&store, &headers, &body) {
            Ok(()) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/proto")],
                Vec::new(),
            )
                .into_response(),
            Err(reject) => reject.into_response(),
        },
    };
    log(&store, "/push.v1.PusherService/Push", &response);
    response
}

fn handle_push(store: &Store, headers: &HeaderMap, body: &[u8]) -> Result<(), Reject> {
    let body = match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
        Some(b"gzip") => gunzip_if_needed(body, MAX_BODY_BYTES)?,
        Some(other) => {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unimplemented",
                format!("unknown compression {}", String::from_utf8_lossy(other)),
            ))
        }
        None => body.to_vec(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let request = match content_type {
        "application/proto" => PushRequest::decode(&body[..])
            .map_err(|e| Reject::invalid(format!("bad PushRequest: {e}")))?,
        "application/json" => push_from_json(&body)?,
        other => {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unimplemented",
                format!("content type {other:?} is neither application/proto nor application/json"),
            ))
        }
    };
    let mut accepted = Vec::new();
    for series in request.series {
        let labels: Vec<(String, String)> = series
            .labels
            .into_iter()
            .map(|l| (l.name, l.value))
            .collect();
        validate_labels(&labels)?;
        let get = |n: &str| {
            labels
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| v.as_str())
        };
        if get("service_name").is_none_or(str::is_empty) {
            return Err(Reject::invalid("service_name label is required"));
        }
        if !get("__name__").is_some_and(metric_name_ok) {
            return Err(Reject::invalid("__name__ label is missing or invalid"));
        }
        for (name, _) in &labels {
            if name != "__name__" && !is_label_name(name) {
                return Err(Reject::invalid(format!("invalid label name {name:?}")));
            }
        }
        for sample in series.samples {
            let (profile, truncated) = validate_profile(&sample.raw_profile)?;
            accepted.push(Accepted {
                protocol: "push",
                labels: labels.iter().cloned().collect(),
                profile,
                headers: headers_of(headers),
                from_until: None,
                truncated,
            });
        }
    }
    store.lock().unwrap().accepted.extend(accepted);
    Ok(())
}

fn push_from_json(body: &[u8]) -> Result<PushRequest, Reject> {
    use profilerd::push_proto::{LabelPair, RawProfileSeries, RawSample};
    let bad = |m: &str| Reject::invalid(format!("bad JSON PushRequest: {m}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    let mut request = PushRequest::default();
    for series in value["series"].as_array().cloned().unwrap_or_default() {
        let mut out = RawProfileSeries::default();
        for label in series["labels"].as_array().cloned().unwrap_or_default() {
            out.labels.push(LabelPair {
                name: label["name"].as_str().unwrap_or("").to_string(),
                value: label["value"].as_str().unwrap_or("").to_string(),
            });
        }
        for sample in series["samples"].as_array().cloned().unwrap_or_default() {
            let encoded = sample["rawProfile"]
                .as_str()
                .ok_or_else(|| bad("rawProfile missing"))?;
            out.samples.push(RawSample {
                raw_profile: base64_decode(encoded)
                    .ok_or_else(|| bad("rawProfile is not base64"))?,
                id: sample["ID"].as_str().unwrap_or("").to_string(),
            });
        }
        request.series.push(out);
    }
    Ok(request)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}
