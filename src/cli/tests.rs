use clap::Parser;
use serde_json::json;

use super::acl::{AclCommand, DnsClientCommand, PolicyCommand, TokenCommand, TsigKeyCommand};
use super::*;

fn try_parse(args: &[&str]) -> Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("maxine").chain(args.iter().copied())).map(|c| c.command)
}

fn parse(args: &[&str]) -> Command {
    try_parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The API flags of a subcommand; None for those that do not call the API.
/// No catch-all arm: a new subcommand must say which it is.
fn client_of(cmd: &Command) -> Option<&api::ClientArgs> {
    match cmd {
        Command::Serve(_) | Command::Lookup(_) | Command::Audit(_) | Command::Tls(_) => None,
        Command::Acl(AclCommand::HashPassword) => None,
        Command::Snapshot(snapshot::SnapshotCommand::Restore(_)) => None,
        Command::Snapshot(snapshot::SnapshotCommand::Save(a)) => Some(&a.client),
        Command::Register(a) => Some(&a.client),
        Command::Deregister(a) => Some(&a.client),
        Command::Services(c) => Some(c),
        Command::Kv(k) => Some(k.client()),
        Command::Intention(i) => Some(i.client()),
        Command::Blacklist(b) => Some(b.client()),
        Command::Watch(a) => Some(a.client()),
        Command::Acl(AclCommand::Bootstrap(c)) => Some(c),
        Command::Acl(AclCommand::Policy(p)) => Some(match p {
            PolicyCommand::Put(a) => &a.client,
            PolicyCommand::List(c) => c,
            PolicyCommand::Get(a) | PolicyCommand::Delete(a) => &a.client,
        }),
        Command::Acl(AclCommand::DnsClient(d)) => Some(match d {
            DnsClientCommand::Put(a) => &a.network.client,
            DnsClientCommand::List(c) => c,
            DnsClientCommand::Get(a) | DnsClientCommand::Delete(a) => &a.client,
        }),
        Command::Acl(AclCommand::TsigKey(k)) => Some(match k {
            TsigKeyCommand::Put(a) => &a.key.client,
            TsigKeyCommand::List(c) => c,
            TsigKeyCommand::Get(a) | TsigKeyCommand::Delete(a) => &a.client,
        }),
        Command::Acl(AclCommand::Token(t)) => Some(match t {
            TokenCommand::Create(a) => &a.client,
            TokenCommand::Update(a) => &a.token.client,
            TokenCommand::List(c) | TokenCommand::Current(c) => c,
            TokenCommand::Get(a) | TokenCommand::Delete(a) => &a.client,
        }),
    }
}

const API_SUBCOMMANDS: &[&[&str]] = &[
    &["register", "s", "i", "--address", "10.0.0.1", "--port", "1"],
    &["deregister", "s", "i"],
    &["services"],
    &["snapshot", "save", "backup.snap"],
    &["acl", "bootstrap"],
    &["acl", "policy", "put", "ops", "--rules", "{}"],
    &["acl", "policy", "list"],
    &["acl", "policy", "get", "ops"],
    &["acl", "policy", "delete", "ops"],
    &["acl", "token", "create"],
    &["acl", "token", "list"],
    &["acl", "token", "get", "acc-1"],
    &["acl", "token", "update", "anonymous", "--policy", "viewer"],
    &["acl", "token", "delete", "acc-1"],
    &["acl", "token", "self"],
    &["kv", "get", "a/b"],
    &["kv", "put", "a/b", "v"],
    &["kv", "delete", "a/b"],
    &["kv", "list"],
    &["watch"],
    &["acl", "tsig-key", "put", "ops.key", "--accessor", "acc-1"],
    &["acl", "tsig-key", "list"],
    &["acl", "dns-client", "put", "office", "--cidr", "10.0.0.0/8"],
    &["acl", "dns-client", "list"],
    &["acl", "dns-client", "get", "office"],
    &["acl", "dns-client", "delete", "office"],
    &["acl", "tsig-key", "get", "ops.key"],
    &["acl", "tsig-key", "delete", "ops.key"],
    &["blacklist", "list"],
    &["blacklist", "add", "service:web", "--reason", "r"],
    &["blacklist", "remove", "cidr:10.0.0.0/8"],
];

#[test]
fn every_subcommand_that_calls_the_api_takes_a_token() {
    for args in API_SUBCOMMANDS {
        let with_token = [*args, &["--token", "s3cret"]].concat();
        let cmd = parse(&with_token);
        let client = client_of(&cmd).unwrap_or_else(|| panic!("{args:?} has no API flags"));
        assert_eq!(
            client.secret().unwrap().as_deref(),
            Some("s3cret"),
            "{args:?}"
        );
    }
}

#[test]
fn a_token_file_is_read_and_trimmed_and_errors_never_show_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "  s3cret-from-file\n").unwrap();
    let path = file.to_str().unwrap();
    let cmd = parse(&["services", "--token-file", path]);
    let secret = client_of(&cmd).unwrap().secret().unwrap();
    assert_eq!(secret.as_deref(), Some("s3cret-from-file"));

    std::fs::write(&file, " \n").unwrap();
    let cmd = parse(&["services", "--token-file", path]);
    let err = client_of(&cmd).unwrap().secret().unwrap_err().to_string();
    assert!(err.contains("is empty") && err.contains(path), "{err}");

    let err = try_parse(&["services", "--token", "s3cret-flag", "--token-file", path])
        .err()
        .expect("one source of the token at a time")
        .to_string();
    assert!(
        err.contains("--token-file") && !err.contains("s3cret-flag"),
        "{err}"
    );

    // No token at all: nothing is sent.
    let cmd = parse(&["services"]);
    if std::env::var_os("MAXINE_TOKEN").is_none() && std::env::var_os("MAXINE_TOKEN_FILE").is_none()
    {
        assert_eq!(client_of(&cmd).unwrap().secret().unwrap(), None);
    }
}

#[test]
fn urls_are_built_under_the_api_base_with_names_encoded() {
    let cmd = parse(&["services", "--api", "http://127.0.0.1:8080"]);
    let c = client_of(&cmd).unwrap();
    assert_eq!(
        c.url(&["v1", "acl", "policies", "a b/c"]).unwrap().as_str(),
        "http://127.0.0.1:8080/v1/acl/policies/a%20b%2Fc"
    );
    let cmd = parse(&["services", "--api", "https://lb.example:443/maxine/"]);
    assert_eq!(
        client_of(&cmd)
            .unwrap()
            .url(&["v1", "acl", "token", "self"])
            .unwrap()
            .as_str(),
        "https://lb.example/maxine/v1/acl/token/self"
    );
    let cmd = parse(&["services", "--api", "not a url"]);
    assert!(client_of(&cmd).unwrap().url(&["v1"]).is_err());
}

#[test]
fn policy_put_sends_the_rules_as_json_inline_or_from_a_file() {
    let Command::Acl(AclCommand::Policy(PolicyCommand::Put(a))) = parse(&[
        "acl",
        "policy",
        "put",
        "ops",
        "--rules",
        r#"{"service": {"payments": "write"}}"#,
        "--description",
        "operators",
    ]) else {
        panic!("not policy put");
    };
    assert_eq!(a.name, "ops");
    assert_eq!(
        acl::policy_body(&a).unwrap(),
        json!({"description": "operators", "rules": {"service": {"payments": "write"}}})
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.json");
    std::fs::write(&file, "[{\"service\": \"*\", \"policy\": \"read\"}]\n").unwrap();
    let Command::Acl(AclCommand::Policy(PolicyCommand::Put(a))) = parse(&[
        "acl",
        "policy",
        "put",
        "readers",
        "--rules",
        file.to_str().unwrap(),
    ]) else {
        panic!("not policy put");
    };
    assert_eq!(
        acl::policy_body(&a).unwrap(),
        json!({"rules": [{"service": "*", "policy": "read"}]}),
        "no description given, none sent"
    );

    std::fs::write(&file, "service = 'read'").unwrap();
    let err = format!("{:#}", acl::policy_body(&a).unwrap_err());
    assert!(
        err.contains("not JSON") && err.contains("rules.json"),
        "{err}"
    );
    let Command::Acl(AclCommand::Policy(PolicyCommand::Put(a))) = parse(&[
        "acl",
        "policy",
        "put",
        "x",
        "--rules",
        "/nonexistent/rules.json",
    ]) else {
        panic!("not policy put");
    };
    assert!(acl::policy_body(&a).is_err());

    assert!(
        try_parse(&["acl", "policy", "put", "ops"]).is_err(),
        "--rules is required"
    );
    assert!(
        try_parse(&["acl", "policy", "get", ""]).is_err(),
        "a name is not empty"
    );
}

#[test]
fn token_create_sends_only_the_fields_given() {
    let Command::Acl(AclCommand::Token(TokenCommand::Create(a))) = parse(&[
        "acl",
        "token",
        "create",
        "--description",
        "ci",
        "--policy",
        "ops",
        "--policy",
        "read",
        "--service",
        "payments",
        "--expires-in",
        "24h",
        "--max-instances",
        "3",
    ]) else {
        panic!("not token create");
    };
    assert_eq!(
        acl::token_body(&a),
        json!({
            "description": "ci",
            "policies": ["ops", "read"],
            "service": "payments",
            "expires_in": "24h",
            "max_instances": 3
        })
    );
    let Command::Acl(AclCommand::Token(TokenCommand::Create(a))) =
        parse(&["acl", "token", "create"])
    else {
        panic!("not token create");
    };
    assert_eq!(acl::token_body(&a), json!({}));

    let err = try_parse(&["acl", "token", "create", "--expires-in", "soon"])
        .err()
        .expect("a bad duration fails before anything is sent")
        .to_string();
    assert!(err.contains("24h"), "{err}");
    assert!(try_parse(&["acl", "token", "create", "--max-instances", "many"]).is_err());
}

#[test]
fn token_and_policy_subcommands_parse_their_names() {
    assert!(matches!(
        parse(&["acl", "token", "self"]),
        Command::Acl(AclCommand::Token(TokenCommand::Current(_)))
    ));
    let Command::Acl(AclCommand::Token(TokenCommand::Delete(a))) =
        parse(&["acl", "token", "delete", "acc-7"])
    else {
        panic!("not token delete");
    };
    assert_eq!(a.accessor, "acc-7");
    let Command::Acl(AclCommand::Policy(PolicyCommand::Delete(a))) =
        parse(&["acl", "policy", "delete", "ops"])
    else {
        panic!("not policy delete");
    };
    assert_eq!(a.name, "ops");
    assert!(
        try_parse(&["acl", "token", "get"]).is_err(),
        "an accessor is required"
    );
    assert!(try_parse(&["acl", "token", "rotate"]).is_err());
}

#[test]
fn audit_verify_takes_a_directory_and_no_api_flags() {
    let Command::Audit(audit::AuditCommand::Verify(a)) =
        parse(&["audit", "verify", "/var/lib/maxine/audit"])
    else {
        panic!("not audit verify");
    };
    assert_eq!(a.dir, std::path::Path::new("/var/lib/maxine/audit"));
    assert!(try_parse(&["audit", "verify"]).is_err());
    assert!(try_parse(&["audit", "verify", "d", "--token", "x"]).is_err());
}

/// Every subcommand, by its path of names (`["acl", "token", "create"]`).
fn all_commands(
    cmd: &clap::Command,
    path: Vec<String>,
    out: &mut Vec<(Vec<String>, clap::Command)>,
) {
    for sub in cmd.get_subcommands() {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        all_commands(sub, p.clone(), out);
        out.push((p, sub.clone()));
    }
}

#[test]
fn every_argument_of_every_subcommand_has_help_and_says_its_variable_and_default_once() {
    use clap::CommandFactory;
    let mut cmds = Vec::new();
    all_commands(&Cli::command(), Vec::new(), &mut cmds);
    assert!(cmds.len() > 20, "{} subcommands", cmds.len());
    for (path, cmd) in cmds {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            assert!(
                arg.get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty()),
                "maxine {} {id} has no help text",
                path.join(" ")
            );
        }
        let help = cmd.clone().render_long_help().to_string();
        for line in help.lines() {
            for tag in ["[env:", "[default:"] {
                assert!(
                    line.matches(tag).count() <= 1,
                    "maxine {}: {tag} twice in {line:?}",
                    path.join(" ")
                );
            }
        }
    }
}

#[test]
fn serve_help_lists_every_setting_by_its_variable() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    let serve = cli.find_subcommand_mut("serve").unwrap();
    let help = serve.render_long_help().to_string();
    for s in maxine::config::SETTINGS {
        assert!(help.contains(s.env), "serve --help lacks {}", s.env);
        if let Some(flag) = s.flag() {
            assert!(
                help.contains(&format!("--{flag}")),
                "serve --help lacks --{flag}"
            );
        }
    }
}

#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    use std::ffi::OsStr;
    assert!(log_colours(None, true));
    assert!(!log_colours(None, false), "not a terminal");
    assert!(!log_colours(Some(OsStr::new("1")), true), "NO_COLOR=1");
    assert!(
        log_colours(Some(OsStr::new("")), true),
        "an empty NO_COLOR does not count"
    );
}

#[test]
fn blacklist_targets_become_their_api_paths() {
    use super::blacklist::segments;
    assert_eq!(segments("service:web").unwrap(), ["services", "web"]);
    assert_eq!(
        segments("instance:web/web-1").unwrap(),
        ["instances", "web", "web-1"]
    );
    assert_eq!(segments("cidr:fd00::/8").unwrap(), ["cidrs", "fd00::/8"]);
    let cmd = parse(&["services", "--api", "http://127.0.0.1:8080"]);
    let path = [
        &["v1", "blacklist"][..],
        &segments("cidr:10.0.0.0/8").unwrap(),
    ]
    .concat();
    assert_eq!(
        client_of(&cmd).unwrap().url(&path).unwrap().as_str(),
        "http://127.0.0.1:8080/v1/blacklist/cidrs/10.0.0.0%2F8"
    );
    for bad in ["web", "service:", "instance:web", "instance:/x", "host:web"] {
        let err = segments(bad).unwrap_err().to_string();
        assert!(err.contains(bad), "{bad}: {err}");
    }
}
