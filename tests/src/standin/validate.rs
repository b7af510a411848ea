//! Section 4 of the specification: the checks on one pprof profile and on a series' labels.

use std::{
    io::Read,
    time::{SystemTime, UNIX_EPOCH},
};

use profilerd::pprof_proto::Profile;
use prost::Message;

use super::{
    Reject, MAX_LABEL_NAMES, MAX_NAME_LEN, MAX_PROFILE_BYTES, MAX_SAMPLES, MAX_STACK_DEPTH,
    MAX_SYMBOL_LEN, MAX_VALUE_LEN,
};

pub(super) fn gunzip_if_needed(bytes: &[u8], limit: usize) -> Result<Vec<u8>, Reject> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Reject::invalid(format!("bad gzip: {e}")))?;
    Ok(out)
}

/// Section 4: the checks on one pprof profile. Returns the profile (truncated where the server
/// truncates) and whether anything was truncated.
pub fn validate_profile(raw: &[u8]) -> Result<(Profile, bool), Reject> {
    let bytes = gunzip_if_needed(raw, MAX_PROFILE_BYTES)?;
    if bytes.len() > MAX_PROFILE_BYTES {
        return Err(Reject::invalid(format!(
            "uncompressed profile larger than {MAX_PROFILE_BYTES} bytes"
        )));
    }
    // prost refuses strings that are not UTF-8, as the server does.
    let mut profile = Profile::decode(&bytes[..])
        .map_err(|e| Reject::invalid(format!("malformed profile: {e}")))?;
    check_types_and_samples(&profile)?;
    check_table_entries(&profile)?;
    check_time(profile.time_nanos)?;
    let truncated = truncate(&mut profile);
    Ok((profile, truncated))
}

/// Whether a string index is inside the string table.
fn string_index(profile: &Profile, i: i64, what: &str) -> Result<(), Reject> {
    if i < 0 || i >= profile.string_table.len() as i64 {
        return Err(Reject::invalid(format!(
            "malformed profile: {what} string index {i} out of range"
        )));
    }
    Ok(())
}

/// The string table's first entry, the value types and the samples.
fn check_types_and_samples(profile: &Profile) -> Result<(), Reject> {
    let check = |i: i64, what: &str| string_index(profile, i, what);
    if profile.sample_type.is_empty() {
        return Err(Reject::invalid("malformed profile: no sample_type"));
    }
    if profile.string_table.first().map(String::as_str) != Some("") {
        return Err(Reject::invalid(
            "malformed profile: string_table[0] must be empty",
        ));
    }
    for ty in profile.sample_type.iter().chain(profile.period_type.iter()) {
        check(ty.r#type, "value type")?;
        check(ty.unit, "value unit")?;
    }
    for ty in &profile.sample_type {
        if profile.string_table[ty.r#type as usize].contains('-') {
            return Err(Reject::invalid("sample type names may not contain '-'"));
        }
    }
    if profile.sample.len() > MAX_SAMPLES {
        return Err(Reject::invalid(format!(
            "{} samples, at most {MAX_SAMPLES}",
            profile.sample.len()
        )));
    }
    for sample in &profile.sample {
        if sample.value.len() != profile.sample_type.len() {
            return Err(Reject::invalid(
                "sample value count differs from sample_type count",
            ));
        }
        for label in &sample.label {
            check(label.key, "label key")?;
            check(label.str, "label value")?;
            check(label.num_unit, "label unit")?;
        }
    }
    Ok(())
}

/// Ids and string indexes of mappings, locations, functions and the profile's own fields.
fn check_table_entries(profile: &Profile) -> Result<(), Reject> {
    let check = |i: i64, what: &str| string_index(profile, i, what);
    for mapping in &profile.mapping {
        if mapping.id == 0 {
            return Err(Reject::invalid("mapping id 0"));
        }
        check(mapping.filename, "mapping filename")?;
        check(mapping.build_id, "mapping build id")?;
    }
    for location in &profile.location {
        if location.id == 0 {
            return Err(Reject::invalid("location id 0"));
        }
    }
    for function in &profile.function {
        if function.id == 0 {
            return Err(Reject::invalid("function id 0"));
        }
        check(function.name, "function name")?;
        check(function.system_name, "function system name")?;
        check(function.filename, "function filename")?;
    }
    for &comment in &profile.comment {
        check(comment, "comment")?;
    }
    check(profile.drop_frames, "drop_frames")?;
    check(profile.keep_frames, "keep_frames")?;
    Ok(())
}

/// `time_nanos`, when set, inside the ingestion window.
fn check_time(time_nanos: i64) -> Result<(), Reject> {
    if time_nanos != 0 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let hour = 3_600_000_000_000i64;
        if time_nanos <= now - hour || time_nanos >= now + hour / 6 {
            return Err(Reject::invalid(
                "time_nanos outside the ingestion window (now-1h, now+10m)",
            ));
        }
    }
    Ok(())
}

/// Cuts stacks to [`MAX_STACK_DEPTH`] frames and strings to [`MAX_SYMBOL_LEN`] bytes, as the
/// server does; returns whether anything was cut.
fn truncate(profile: &mut Profile) -> bool {
    let mut truncated = false;
    for sample in &mut profile.sample {
        if sample.location_id.len() > MAX_STACK_DEPTH {
            sample.location_id.truncate(MAX_STACK_DEPTH);
            truncated = true;
        }
    }
    for s in &mut profile.string_table {
        if s.len() > MAX_SYMBOL_LEN {
            let mut end = MAX_SYMBOL_LEN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            truncated = true;
        }
    }
    truncated
}

pub(super) fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Section 4's label rules for one series.
pub(super) fn validate_labels(labels: &[(String, String)]) -> Result<(), Reject> {
    if labels.len() > MAX_LABEL_NAMES {
        return Err(Reject::invalid(format!(
            "{} label names, at most {MAX_LABEL_NAMES}",
            labels.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in labels {
        if name.len() > MAX_NAME_LEN {
            return Err(Reject::invalid(format!(
                "label name longer than {MAX_NAME_LEN}"
            )));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Reject::invalid(format!(
                "label value of {name} longer than {MAX_VALUE_LEN}"
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(Reject::invalid(format!("duplicate label name {name}")));
        }
    }
    Ok(())
}

pub(super) fn metric_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}
