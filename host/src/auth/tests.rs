#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn grant(name: &str, role: Role, protocols: &[&str]) -> Caller {
    let protocols = protocols.iter().map(|p| p.to_string()).collect();
    Caller::Token(Arc::new(Grant { name: name.into(), role, protocols }))
}

#[test]
fn each_role_may_do_what_the_table_says_and_nothing_else() {
    let all = [Action::Submit, Action::Read, Action::Cancel, Action::Serve, Action::ListProtocols, Action::Observe];
    let client = grant("c", Role::Client, &[]);
    let provider = grant("p", Role::Provider, &["text/v1"]);
    let admin = grant("a", Role::Admin, &[]);
    let allowed = |caller: &Caller| all.iter().filter(|a| caller.may(**a).is_ok()).copied().collect::<Vec<_>>();
    assert_eq!(allowed(&client), [Action::Submit, Action::Read, Action::Cancel, Action::ListProtocols]);
    assert_eq!(allowed(&provider), [Action::Serve, Action::ListProtocols]);
    assert_eq!(allowed(&admin), all);
    assert_eq!(allowed(&Caller::Anyone), all);
    let refused = client.may(Action::Serve).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "a client token may not serve protocols; that needs a token of role provider or admin"
    );
}

#[test]
fn a_provider_serves_only_its_protocols_and_clients_see_only_their_own() {
    let provider = grant("p", Role::Provider, &["text/v1"]);
    assert!(provider.may_serve("text/v1").is_ok());
    let refused = provider.may_serve("llm/v1").unwrap_err();
    assert!(matches!(refused, AuthError::ProtocolNotGranted { .. }), "{refused}");
    assert!(grant("a", Role::Admin, &[]).may_serve("llm/v1").is_ok());
    assert!(grant("c", Role::Client, &[]).may_serve("text/v1").is_err());

    let alice = grant("alice", Role::Client, &[]);
    assert!(alice.sees(Some("alice")));
    assert!(!alice.sees(Some("bob")));
    assert!(!alice.sees(None), "a workflow submitted with auth off is the admins'");
    assert!(grant("a", Role::Admin, &[]).sees(Some("bob")));
    assert_eq!(alice.owner().as_deref(), Some("alice"));
    assert_eq!(Caller::Anyone.owner(), None);
}

#[test]
fn created_tokens_authenticate_until_revoked_and_only_hashes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let local = ensure_local_token(dir.path()).unwrap();
    assert_eq!(ensure_local_token(dir.path()).unwrap(), local, "the local token is made once");
    let tokens = Tokens::new(&[], &local, dir.path()).unwrap();
    assert!(matches!(tokens.authenticate(Some(&local)).unwrap(), Caller::Token(g) if g.role == Role::Admin));
    assert_eq!(tokens.authenticate(None).unwrap_err(), AuthError::NoToken);
    assert_eq!(tokens.authenticate(Some("gzt_nope")).unwrap_err(), AuthError::UnknownToken);

    let secret = create_token(dir.path(), "worker", Role::Provider, vec!["text/v1".into()]).unwrap();
    let Caller::Token(worker) = tokens.authenticate(Some(&secret)).unwrap() else { panic!("anyone") };
    assert_eq!((worker.name.as_str(), worker.role), ("worker", Role::Provider));
    let file = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
    assert!(!file.contains(&secret) && file.contains("sha256:"), "{file}");

    let taken = create_token(dir.path(), "worker", Role::Client, vec![]).unwrap_err();
    assert!(matches!(taken, TokensFileError::DuplicateName { .. }));
    revoke_token(dir.path(), "worker").unwrap();
    assert_eq!(tokens.authenticate(Some(&secret)).unwrap_err(), AuthError::UnknownToken);
    assert!(list_tokens(dir.path()).unwrap().is_empty());
}

#[test]
fn bad_token_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let no_protocol = create_token(dir.path(), "p", Role::Provider, vec![]).unwrap_err();
    assert!(no_protocol.to_string().contains("names no protocol"), "{no_protocol}");
    let client_protocol = create_token(dir.path(), "c", Role::Client, vec!["x/v1".into()]).unwrap_err();
    assert!(client_protocol.to_string().contains("only provider tokens"), "{client_protocol}");
    let bad_name = create_token(dir.path(), "a b", Role::Client, vec![]).unwrap_err();
    assert!(bad_name.to_string().contains("must be 1 to 64"), "{bad_name}");
    let reserved = create_token(dir.path(), LOCAL_TOKEN_NAME, Role::Client, vec![]).unwrap_err();
    assert!(reserved.to_string().contains("local admin token"), "{reserved}");
}

#[cfg(unix)]
#[test]
fn the_local_token_file_is_private_and_an_exposed_one_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ensure_local_token(&data).unwrap();
    let path = data.join(LOCAL_TOKEN_FILE);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = read_local_token(&data).unwrap_err();
    assert!(matches!(exposed, TokensFileError::Exposed { mode: 0o644, .. }), "{exposed}");
}

#[test]
fn browsers_may_come_only_from_the_hosts_own_pages_or_listed_origins() {
    let listed = vec!["https://dash.example.com/".to_owned()];
    assert!(origin_allowed("http://127.0.0.1:8000", 8000, &[]));
    assert!(origin_allowed("http://localhost:8000", 8000, &[]));
    assert!(!origin_allowed("http://localhost:9999", 8000, &[]));
    assert!(!origin_allowed("http://evil.example:8000", 8000, &[]), "a rebound name is not the host's");
    assert!(!origin_allowed("null", 8000, &[]));
    assert!(origin_allowed("https://dash.example.com", 8000, &listed));
}

#[test]
fn the_local_token_goes_only_to_loopback_hosts() {
    use crate::client::is_loopback_url;
    for url in ["http://127.0.0.1:8000", "http://localhost:8000/", "ws://[::1]:8000", "http://127.0.0.2:1"] {
        assert!(is_loopback_url(url), "{url}");
    }
    for url in [
        "http://example.com:8000",
        "http://10.0.0.1:8000",
        "http://localhost.evil.example:80",
        "http://[2001:db8::1]:80",
    ] {
        assert!(!is_loopback_url(url), "{url}");
    }
}
