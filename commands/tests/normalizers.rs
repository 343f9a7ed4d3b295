//! Properties of every provider's normalizer: no input makes it panic; a real payload with any one field
//! replaced by junk is either still understood or refused with an error (never a panic); and the same body
//! always normalizes to the same event.

use chrono::{DateTime, Utc};
use herald_commands::providers::{Normalized, Provider};
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

/// (provider, event name, fixture) for every real payload Herald keeps.
fn fixtures() -> Vec<(Provider, String, Value)> {
    let root = format!("{}/../tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    let providers = [
        ("github", Provider::Github),
        ("gitlab", Provider::Gitlab),
        ("jenkins", Provider::Jenkins),
        ("circleci", Provider::Circleci),
    ];
    for (dir, provider) in providers {
        let mut stack = vec![std::path::PathBuf::from(format!("{root}/{dir}"))];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            let event = match provider {
                Provider::Github => path
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string(),
                Provider::Gitlab if file.starts_with("job") => "Job Hook".to_owned(),
                Provider::Gitlab => "Pipeline Hook".to_owned(),
                Provider::Circleci => body["type"].as_str().unwrap_or("unknown").to_owned(),
                _ => "build".to_owned(),
            };
            all.push((provider, event, body));
        }
    }
    assert!(all.len() >= 40, "found {} fixtures", all.len());
    all
}

fn received() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// Every path to a scalar or container inside `value`.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn set(value: &mut Value, path: &[String], junk: Value) {
    let mut cursor = value;
    for key in path {
        cursor = match cursor {
            Value::Object(map) => map.get_mut(key).unwrap(),
            Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
            _ => return,
        };
    }
    *cursor = junk;
}

fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(Value::from("2016-08-12 15:23:28 UTC")),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
        any::<bool>().prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512), which in 0..5_usize) {
        let provider = Provider::ALL[which];
        for event in ["workflow_run", "workflow_job", "check_run", "status", "Pipeline Hook", "Job Hook", "job-completed", "build"] {
            let _ = provider.normalize(Uuid::nil(), event, &body, received());
        }
    }

    #[test]
    fn a_real_payload_with_one_field_replaced_never_panics(index in any::<prop::sample::Index>(), field in any::<prop::sample::Index>(), junk in junk()) {
        let all = fixtures();
        let (provider, event, body) = &all[index.index(all.len())];
        let mut all_paths = Vec::new();
        paths(body, &mut Vec::new(), &mut all_paths);
        let mut mutated = body.clone();
        set(&mut mutated, &all_paths[field.index(all_paths.len())], junk);
        let bytes = serde_json::to_vec(&mutated).unwrap();
        let first = provider.normalize(Uuid::nil(), event, &bytes, received());
        let second = provider.normalize(Uuid::nil(), event, &bytes, received());
        match (first, second) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "normalization is not deterministic"),
        }
    }
}

#[test]
fn every_real_payload_normalizes_to_a_build() {
    for (provider, event, body) in fixtures() {
        let bytes = serde_json::to_vec(&body).unwrap();
        let normalized = provider
            .normalize(Uuid::nil(), &event, &bytes, received())
            .unwrap_or_else(|e| panic!("{provider} {event}: {e}"));
        assert!(
            matches!(normalized, Normalized::Build(_) | Normalized::Ping { .. }),
            "{provider} {event}"
        );
    }
}
