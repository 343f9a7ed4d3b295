//! The deployment files say what a user relies on: `docker-compose.yml` starts every role with a working health
//! check, the `Dockerfile` ships a small non-root image, the CI workflow runs the README's test command and
//! builds and audits the image, and the Prometheus alerts only use metrics Herald exposes.
//!
//! The files are parsed as their tools would parse them, and every `herald …` command line and every service's
//! environment in them is checked against the `herald` binary itself (`--help`, `herald config check`), so a
//! renamed subcommand or setting breaks this test, not a deployment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_norway::Value;

/// The metrics Herald's processes expose and the alert rules were written for. Each must also be in the operators'
/// documentation, whose list ([`documented_metrics`]) is what the alert rules are checked against.
const PROMISED_METRICS: &[&str] = &[
    "herald_http_requests_total",
    "herald_http_request_duration_seconds",
    "herald_events_appended_total",
    "herald_outbox_depth",
    "herald_outbox_oldest_age_seconds",
    "herald_consumer_lag",
    "herald_deliveries_total",
    "herald_delivery_retries_total",
    "herald_dead_letters",
    "herald_delivery_queue_depth",
    "herald_cache_requests_total",
    "herald_circuit_breaker_open",
];

/// The services `docker-compose.yml` must define; all but the first two run the Herald image.
const COMPOSE_SERVICES: &[&str] = &[
    "postgres",
    "kafka",
    "migrate",
    "api",
    "relay",
    "projections",
    "planner",
    "delivery",
];
const HERALD_SERVICES: &[&str] = &[
    "migrate",
    "api",
    "relay",
    "projections",
    "planner",
    "delivery",
    "bot",
];

// ------------------------------------------------------------------------------------------------------------
// helpers

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// A YAML file as a value, with `<<` merge keys applied (as docker compose applies them).
fn yaml(relative: &str) -> Value {
    let mut value: Value = serde_norway::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{relative}: bad merge key: {e}"));
    value
}

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_mapping().and_then(|m| m.get(key))
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    get(value, key).and_then(Value::as_str)
}

/// A compose/CI command in exec form (a list of strings).
fn string_list(value: &Value, what: &str) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| {
            panic!("{what} should be a list of strings (exec form), found {value:?}")
        })
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("{what}: {other:?} is not a string"),
        })
        .collect()
}

/// Compose `environment:` as a map, whether written as a mapping or as a list of `KEY=value`. A variable
/// without a value (`KEY:` or `- KEY`) is passed through from where compose runs: `None` here.
fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    match get(service, "environment") {
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let value = match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                env.insert(k.as_str().unwrap_or_default().to_string(), value);
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items.iter().filter_map(Value::as_str) {
                match item.split_once('=') {
                    Some((k, v)) => env.insert(k.to_string(), Some(v.to_string())),
                    None => env.insert(item.to_string(), None),
                };
            }
        }
        _ => {}
    }
    env
}

/// Compose's interpolation of `${NAME:-default}`, `${NAME-default}`, `${NAME}` and `$$`, as it turns out when
/// none of the variables is set (what a fresh `docker compose up` gets).
fn interpolate_unset(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').expect("unclosed ${ in docker-compose.yml");
            let expr = &after[..end];
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

fn herald(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command.args(args);
    // Herald reads its settings from the environment; the test's own must not change what it parses.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("HERALD_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run herald {args:?}: {e}"))
}

/// The subcommands `herald --help` lists.
fn herald_subcommands() -> BTreeSet<String> {
    let out = herald(&["--help"]);
    assert!(out.status.success(), "herald --help failed: {out:?}");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut in_commands = false;
    let mut names = BTreeSet::new();
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next() {
                names.insert(name.to_string());
            }
        }
    }
    assert!(
        names.contains("run") && names.contains("migrate"),
        "could not read the subcommands from herald --help:\n{help}"
    );
    names
}

/// Panics unless `args` (without the program name) is a command line the herald binary accepts: its first
/// word is a subcommand listed by `herald --help`, and clap parses the whole line (checked with `--help`
/// appended, which parses every argument and value, then prints help instead of running anything).
fn assert_herald_accepts(args: &[String], subcommands: &BTreeSet<String>, what: &str) {
    let first = args
        .first()
        .unwrap_or_else(|| panic!("{what}: empty herald command line"));
    assert!(
        subcommands.contains(first),
        "{what}: `herald {}` is not a herald subcommand (herald --help lists {subcommands:?})",
        args.join(" ")
    );
    let mut line: Vec<&str> = args.iter().map(String::as_str).collect();
    line.push("--help");
    let out = herald(&line);
    assert!(
        out.status.success(),
        "{what}: herald rejects `herald {}`:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compose_services() -> BTreeMap<String, Value> {
    let compose = yaml("docker-compose.yml");
    let services = get(&compose, "services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has no services");
    services
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_string(), v.clone()))
        .collect()
}

/// The Docker health check's command line after `CMD` (exec form: distroless has no shell for `CMD-SHELL`).
fn healthcheck_command(service: &Value, name: &str) -> Vec<String> {
    let test = get(service, "healthcheck")
        .and_then(|h| get(h, "test"))
        .unwrap_or_else(|| panic!("service {name} has no healthcheck"));
    let test = string_list(test, &format!("service {name}: healthcheck.test"));
    assert_eq!(
        test.first().map(String::as_str),
        Some("CMD"),
        "service {name}: the health check must be in exec form [\"CMD\", …] (the image has no shell): {test:?}"
    );
    test[1..].to_vec()
}

// ------------------------------------------------------------------------------------------------------------
// the herald binary, as the checks below use it

#[test]
fn the_subcommand_check_tells_real_commands_from_others() {
    let subcommands = herald_subcommands();
    for real in [&["serve"][..], &["worker", "delivery"], &["migrate"]] {
        let args: Vec<String> = real.iter().map(|s| s.to_string()).collect();
        assert_herald_accepts(&args, &subcommands, "sanity");
    }
    for bogus in [&["worker", "nonsense"][..], &["serve", "--no-such-flag"]] {
        let mut line = bogus.to_vec();
        line.push("--help");
        assert!(
            !herald(&line).status.success(),
            "herald accepted `herald {}`: the check would not catch a typo",
            bogus.join(" ")
        );
    }
    assert!(!subcommands.contains("nonsense"));
}

// ------------------------------------------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_defines_every_service() {
    let services = compose_services();
    for name in COMPOSE_SERVICES {
        assert!(
            services.contains_key(*name),
            "docker-compose.yml has no `{name}` service"
        );
    }
    // Every service built from this repository, or running the Herald image, is one of Herald's roles.
    let herald_built: BTreeSet<&str> = services
        .iter()
        .filter(|(_, s)| {
            get(s, "build").is_some() || str_of(s, "image").is_some_and(|i| i.contains("herald"))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        herald_built,
        HERALD_SERVICES.iter().copied().collect::<BTreeSet<_>>(),
        "the services running Herald"
    );
}

#[test]
fn compose_herald_services_run_the_herald_image_with_real_commands() {
    let services = compose_services();
    let subcommands = herald_subcommands();
    for name in HERALD_SERVICES {
        let service = &services[*name];
        let image = str_of(service, "image").unwrap_or_default();
        assert!(
            image.contains("herald"),
            "service {name} does not run the herald image: {image:?}"
        );
        let build = get(service, "build").unwrap_or_else(|| panic!("service {name} has no build"));
        let context = build
            .as_str()
            .or_else(|| str_of(build, "context"))
            .unwrap_or_default();
        assert!(
            context == "." || context == "./",
            "service {name} is not built from this repository's Dockerfile: {build:?}"
        );
        let command =
            get(service, "command").unwrap_or_else(|| panic!("service {name} has no command"));
        let command = string_list(command, &format!("service {name}: command"));
        assert_herald_accepts(&command, &subcommands, &format!("service {name}: command"));
    }
    let command = |name: &str| string_list(&services[name]["command"], name);
    assert_eq!(command("migrate"), ["migrate"]);
    assert_eq!(command("api"), ["serve"]);
    assert_eq!(command("relay"), ["relay"]);
    for role in ["projections", "planner", "delivery", "bot"] {
        assert_eq!(command(role), ["worker", role], "service {role}");
    }
}

#[test]
fn compose_long_running_herald_services_have_health_checks() {
    let services = compose_services();
    for name in HERALD_SERVICES.iter().filter(|n| **n != "migrate") {
        let command = healthcheck_command(&services[*name], name);
        assert_eq!(
            command
                .iter()
                .take(2)
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["herald", "healthcheck"],
            "service {name}: the health check must run `herald healthcheck`"
        );
    }
    for name in ["postgres", "kafka"] {
        assert!(
            get(&services[name], "healthcheck").is_some(),
            "service {name} has no healthcheck, so Herald cannot wait for it"
        );
    }
}

/// Separate from the test above: it needs the `healthcheck` subcommand in the binary.
#[test]
fn compose_health_checks_run_a_real_herald_subcommand() {
    let services = compose_services();
    let subcommands = herald_subcommands();
    for name in HERALD_SERVICES.iter().filter(|n| **n != "migrate") {
        let command = healthcheck_command(&services[*name], name);
        assert_herald_accepts(
            &command[1..],
            &subcommands,
            &format!("service {name}: healthcheck"),
        );
    }
}

#[test]
fn compose_orders_startup_and_migrates_once() {
    let services = compose_services();
    for name in HERALD_SERVICES {
        let depends = get(&services[*name], "depends_on")
            .unwrap_or_else(|| panic!("service {name} has no depends_on"));
        let condition = |on: &str| {
            get(depends, on)
                .and_then(|d| str_of(d, "condition"))
                .map(str::to_string)
        };
        assert_eq!(
            condition("postgres").as_deref(),
            Some("service_healthy"),
            "service {name} must wait for a healthy postgres"
        );
        if *name != "migrate" {
            assert_eq!(
                condition("kafka").as_deref(),
                Some("service_healthy"),
                "service {name} must wait for a healthy kafka"
            );
            assert_eq!(
                condition("migrate").as_deref(),
                Some("service_completed_successfully"),
                "service {name} must wait for the migrations"
            );
        }
    }
}

#[test]
fn compose_runs_kafka_in_kraft_mode() {
    let services = compose_services();
    let env = environment(&services["kafka"]);
    let roles = env
        .get("KAFKA_PROCESS_ROLES")
        .cloned()
        .flatten()
        .expect("kafka has no KAFKA_PROCESS_ROLES: it would not run KRaft");
    let roles: BTreeSet<&str> = roles.split(',').map(str::trim).collect();
    assert!(
        roles.contains("controller") && roles.contains("broker"),
        "{roles:?}"
    );
    assert!(env.contains_key("KAFKA_CONTROLLER_QUORUM_VOTERS"));
    assert!(
        !env.keys().any(|k| k.contains("ZOOKEEPER")),
        "KRaft needs no ZooKeeper"
    );
    for name in HERALD_SERVICES.iter().filter(|n| **n != "migrate") {
        let brokers = environment(&services[*name])
            .get("HERALD_KAFKA_BROKERS")
            .cloned()
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            brokers, "kafka:9092",
            "service {name}: HERALD_KAFKA_BROKERS"
        );
    }
}

#[test]
fn compose_scales_the_workers_out() {
    let services = compose_services();
    for name in ["projections", "delivery"] {
        let service = &services[name];
        let replicas = get(service, "deploy")
            .and_then(|d| get(d, "replicas"))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        assert!(
            replicas >= 2,
            "service {name}: deploy.replicas is {replicas}"
        );
        // Either would stop `--scale` and replicas: one name, or one host port, for several containers.
        assert!(
            get(service, "container_name").is_none(),
            "{name} sets container_name"
        );
        assert!(
            get(service, "ports").is_none(),
            "{name} publishes a host port"
        );
    }
    let ports = string_list(
        get(&services["api"], "ports").expect("the api publishes no port"),
        "api ports",
    );
    assert!(
        ports.iter().any(|p| p.ends_with(":8080")),
        "the api does not publish its port 8080: {ports:?}"
    );
}

/// Herald refuses to start on an unknown `HERALD_*` variable or a bad value; `herald config check` says so
/// without starting anything. Each service's environment (on top of the image's) must pass it.
#[test]
fn compose_herald_environments_are_valid_configuration() {
    let services = compose_services();
    let image_env: Vec<(String, String)> = dockerfile_final_env();
    for name in HERALD_SERVICES {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command.args(["config", "check"]).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        for (key, value) in &image_env {
            command.env(key, value);
        }
        for (key, value) in environment(&services[*name]) {
            if let Some(value) = value {
                command.env(key, interpolate_unset(&value));
            }
        }
        let out = command.output().expect("run herald config check");
        assert!(
            out.status.success(),
            "service {name}: Herald refuses its configuration:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("herald config check prints JSON");
        if *name != "migrate" {
            // `herald healthcheck` asks 127.0.0.1:8080 by default.
            assert_eq!(
                config["listen"], "0.0.0.0:8080",
                "service {name} does not listen where its health check asks"
            );
            assert_eq!(config["kafka_brokers"], "kafka:9092", "service {name}");
        }
        assert!(
            config["database_url"]
                .as_str()
                .is_some_and(|u| u.contains("@postgres:5432/")),
            "service {name} does not use the postgres service: {}",
            config["database_url"]
        );
    }
}

/// The operator commands docker-compose.yml's comments tell users to run (`docker compose run --rm api …`).
#[test]
fn compose_documents_real_operator_commands() {
    let subcommands = herald_subcommands();
    let text = read("docker-compose.yml");
    let documented: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.split_once("docker compose run --rm api "))
        .map(|(_, args)| args.split_whitespace().map(String::from).collect())
        .collect();
    assert!(
        documented
            .iter()
            .any(|a| a.starts_with(&["keys".to_string(), "create".to_string()])),
        "docker-compose.yml does not say how to create the first admin API key"
    );
    for args in documented {
        assert_herald_accepts(&args, &subcommands, "docker-compose.yml comment");
    }
}

#[test]
fn compose_interpolation_is_read_as_compose_reads_it() {
    assert_eq!(
        interpolate_unset("postgres://h:${PW:-herald}@postgres/${DB-x}${NONE}$$y"),
        "postgres://h:herald@postgres/x$y"
    );
}

// ------------------------------------------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile's instructions as (INSTRUCTION, arguments), comments dropped and continuations joined.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        instructions.push((instruction.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    instructions
}

/// The `ENV` settings of the Dockerfile's final stage, as `KEY=value` pairs.
fn dockerfile_final_env() -> Vec<(String, String)> {
    let instructions = dockerfile_instructions();
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("the Dockerfile has no FROM");
    instructions[last_from..]
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, args)| {
            args.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn dockerfile_ships_a_distroless_nonroot_image() {
    let instructions = dockerfile_instructions();
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("the Dockerfile has no FROM");
    assert!(
        instructions[..last_from].iter().any(|(i, _)| i == "FROM"),
        "the Dockerfile is not multi-stage"
    );
    let final_stage = &instructions[last_from..];
    let base = final_stage[0]
        .1
        .split_whitespace()
        .next()
        .unwrap_or_default();
    assert!(
        base.starts_with("gcr.io/distroless/"),
        "the final stage is not distroless: {base}"
    );
    let user = final_stage
        .iter()
        .filter(|(i, _)| i == "USER")
        .map(|(_, a)| a.as_str())
        .next_back();
    let nonroot_user = user.is_some_and(|u| u.starts_with("nonroot") || u.starts_with("65532"));
    assert!(
        base.ends_with(":nonroot") || nonroot_user,
        "the final stage runs as root: FROM {base}, USER {user:?}"
    );
    if let Some(user) = user {
        assert!(
            !user.starts_with("root") && !user.starts_with('0'),
            "USER {user}"
        );
    }

    let args = |name: &str| -> Vec<String> {
        final_stage
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert_eq!(args("ENTRYPOINT"), [r#"["herald"]"#]);
    assert_eq!(args("CMD"), [r#"["run"]"#]);
    assert!(
        args("EXPOSE").iter().any(|a| a == "8080"),
        "{:?}",
        args("EXPOSE")
    );
    let env = args("ENV").join(" ");
    assert!(env.contains("HERALD_LISTEN=0.0.0.0:8080"), "ENV {env}");
    assert!(env.contains("HERALD_LOG_FORMAT=json"), "ENV {env}");
    assert!(
        args("COPY").iter().any(|a| a.starts_with("--from=")),
        "the final stage copies nothing from the build stage"
    );
}

#[test]
fn dockerfile_builds_the_locked_release_binary_of_every_workspace_crate() {
    let instructions = dockerfile_instructions();
    let runs: Vec<&str> = instructions
        .iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(
        runs.iter()
            .any(|r| r.contains("cargo build --release --locked --bin herald")),
        "no `cargo build --release --locked --bin herald` in {runs:?}"
    );
    assert!(
        instructions.iter().any(|(i, a)| i == "COPY" && a == ". ."),
        "the sources are never copied in"
    );

    // The dependency layer copies every workspace member's manifest and gives it a placeholder source;
    // a member missing there fails the image build.
    let manifest = read("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("Cargo.toml has no workspace members");
    let members: Vec<&str> = members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| !m.is_empty())
        .collect();
    assert!(!members.is_empty(), "cannot read {members_line}");
    let copies: Vec<&str> = instructions
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    let placeholder_loop = runs
        .iter()
        .find(|r| r.contains("for crate in"))
        .expect("no placeholder sources for the dependency layer");
    for member in members {
        assert!(
            copies.iter().any(|c| c
                .split_whitespace()
                .any(|w| w == format!("{member}/Cargo.toml"))),
            "the Dockerfile does not copy {member}/Cargo.toml before building the dependencies"
        );
        assert!(
            placeholder_loop
                .split_whitespace()
                .any(|w| w.trim_end_matches(';') == member),
            "the Dockerfile gives {member} no placeholder source"
        );
    }
}

#[test]
fn dockerfile_health_check_and_default_command_are_herald_commands() {
    let instructions = dockerfile_instructions();
    let subcommands = herald_subcommands();
    let (_, cmd) = instructions
        .iter()
        .rfind(|(i, _)| i == "CMD")
        .expect("no CMD");
    let cmd: Vec<String> = serde_norway::from_str(cmd).expect("CMD in exec form");
    assert_herald_accepts(&cmd, &subcommands, "Dockerfile CMD");
    if let Some((_, healthcheck)) = instructions.iter().rfind(|(i, _)| i == "HEALTHCHECK") {
        let exec = healthcheck
            .split_once("CMD ")
            .map(|(_, e)| e)
            .expect("HEALTHCHECK without CMD");
        let exec: Vec<String> = serde_norway::from_str(exec).expect("HEALTHCHECK CMD in exec form");
        assert_eq!(exec[0], "herald");
        assert_herald_accepts(&exec[1..], &subcommands, "Dockerfile HEALTHCHECK");
    }
}

#[test]
fn dockerignore_keeps_build_output_and_history_out_of_the_context() {
    let ignore = read(".dockerignore");
    let entries: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    for needed in ["target", ".git"] {
        assert!(entries.contains(needed), ".dockerignore lacks {needed}");
    }
    for kept in ["Cargo.lock", "Cargo.toml", "src", "migrations"] {
        assert!(
            !entries.contains(kept),
            ".dockerignore must not exclude {kept}"
        );
    }
}

// ------------------------------------------------------------------------------------------------------------
// .github/workflows/ci.yml and .ci/run

/// The command in README.md's code block that follows the words "test suite".
fn readme_test_command() -> String {
    let readme = read("README.md");
    let after = readme
        .to_lowercase()
        .find("test suite")
        .map(|at| &readme[at..])
        .expect("README.md does not mention the test suite");
    let block = after
        .split("```")
        .nth(1)
        .expect("no code block after README's test suite paragraph");
    let commands: Vec<&str> = block
        .lines()
        .skip(1) // the info string, e.g. `sh`
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        commands.len(),
        1,
        "README's test block should hold one command: {commands:?}"
    );
    commands[0].to_string()
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let command = readme_test_command();
    let script = read(".ci/run");
    let steps: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !l.starts_with("set ") && !l.starts_with("cd "))
        .collect();
    assert_eq!(
        steps
            .iter()
            .map(|s| s.trim_start_matches("exec "))
            .collect::<Vec<_>>(),
        [command.as_str()],
        ".ci/run should run exactly README's test command"
    );

    let workflow = yaml(".github/workflows/ci.yml");
    let jobs = get(&workflow, "jobs").expect("the workflow has no jobs");
    let test_steps = get(jobs, "test")
        .and_then(|j| get(j, "steps"))
        .and_then(Value::as_sequence)
        .expect("the workflow has no test job with steps");
    assert!(
        test_steps
            .iter()
            .any(|s| str_of(s, "run").map(str::trim) == Some("bash .ci/run")),
        "the test job does not run `bash .ci/run`"
    );
}

/// Every step of every job, with its job's name.
fn workflow_steps() -> Vec<(String, Value)> {
    let workflow = yaml(".github/workflows/ci.yml");
    let jobs = get(&workflow, "jobs")
        .and_then(Value::as_mapping)
        .expect("the workflow has no jobs");
    let mut steps = Vec::new();
    for (name, job) in jobs {
        for step in get(job, "steps")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            steps.push((name.as_str().unwrap_or_default().to_string(), step.clone()));
        }
    }
    steps
}

#[test]
fn ci_builds_the_image_and_checks_its_size() {
    let steps = workflow_steps();
    let (job, build) = steps
        .iter()
        .find(|(_, s)| {
            str_of(s, "uses").is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("no job builds the image with docker/build-push-action");
    let with = get(build, "with").expect("build-push-action without `with`");
    assert_eq!(
        get(with, "push"),
        Some(&Value::Bool(false)),
        "the CI image must not be pushed"
    );
    let same_job: Vec<&str> = steps
        .iter()
        .filter(|(j, _)| j == job)
        .filter_map(|(_, s)| str_of(s, "run"))
        .collect();
    assert!(
        same_job
            .iter()
            .any(|r| r.contains("docker image inspect") && r.contains(".Size")),
        "job {job} does not check the image size"
    );
    let limit = get(
        get(get(&yaml(".github/workflows/ci.yml"), "jobs").unwrap(), job).unwrap(),
        "env",
    )
    .and_then(|e| str_of(e, "MAX_IMAGE_BYTES"))
    .and_then(|l| l.parse::<u64>().ok());
    if let Some(limit) = limit {
        assert!(limit <= 40_000_000, "the size limit {limit} is above 40 MB");
    }
}

#[test]
fn ci_runs_cargo_deny_with_a_config() {
    let steps = workflow_steps();
    assert!(
        steps.iter().any(|(_, s)| str_of(s, "uses")
            .is_some_and(|u| u.starts_with("EmbarkStudios/cargo-deny-action@"))),
        "no job runs cargo-deny"
    );
    let deny = read("deny.toml");
    for section in ["[advisories]", "[licenses]", "[bans]", "[sources]"] {
        assert!(deny.contains(section), "deny.toml has no {section}");
    }
}

// ------------------------------------------------------------------------------------------------------------
// deploy/prometheus/alerts.yml

/// The `herald_*` metric names an expression uses (a histogram's `_bucket`, `_sum`, `_count` series count as
/// the histogram).
fn herald_metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("herald_") {
        let start = at + found;
        let preceded_by_ident = start > 0 && {
            let c = bytes[start - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if !preceded_by_ident {
            names.insert(expr[start..end].to_string());
        }
        at = end;
    }
    names
}

/// The metric names listed under the "Metrics" heading of docs/operations.md (the operators' reference).
fn documented_metrics() -> BTreeSet<String> {
    let doc = read("docs/operations.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Metrics"))
        .expect("docs/operations.md has no \"## Metrics\" section");
    let names = herald_metrics_in(section);
    assert!(
        !names.is_empty(),
        "the Metrics section of docs/operations.md names no herald_* metric"
    );
    names
}

fn is_documented(metric: &str, documented: &BTreeSet<String>) -> bool {
    documented.contains(metric)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            metric
                .strip_suffix(suffix)
                .is_some_and(|base| base.ends_with("_seconds") && documented.contains(base))
        })
}

#[test]
fn alerts_are_complete_rules_over_documented_metrics() {
    let documented = documented_metrics();
    for promised in PROMISED_METRICS {
        assert!(
            documented.contains(*promised),
            "{promised} is not in the Metrics section of docs/operations.md"
        );
    }
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let groups = get(&alerts, "groups")
        .and_then(Value::as_sequence)
        .expect("alerts.yml has no groups");
    let mut names = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut exprs = Vec::new();
    for group in groups {
        let group_name = str_of(group, "name").expect("a rule group without a name");
        let rules = get(group, "rules")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("group {group_name} has no rules"));
        for rule in rules {
            let alert = str_of(rule, "alert")
                .unwrap_or_else(|| panic!("a rule in {group_name} has no alert"));
            assert!(
                names.insert(alert.to_string()),
                "alert {alert} is defined twice"
            );
            let expr = str_of(rule, "expr").unwrap_or_else(|| panic!("{alert} has no expr"));
            assert!(!expr.trim().is_empty(), "{alert}: empty expr");
            assert!(get(rule, "for").is_some(), "{alert} has no `for`");
            let severity = get(rule, "labels")
                .and_then(|l| str_of(l, "severity"))
                .unwrap_or_else(|| panic!("{alert} has no labels.severity"));
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{alert}: severity {severity}"
            );
            let annotations =
                get(rule, "annotations").unwrap_or_else(|| panic!("{alert} has no annotations"));
            for key in ["summary", "description"] {
                assert!(
                    str_of(annotations, key).is_some_and(|s| !s.trim().is_empty()),
                    "{alert} has no annotations.{key}"
                );
            }
            for metric in herald_metrics_in(expr) {
                assert!(
                    is_documented(&metric, &documented),
                    "{alert} uses {metric}, which is not a documented Herald metric"
                );
                used.insert(metric);
            }
            exprs.push(expr.to_string());
        }
    }
    // What operators were promised alerts for.
    for metric in [
        "herald_consumer_lag",
        "herald_outbox_depth",
        "herald_outbox_oldest_age_seconds",
        "herald_dead_letters",
        "herald_circuit_breaker_open",
        "herald_http_requests_total",
        "herald_deliveries_total",
    ] {
        assert!(used.contains(metric), "no alert uses {metric}");
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("up{") || e.contains("up ==")),
        "no alert for a Herald process being down (`up == 0`)"
    );
}

#[test]
fn the_metric_name_scanner_reads_expressions() {
    let found = herald_metrics_in(
        r#"sum(rate(herald_http_requests_total{status=~"5.."}[5m])) / x_herald_other + herald_outbox_depth"#,
    );
    assert_eq!(
        found,
        ["herald_http_requests_total", "herald_outbox_depth"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let documented: BTreeSet<String> = [
        "herald_http_request_duration_seconds",
        "herald_outbox_depth",
    ]
    .map(String::from)
    .into_iter()
    .collect();
    assert!(is_documented(
        "herald_http_request_duration_seconds_bucket",
        &documented
    ));
    assert!(!is_documented("herald_outbox_depth_count", &documented));
    assert!(!is_documented("herald_no_such_metric", &documented));
}
