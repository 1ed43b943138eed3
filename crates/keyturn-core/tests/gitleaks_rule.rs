//! Checks the gitleaks rule shipped in docs/gitleaks.toml against generated tokens. The `regex`
//! crate implements the RE2 syntax that gitleaks (Go's `regexp`) uses, and the rule relies on
//! nothing outside that common subset.

use keyturn_core::{KeyId, TokenFormat};
use rand_core::OsRng;

fn rule() -> regex::Regex {
    let text = include_str!("../../../docs/gitleaks.toml");
    let line = text.lines().find(|line| line.starts_with("regex = ")).expect("the rule file has a regex line");
    let pattern = line.trim_start_matches("regex = ").trim_matches('\'');
    regex::Regex::new(pattern).expect("the rule's regex compiles")
}

#[test]
fn gitleaks_rule_matches_generated_tokens() {
    let rule = rule();
    for prefix in ["kt_live", "kt_test"] {
        let format = TokenFormat::new(prefix).unwrap();
        for _ in 0..500 {
            let token = format.generate(&KeyId::generate(&mut OsRng), &mut OsRng);
            let text = token.expose();
            for context in [text.to_owned(), format!("API_KEY={text}\n"), format!("\"Bearer {text}\"")] {
                let found = rule.captures(&context).and_then(|captures| captures.get(1)).map(|m| m.as_str());
                assert_eq!(found, Some(text), "the rule must find the whole token in {:?}", &context[..12]);
            }
        }
    }
}

#[test]
fn gitleaks_rule_skips_truncated_and_extended_tokens() {
    let rule = rule();
    let token = TokenFormat::default().generate(&KeyId::generate(&mut OsRng), &mut OsRng);
    let text = token.expose();
    assert!(!rule.is_match(&text[..text.len() - 1]));
    assert!(!rule.is_match(&format!("{text}x")));
    assert!(!rule.is_match(&format!("x{text}")));
    assert!(!rule.is_match(&text.replacen("kt_live", "kt_prod", 1)));
}
