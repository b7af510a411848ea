//! The Pyroscope stand-in enforces every validation rule of the server, with its status codes
//! and error bodies: each malformed case is rejected, the valid ones are accepted.

use std::{
    io::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use profiler_tests::standin::StandIn;
use profilerd::{
    pprof_proto as pb,
    push_proto::{LabelPair, PushRequest, RawProfileSeries, RawSample},
};
use prost::Message;
use reqwest::blocking::Client;

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A small valid CPU profile: main -> hot, 5 samples.
fn valid() -> pb::Profile {
    let strings = ["", "samples", "count", "cpu", "nanoseconds", "main", "hot"];
    pb::Profile {
        sample_type: vec![
            pb::ValueType { r#type: 1, unit: 2 },
            pb::ValueType { r#type: 3, unit: 4 },
        ],
        period_type: Some(pb::ValueType { r#type: 3, unit: 4 }),
        period: 10_000_000,
        string_table: strings.iter().map(|s| s.to_string()).collect(),
        function: vec![
            pb::Function {
                id: 1,
                name: 5,
                system_name: 5,
                ..Default::default()
            },
            pb::Function {
                id: 2,
                name: 6,
                system_name: 6,
                ..Default::default()
            },
        ],
        location: vec![
            pb::Location {
                id: 1,
                line: vec![pb::Line {
                    function_id: 1,
                    line: 1,
                    column: 0,
                }],
                ..Default::default()
            },
            pb::Location {
                id: 2,
                line: vec![pb::Line {
                    function_id: 2,
                    line: 2,
                    column: 0,
                }],
                ..Default::default()
            },
        ],
        sample: vec![pb::Sample {
            location_id: vec![2, 1],
            value: vec![5, 50_000_000],
            label: vec![],
        }],
        time_nanos: now_nanos(),
        duration_nanos: 1_000_000_000,
        ..Default::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| LabelPair {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

fn default_labels() -> Vec<LabelPair> {
    labels(&[("__name__", "process_cpu"), ("service_name", "svc")])
}

/// Pushes raw profile bytes with the given labels; returns (status, body).
fn push_raw(standin: &StandIn, labels: Vec<LabelPair>, raw: Vec<u8>) -> (u16, String) {
    let request = PushRequest {
        series: vec![RawProfileSeries {
            labels,
            samples: vec![RawSample {
                raw_profile: raw,
                id: String::new(),
            }],
        }],
    };
    let response = Client::new()
        .post(format!("{}/push.v1.PusherService/Push", standin.url()))
        .header("Content-Type", "application/proto")
        .header("Content-Encoding", "gzip")
        .body(gzip(&request.encode_to_vec()))
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn push(standin: &StandIn, labels: Vec<LabelPair>, profile: &pb::Profile) -> (u16, String) {
    push_raw(standin, labels, gzip(&profile.encode_to_vec()))
}

fn ingest(standin: &StandIn, name: &str, raw: Vec<u8>) -> (u16, String) {
    let response = Client::new()
        .post(format!("{}/ingest", standin.url()))
        .query(&[
            ("name", name),
            ("from", "1700000000"),
            ("until", "1700000010"),
            ("format", "pprof"),
            ("spyName", "t"),
        ])
        .body(raw)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn assert_rejected(result: (u16, String), status: u16, needle: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    let body: serde_json::Value = serde_json::from_str(&result.1).expect("JSON error body");
    assert!(body["code"].is_string(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
}

#[test]
fn valid_profiles_are_accepted_on_both_endpoints() {
    let standin = StandIn::start();
    assert_eq!(push(&standin, default_labels(), &valid()).0, 200);
    assert_eq!(
        ingest(&standin, "svc{env=prod}", gzip(&valid().encode_to_vec())).0,
        200
    );
    // Not gzipped: the server sniffs the magic.
    assert_eq!(ingest(&standin, "svc", valid().encode_to_vec()).0, 200);
    let accepted = standin.accepted();
    assert_eq!(accepted.len(), 3);
    assert_eq!(accepted[0].label("service_name"), Some("svc"));
    assert_eq!(accepted[1].label("env"), Some("prod"));
    assert_eq!(
        accepted[1].label("__name__"),
        Some("process_cpu"),
        "derived from the cpu sample type"
    );
    assert_eq!(accepted[1].label("pyroscope_spy"), Some("t"));
    assert_eq!(accepted[1].from_until, Some((1_700_000_000, 1_700_000_010)));
    assert!(accepted
        .iter()
        .all(|a| a.samples() == 5 && a.has_function("hot")));
}

/// Turns a valid profile into a malformed one.
type Mutation = Box<dyn Fn(&mut pb::Profile)>;

#[test]
fn each_malformed_profile_is_rejected() {
    let standin = StandIn::start();
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "empty sample_type",
            Box::new(|p| p.sample_type.clear()),
            "sample_type",
        ),
        (
            "string_table[0] not empty",
            Box::new(|p| p.string_table[0] = "x".into()),
            "string_table[0]",
        ),
        (
            "string index out of range",
            Box::new(|p| p.function[0].name = 99),
            "out of range",
        ),
        (
            "location id 0",
            Box::new(|p| p.location[0].id = 0),
            "location id 0",
        ),
        (
            "function id 0",
            Box::new(|p| p.function[0].id = 0),
            "function id 0",
        ),
        (
            "value count",
            Box::new(|p| p.sample[0].value.push(1)),
            "value count",
        ),
        (
            "'-' in a sample type",
            Box::new(|p| p.string_table[3] = "cpu-time".into()),
            "'-'",
        ),
        (
            "too many samples",
            Box::new(|p| {
                let sample = p.sample[0].clone();
                p.sample = vec![sample; 16_001];
            }),
            "at most 16000",
        ),
        (
            "too old",
            Box::new(|p| p.time_nanos = now_nanos() - 2 * 3_600_000_000_000),
            "ingestion window",
        ),
        (
            "too new",
            Box::new(|p| p.time_nanos = now_nanos() + 3_600_000_000_000),
            "ingestion window",
        ),
        (
            "over 4 MiB",
            Box::new(|p| p.string_table.push("x".repeat(5 << 20))),
            "larger than",
        ),
    ];
    for (what, mutate, needle) in cases {
        let mut profile = valid();
        mutate(&mut profile);
        let raw = gzip(&profile.encode_to_vec());
        assert_rejected(
            push_raw(&standin, default_labels(), raw.clone()),
            400,
            needle,
        );
        assert_rejected(ingest(&standin, "svc", raw), 422, needle);
        eprintln!("rejected: {what}");
    }

    // Strings must be UTF-8: patch a valid profile's bytes.
    let mut profile = valid();
    profile.string_table[6] = "H\u{7f}T".into();
    let mut bytes = profile.encode_to_vec();
    let at = bytes.windows(3).position(|w| w == b"H\x7fT").unwrap();
    bytes[at + 1] = 0xff;
    assert_rejected(
        push_raw(&standin, default_labels(), gzip(&bytes)),
        400,
        "malformed",
    );
    assert!(
        standin.accepted().is_empty(),
        "nothing malformed was accepted"
    );
}

#[test]
fn deep_stacks_and_long_symbols_are_truncated_not_rejected() {
    let standin = StandIn::start();
    let mut profile = valid();
    profile.sample[0].location_id = [2u64, 1].repeat(600);
    profile.string_table[6] = "h".repeat(70_000);
    assert_eq!(push(&standin, default_labels(), &profile).0, 200);
    let accepted = &standin.accepted()[0];
    assert!(accepted.truncated);
    assert_eq!(accepted.profile.sample[0].location_id.len(), 1000);
    assert_eq!(accepted.profile.string_table[6].len(), 65_535);
}

#[test]
fn series_labels_are_checked() {
    let standin = StandIn::start();
    let mut many = default_labels();
    many.extend((0..29).map(|i| LabelPair {
        name: format!("l{i}"),
        value: "v".into(),
    }));
    assert_rejected(push(&standin, many, &valid()), 400, "at most 30");
    // One label more than the defaults, each breaking one rule.
    for (name, value, needle) in [
        ("n".repeat(1025), "v".to_string(), "label name longer"),
        ("n".into(), "v".repeat(2049), "value of n longer"),
        ("service_name".into(), "again".into(), "duplicate"),
    ] {
        let mut series = default_labels();
        series.push(LabelPair { name, value });
        assert_rejected(push(&standin, series, &valid()), 400, needle);
    }
    assert_rejected(
        push(&standin, labels(&[("__name__", "process_cpu")]), &valid()),
        400,
        "service_name",
    );
    assert_rejected(
        push(
            &standin,
            labels(&[("__name__", "1bad"), ("service_name", "s")]),
            &valid(),
        ),
        400,
        "__name__",
    );
    assert_rejected(
        push(
            &standin,
            labels(&[
                ("__name__", "process_cpu"),
                ("service_name", "s"),
                ("a-b", "v"),
            ]),
            &valid(),
        ),
        400,
        "invalid label name",
    );

    let raw = gzip(&valid().encode_to_vec());
    assert_rejected(
        ingest(&standin, "bad app!", raw.clone()),
        400,
        "application name",
    );
    assert_rejected(
        ingest(&standin, "svc{__name__=x}", raw.clone()),
        400,
        "reserved",
    );
    assert_rejected(
        ingest(&standin, "svc{a-b=x}", raw.clone()),
        400,
        "invalid label name",
    );
    assert_rejected(ingest(&standin, "svc{a=1", raw), 400, "unterminated");
    assert!(standin.accepted().is_empty());
}

/// Standard base64 with padding, written here so that the stand-in's decoder is checked
/// against an independent encoder.
fn base64(raw: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in raw.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                T[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[test]
fn protocol_details_status_codes_and_tenancy() {
    let mut standin = StandIn::start();
    // multipart /ingest with a profile field is accepted; prev_profile is refused with 422.
    let form = reqwest::blocking::multipart::Form::new().part(
        "profile",
        reqwest::blocking::multipart::Part::bytes(gzip(&valid().encode_to_vec())).file_name("p"),
    );
    let response = Client::new()
        .post(format!("{}/ingest?name=svc&format=pprof", standin.url()))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "profile",
            reqwest::blocking::multipart::Part::bytes(valid().encode_to_vec()).file_name("p"),
        )
        .part(
            "prev_profile",
            reqwest::blocking::multipart::Part::bytes(valid().encode_to_vec()).file_name("q"),
        );
    let response = Client::new()
        .post(format!("{}/ingest?name=svc&format=pprof", standin.url()))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);

    // An empty profile is a no-op.
    let mut empty = valid();
    empty.sample.clear();
    assert_eq!(ingest(&standin, "svc", gzip(&empty.encode_to_vec())).0, 200);
    assert_eq!(standin.accepted().len(), 1);

    // JSON push, bytes as base64.
    let raw = valid().encode_to_vec();
    let b64 = base64(&raw);
    let json = serde_json::json!({"series": [{"labels": [{"name": "__name__", "value": "process_cpu"}, {"name": "service_name", "value": "j"}], "samples": [{"rawProfile": b64}]}]});
    let response = Client::new()
        .post(format!("{}/push.v1.PusherService/Push", standin.url()))
        .header("Content-Type", "application/json")
        .body(json.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        standin.accepted().last().unwrap().label("service_name"),
        Some("j")
    );
    let response = Client::new()
        .post(format!("{}/push.v1.PusherService/Push", standin.url()))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);

    // Multi-tenant: no X-Scope-OrgID is 401.
    standin.set_multi_tenant(true);
    assert_rejected(push(&standin, default_labels(), &valid()), 401, "org id");
    standin.set_multi_tenant(false);

    // Injected 429 carries Retry-After; 503 is a server error.
    standin.inject(&[(429, Some(7)), (503, None)]);
    let response = Client::new()
        .post(format!("{}/push.v1.PusherService/Push", standin.url()))
        .header("Content-Type", "application/proto")
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_rejected(push(&standin, default_labels(), &valid()), 503, "injected");

    // Stopped, nothing listens; restarted on the same port, what was accepted is kept.
    let before = standin.accepted().len();
    standin.stop();
    assert!(Client::new()
        .post(format!("{}/ingest", standin.url()))
        .send()
        .is_err());
    standin.restart();
    assert_eq!(push(&standin, default_labels(), &valid()).0, 200);
    assert_eq!(standin.accepted().len(), before + 1);
}
