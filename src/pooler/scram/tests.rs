//! SCRAM exchanges against rust-postgres's client, passthrough, RFC 7677, bad input.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::*;

fn verifier(password: &[u8]) -> Verifier {
    Verifier::parse(&postgres_protocol::password::scram_sha_256(password)).unwrap()
}

/// rust-postgres's client against our server: the server's verdict, and the client must
/// accept our server-final whenever the server accepted it.
fn login(
    server: &mut ServerExchange,
    password: &[u8],
    binding: ChannelBinding,
) -> Result<ClientKey, ScramError> {
    let mut client = ScramSha256::new(password, binding);
    let server_first = server.client_first(MECHANISM, client.message())?;
    client.update(&server_first).unwrap();
    let (server_final, client_key) = server.client_final(client.message())?;
    client.finish(&server_final).unwrap();
    Ok(client_key)
}

#[test]
fn right_password_from_a_real_client_succeeds_with_either_gs2_header() {
    for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let mut server = ServerExchange::new(verifier(b"pw"), new_nonce());
        assert!(login(&mut server, b"pw", binding).is_ok());
    }
}

#[test]
fn wrong_password_from_a_real_client_is_wrong_password() {
    let mut server = ServerExchange::new(verifier(b"pw"), new_nonce());
    assert_eq!(
        login(&mut server, b"pW", ChannelBinding::unsupported()).unwrap_err(),
        ScramError::WrongPassword
    );
}

#[test]
fn recovered_client_key_logs_in_to_postgresql_by_passthrough() {
    let verifier = verifier(b"pw");
    let mut from_client = ServerExchange::new(verifier.clone(), new_nonce());
    let client_key = login(&mut from_client, b"pw", ChannelBinding::unsupported()).unwrap();

    let mut postgres = ServerExchange::new(verifier.clone(), "srv".into());
    let mut pooler = ClientExchange::new(client_key.clone(), verifier.server_key(), "cli".into());
    assert_eq!(pooler.client_first_message(), b"n,,n=,r=cli");
    let server_first = postgres
        .client_first(MECHANISM, &pooler.client_first_message())
        .unwrap();
    let client_final = pooler.server_first(&server_first).unwrap();
    let (server_final, seen_by_postgres) = postgres.client_final(&client_final).unwrap();
    assert_eq!(seen_by_postgres, client_key);
    assert!(
        !pooler.is_complete(),
        "not complete before the server's proof"
    );
    assert_eq!(pooler.server_final(&server_final), Ok(()));
    assert!(pooler.is_complete());
    assert!(
        pooler.server_final(&server_final).is_err(),
        "a finished exchange takes no more messages"
    );
}

#[test]
fn passthrough_rejects_a_server_that_cannot_prove_the_server_key() {
    let verifier = verifier(b"pw");
    let wrong_server_key = [7; 32];
    let client_key = {
        let mut server = ServerExchange::new(verifier.clone(), new_nonce());
        login(&mut server, b"pw", ChannelBinding::unsupported()).unwrap()
    };
    let mut postgres = ServerExchange::new(verifier, "srv".into());
    let mut pooler = ClientExchange::new(client_key, wrong_server_key, "cli".into());
    let server_first = postgres
        .client_first(MECHANISM, &pooler.client_first_message())
        .unwrap();
    let (server_final, _) = postgres
        .client_final(&pooler.server_first(&server_first).unwrap())
        .unwrap();
    assert!(matches!(
        pooler.server_final(&server_final),
        Err(ScramError::Protocol(_))
    ));
    assert!(
        !pooler.is_complete(),
        "a failed proof never completes the exchange"
    );
}

#[test]
fn rfc_7677_test_vector() {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let verifier = Verifier::from_password(b"pencil", &salt, 4096);
    let mut server = ServerExchange::new(verifier, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into());
    let server_first = server
        .client_first(MECHANISM, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    assert_eq!(
        String::from_utf8(server_first).unwrap(),
        format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    );
    let client_final = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    let (server_final, _) = server.client_final(client_final.as_bytes()).unwrap();
    assert_eq!(
        server_final,
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn verifiers_parse_postgresql_format_and_nothing_else() {
    let v = verifier(b"pw");
    assert_eq!(Verifier::parse(&v.to_rolpassword()), Some(v.clone()));
    assert!(!format!("{v:?}").contains(&BASE64.encode(v.server_key())));
    let key = BASE64.encode([1u8; 32]);
    for bad in [
        "md5d1bd5b8a7b3ba3c5d8ab4ba7d9e6c9a4".to_owned(),
        "pw".to_owned(),
        format!("SCRAM-SHA-256$0:c2FsdA==${key}:{key}"),
        format!("SCRAM-SHA-256$x:c2FsdA==${key}:{key}"),
        format!("SCRAM-SHA-256$4096:${key}:{key}"),
        format!("SCRAM-SHA-256$4096:!!${key}:{key}"),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}:c2FsdA=="),
        format!("SCRAM-SHA-256$4096:c2FsdA==${key}"),
        format!("SCRAM-SHA-1$4096:c2FsdA==${key}:{key}"),
    ] {
        assert_eq!(Verifier::parse(&bad), None, "{bad}");
    }
}

#[test]
fn malformed_client_messages_are_protocol_errors() {
    let first_cases: &[(&str, &[u8])] = &[
        ("SCRAM-SHA-256-PLUS", b"p=tls-server-end-point,,n=,r=abc"),
        ("SCRAM-SHA-1", b"n,,n=,r=abc"),
        (MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
        (MECHANISM, b"n,a=admin,n=,r=abc"),
        (MECHANISM, b"x,,n=,r=abc"),
        (MECHANISM, b"n,,m=ext,n=,r=abc"),
        (MECHANISM, b"n,,r=abc"),
        (MECHANISM, b"n,,n=,r="),
        (MECHANISM, b"n,,n="),
        (MECHANISM, b"n,,n=,r=a\x01b"),
        (MECHANISM, b""),
        (MECHANISM, b"n"),
    ];
    for (mechanism, data) in first_cases {
        let mut server = ServerExchange::new(verifier(b"pw"), "srv".into());
        let error = server.client_first(mechanism, data).unwrap_err();
        assert!(matches!(error, ScramError::Protocol(_)), "{data:?}");
    }
    let proof = BASE64.encode([0u8; 32]);
    let final_cases = [
        format!("c=eSws,r=clisrv,p={proof}"),
        format!("c=biws,r=cliXXX,p={proof}"),
        format!("r=clisrv,p={proof}"),
        format!("c=biws,r=clisrv,p={}", BASE64.encode([0u8; 31])),
        "c=biws,r=clisrv,p=!!".to_owned(),
        "c=biws,r=clisrv".to_owned(),
        String::new(),
    ];
    for data in final_cases {
        let mut server = ServerExchange::new(verifier(b"pw"), "srv".into());
        server.client_first(MECHANISM, b"n,,n=,r=cli").unwrap();
        assert!(
            matches!(
                server.client_final(data.as_bytes()),
                Err(ScramError::Protocol(_))
            ),
            "{data}"
        );
    }
    let mut server = ServerExchange::new(verifier(b"pw"), "srv".into());
    assert!(matches!(
        server.client_final(b"c=biws"),
        Err(ScramError::Protocol(_))
    ));
    assert!(
        server.client_first(MECHANISM, b"n,,n=,r=cli").is_err(),
        "an exchange ends at its first error"
    );
}

#[test]
fn malformed_server_messages_are_protocol_errors() {
    let server_first_cases: &[&[u8]] = &[
        b"r=other,s=c2FsdA==,i=4096",
        b"r=cli,s=c2FsdA==,i=4096",
        b"r=clisrv,s=!!,i=4096",
        b"r=clisrv,s=c2FsdA==,i=0",
        b"r=clisrv,s=c2FsdA==",
        b"m=ext,r=clisrv,s=c2FsdA==,i=4096",
        b"",
    ];
    for data in server_first_cases {
        let mut client = ClientExchange::new(ClientKey::new([1; 32]), [2; 32], "cli".into());
        assert!(
            matches!(client.server_first(data), Err(ScramError::Protocol(_))),
            "{data:?}"
        );
    }
    for data in [&b"e=invalid-proof"[..], b"v=!!", b"", b"x=1"] {
        let mut client = ClientExchange::new(ClientKey::new([1; 32]), [2; 32], "cli".into());
        client.server_first(b"r=clisrv,s=c2FsdA==,i=4096").unwrap();
        assert!(
            matches!(client.server_final(data), Err(ScramError::Protocol(_))),
            "{data:?}"
        );
    }
}

#[test]
fn mock_exchange_looks_real_and_always_fails() {
    let key = MockKey::new([5; 32]);
    for password in [&b"pw"[..], b""] {
        let mut mock = ServerExchange::with_secret(key.mock("nobody"), new_nonce());
        assert_eq!(
            login(&mut mock, password, ChannelBinding::unsupported()).unwrap_err(),
            ScramError::WrongPassword
        );
    }
    let salt_of = |user: &str| {
        let first = ServerExchange::with_secret(key.mock(user), "srv".into())
            .client_first(MECHANISM, b"n,,n=,r=cli")
            .unwrap();
        String::from_utf8(first).unwrap()
    };
    assert_eq!(salt_of("nobody"), salt_of("nobody"));
    assert_ne!(salt_of("nobody"), salt_of("somebody"));
    assert!(salt_of("nobody").ends_with(",i=4096"));
    // Shaped like a real verifier's: same salt length, same iterations.
    let real = ServerExchange::new(verifier(b"pw"), "srv".into())
        .client_first(MECHANISM, b"n,,n=,r=cli")
        .map(|m| String::from_utf8(m).unwrap())
        .unwrap();
    assert_eq!(salt_of("nobody").len(), real.len());
    // Another key (another installation) gives other salts.
    let other = MockKey::new([6; 32]).mock("nobody");
    assert_ne!(other.verifier(), key.mock("nobody").verifier());
}

/// rust-postgres's client choosing -PLUS with `client_binding`, against a server whose TLS
/// connection has `server_binding`.
fn login_plus(
    password: &[u8],
    server_binding: &[u8],
    client_binding: &[u8],
) -> Result<ClientKey, ScramError> {
    let mut server = ServerExchange::new(verifier(password), new_nonce())
        .with_channel_binding(std::sync::Arc::from(server_binding));
    assert_eq!(super::mechanisms(true), [MECHANISM_PLUS, MECHANISM]);
    let mut client = ScramSha256::new(
        password,
        ChannelBinding::tls_server_end_point(client_binding.to_vec()),
    );
    let server_first = server.client_first(MECHANISM_PLUS, client.message())?;
    client.update(&server_first).unwrap();
    let (server_final, client_key) = server.client_final(client.message())?;
    client.finish(&server_final).unwrap();
    Ok(client_key)
}

#[test]
fn plus_succeeds_only_with_the_servers_own_certificate_hash() {
    let ours = [7u8; 32];
    assert!(login_plus(b"pw", &ours, &ours).is_ok());
    // A man in the middle terminates TLS with its own certificate: the hashes differ.
    assert!(matches!(
        login_plus(b"pw", &ours, &[8u8; 32]),
        Err(ScramError::Protocol(_))
    ));
}

#[test]
fn plus_offered_still_accepts_plain_scram_but_not_a_downgrade() {
    let binding: std::sync::Arc<[u8]> = std::sync::Arc::from(&[7u8; 32][..]);
    // A client without channel binding support ("n") logs in as before.
    let mut server =
        ServerExchange::new(verifier(b"pw"), new_nonce()).with_channel_binding(binding.clone());
    assert!(login(&mut server, b"pw", ChannelBinding::unsupported()).is_ok());
    // "y": the client could bind but was told the server cannot — someone stripped -PLUS.
    let mut server =
        ServerExchange::new(verifier(b"pw"), new_nonce()).with_channel_binding(binding.clone());
    assert!(matches!(
        login(&mut server, b"pw", ChannelBinding::unrequested()),
        Err(ScramError::Protocol(_))
    ));
    // -PLUS with another binding type, or a "p=" header without -PLUS.
    for (mechanism, data) in [
        (MECHANISM_PLUS, &b"p=tls-unique,,n=,r=abc"[..]),
        (MECHANISM_PLUS, b"n,,n=,r=abc"),
        (MECHANISM, b"p=tls-server-end-point,,n=,r=abc"),
    ] {
        let mut server =
            ServerExchange::new(verifier(b"pw"), new_nonce()).with_channel_binding(binding.clone());
        assert!(
            server.client_first(mechanism, data).is_err(),
            "{mechanism} {data:?}"
        );
    }
    // Without TLS, -PLUS is neither offered nor accepted.
    let mut plain = ServerExchange::new(verifier(b"pw"), new_nonce());
    assert_eq!(super::mechanisms(false), [MECHANISM]);
    assert!(plain
        .client_first(MECHANISM_PLUS, b"p=tls-server-end-point,,n=,r=abc")
        .is_err());
}
