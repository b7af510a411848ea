//! The web config file: a good file in each shape, and each mistake's one-line message naming
//! the file, the key, the cause and the fix.

use super::*;

/// The test certificates (tests/data/web/README.md), where a web config file beside them would be.
fn beside_certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/web/web.yml")
}

fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
    WebConfig::parse(&beside_certs(), text)
}

/// The message of a file that must be refused; it is one line naming the file.
fn refused(text: &str) -> String {
    let message = match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(err) => err.to_string(),
    };
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with(&format!("--web-config-file {}: ", beside_certs().display())),
        "{message}"
    );
    message
}

const TLS: &str = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
const TOKEN: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

#[test]
fn a_file_with_tls_users_and_tokens() {
    let hash = bcrypt::hash("secret", 4).unwrap();
    let text = format!(
        "# as node_exporter takes it\n{TLS}basic_auth_users:\n  alice: {hash}\nbearer_tokens_sha256:\n  - {TOKEN}\n"
    );
    let config = parse(&text).unwrap();
    assert!(config.tls.is_some());
    assert_eq!(
        config.describe(),
        "TLS, 1 user (basic auth), 1 bearer token"
    );
    assert_eq!(config.tls.unwrap().alpn_protocols, [b"http/1.1".to_vec()]);
}

#[test]
fn paths_are_relative_to_the_file_or_absolute() {
    let dir = beside_certs().parent().unwrap().to_path_buf();
    let text = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: ./key.pem\n",
        dir.join("cert.pem").display()
    );
    assert!(parse(&text).unwrap().tls.is_some());
    // Elsewhere, the same relative names are not found.
    let err = WebConfig::parse(Path::new("/nonexistent/web.yml"), TLS).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read /nonexistent/cert.pem"),
        "{err}"
    );
}

#[test]
fn an_empty_file_turns_nothing_on_and_tls_alone_needs_no_credentials() {
    for text in ["", "# nothing yet\n", "{}\n"] {
        let config = parse(text).unwrap();
        assert!(config.tls.is_none() && config.credentials.is_none());
        assert_eq!(config.describe(), "no TLS, no authentication");
    }
    let config = parse(TLS).unwrap();
    assert_eq!(config.describe(), "TLS, no authentication");
    let users_only = parse(&format!(
        "basic_auth_users:\n  bob: {}\n",
        bcrypt::hash("x", 4).unwrap()
    ));
    assert_eq!(
        users_only.unwrap().describe(),
        "no TLS, 1 user (basic auth), 0 bearer tokens"
    );
}

#[test]
fn client_certificates_are_verified_or_refused() {
    let mtls =
        format!("{TLS}  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n");
    assert_eq!(
        parse(&mtls).unwrap().describe(),
        "TLS, client certificates required, no authentication"
    );
    let if_given = mtls.replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven");
    assert!(parse(&if_given)
        .unwrap()
        .describe()
        .contains("checked if given"));
    let message = refused(&mtls.replace("RequireAndVerifyClientCert", "RequireAnyClientCert"));
    assert!(
        message.contains(
            "tls_server_config.client_auth_type: \"RequireAnyClientCert\" is not supported"
        ) && message.contains("use RequireAndVerifyClientCert"),
        "{message}"
    );
    let message = refused(&format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n"
    ));
    assert!(message.contains("needs client_ca_file"), "{message}");
    let message = refused(&format!("{TLS}  client_ca_file: ca.pem\n"));
    assert!(message.contains("add client_auth_type"), "{message}");
    let message = refused(&mtls.replace("client_ca_file: ca.pem", "client_ca_file: key.pem"));
    assert!(
        message.contains("tls_server_config.client_ca_file: "),
        "{message}"
    );
}

#[test]
fn unreadable_or_wrong_files_name_the_key_and_the_file() {
    let message = refused(&TLS.replace("cert.pem", "missing.pem"));
    assert!(
        message.contains("tls_server_config.cert_file: cannot read ")
            && message.contains("missing.pem")
            && message.contains("give a PEM certificate"),
        "{message}"
    );
    let message = refused(&TLS.replace("cert.pem", "README.md"));
    assert!(
        message.contains("README.md holds no PEM certificate"),
        "{message}"
    );
    let message = refused(&TLS.replace("key.pem", "cert.pem"));
    assert!(
        message.contains("tls_server_config.key_file: "),
        "{message}"
    );
    let message = refused(&TLS.replace("key.pem", "other-key.pem"));
    assert!(
        message.contains("other-key.pem does not match the certificate in")
            && message.contains("give the private key of cert_file's certificate"),
        "{message}"
    );
    let err = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
    assert_eq!(
        err.to_string().split(" (").next().unwrap(),
        "--web-config-file /nonexistent/web.yml: cannot read it"
    );
}

#[test]
fn bad_yaml_and_unknown_keys_are_named() {
    let message = refused("tls_server_config: [\n");
    assert!(message.contains("exporter-toolkit"), "{message}");
    let message = refused("basic_auth_user:\n  alice: x\n");
    assert!(
        message.contains("unknown field `basic_auth_user`"),
        "{message}"
    );
    let message = refused(&format!("{TLS}  min_version: TLS13\n"));
    assert!(message.contains("unknown field `min_version`"), "{message}");
    let message = refused("http_server_config:\n  http2: false\n");
    assert!(
        message.contains("unknown field `http_server_config`"),
        "{message}"
    );
    let message = refused("tls_server_config:\n  cert_file: cert.pem\n");
    assert!(message.contains("missing field `key_file`"), "{message}");
}

#[test]
fn bad_hashes_and_digests_name_the_user_and_the_fix() {
    let message = refused("basic_auth_users:\n  alice: secret\n");
    assert!(
        message.contains("basic_auth_users.alice: not a bcrypt hash")
            && message.contains("htpasswd -nBC 10 alice"),
        "{message}"
    );
    let slow = bcrypt::hash("secret", 4)
        .unwrap()
        .replacen("$04$", "$14$", 1);
    let message = refused(&format!("basic_auth_users:\n  alice: \"{slow}\"\n"));
    assert!(message.contains("bcrypt cost 14 is over 12"), "{message}");
    let hash = bcrypt::hash("secret", 4).unwrap();
    let message = refused(&format!("basic_auth_users:\n  \"a:b\": \"{hash}\"\n"));
    assert!(
        message.contains("basic_auth_users.a:b: a user name"),
        "{message}"
    );
    for digest in ["abc", &TOKEN.replace('2', "g"), &format!("{TOKEN}00")] {
        let message = refused(&format!("bearer_tokens_sha256: [\"{digest}\"]\n"));
        assert!(
            message.contains("bearer_tokens_sha256[0]: not 64 hex digits")
                && message.contains("sha256sum"),
            "{message}"
        );
    }
}
