//! The `--auth-config` file (TOML): principals with the SHA-256 of their bearer token, an
//! optional trusted header set by an auth proxy, and grants. Parsed and validated up front, with
//! errors that name the line and the field.
//!
//! ```toml
//! [[principals]]
//! name = "alice"
//! token_sha256 = "<64 hex digits: `runledger auth hash-token`>"
//! groups = ["ml"]
//!
//! [trusted_header]
//! name = "kubeflow-userid"
//! prefix = "accounts.google.com:"
//! from = ["127.0.0.1/32"]
//!
//! [[grants]]
//! who = "group:ml"        # or a principal's name
//! namespace = "team-a"    # or "*": every namespace
//! role = "editor"         # viewer | executor | editor | admin
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use crate::service::access::Role;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    principals: Vec<PrincipalEntry>,
    trusted_header: Option<TrustedHeaderEntry>,
    #[serde(default)]
    grants: Vec<GrantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: Spanned<String>,
    token_sha256: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedHeaderEntry {
    name: Spanned<String>,
    #[serde(default)]
    prefix: String,
    from: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    who: Spanned<String>,
    namespace: String,
    role: Role,
}

/// A known principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalConfig {
    pub name: String,
    /// SHA-256 of its bearer token; None for principals that only come through the trusted
    /// header or a client certificate (listed for their groups).
    pub token_sha256: Option<[u8; 32]>,
    pub groups: Vec<String>,
}

/// The identity header an auth proxy sets, honoured only on connections from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedHeader {
    /// Lower-case header name.
    pub name: http::HeaderName,
    /// Stripped from the value; a value without it is refused.
    pub prefix: String,
    pub from: Vec<ipnet::IpNet>,
}

/// Who gets which role where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A principal's name, or `group:<name>`.
    pub who: String,
    /// None: every namespace (`"*"`).
    pub namespace: Option<String>,
    pub role: Role,
}

/// A validated auth configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub principals: Vec<PrincipalConfig>,
    pub trusted_header: Option<TrustedHeader>,
    pub grants: Vec<Grant>,
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn at<T>(text: &str, value: &Spanned<T>, field: &str, problem: impl std::fmt::Display) -> String {
    format!(
        "line {}: {field}: {problem}",
        line_of(text, value.span().start)
    )
}

fn hex_sha256(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl AuthConfig {
    /// Parses and validates a configuration; the error names the line and the field.
    pub fn parse(text: &str) -> Result<AuthConfig, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let mut names = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        let mut principals = Vec::new();
        for (i, p) in file.principals.into_iter().enumerate() {
            let field = |f: &str| format!("principals[{i}].{f}");
            let name = p.name.get_ref().trim();
            if name.is_empty() || name.starts_with("group:") {
                return Err(at(
                    text,
                    &p.name,
                    &field("name"),
                    "must be a non-empty name not starting with \"group:\"",
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(at(
                    text,
                    &p.name,
                    &field("name"),
                    format!("{name:?} is listed twice"),
                ));
            }
            let token_sha256 = match &p.token_sha256 {
                None => None,
                Some(hex) => {
                    let hash = hex_sha256(hex.get_ref().trim()).ok_or_else(|| {
                        at(
                            text,
                            hex,
                            &field("token_sha256"),
                            "must be 64 hex digits (the SHA-256 of the token, as `runledger \
                             auth hash-token` prints it)",
                        )
                    })?;
                    if !hashes.insert(hash) {
                        return Err(at(
                            text,
                            hex,
                            &field("token_sha256"),
                            "is the hash of another principal's token too",
                        ));
                    }
                    Some(hash)
                }
            };
            principals.push(PrincipalConfig {
                name: name.to_owned(),
                token_sha256,
                groups: p.groups,
            });
        }
        let trusted_header = match file.trusted_header {
            None => None,
            Some(t) => {
                let name = http::HeaderName::from_bytes(t.name.get_ref().trim().as_bytes())
                    .map_err(|_| {
                        at(
                            text,
                            &t.name,
                            "trusted_header.name",
                            "is not a valid HTTP header name",
                        )
                    })?;
                if name == http::header::AUTHORIZATION {
                    return Err(at(
                        text,
                        &t.name,
                        "trusted_header.name",
                        "cannot be authorization (bearer tokens use it)",
                    ));
                }
                let mut from = Vec::new();
                for (i, cidr) in t.from.iter().enumerate() {
                    let value = cidr.get_ref().trim();
                    let net = value
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            at(
                                text,
                                cidr,
                                &format!("trusted_header.from[{i}]"),
                                format!("{value:?} is not an address or CIDR (e.g. 10.0.0.0/8)"),
                            )
                        })?;
                    from.push(net);
                }
                if from.is_empty() {
                    return Err(at(
                        text,
                        &t.name,
                        "trusted_header.from",
                        "must list the proxy addresses (CIDRs) the header is honoured from",
                    ));
                }
                Some(TrustedHeader {
                    name,
                    prefix: t.prefix,
                    from,
                })
            }
        };
        let mut grants = Vec::new();
        for (i, g) in file.grants.into_iter().enumerate() {
            let who = g.who.get_ref().trim();
            let bare = who.strip_prefix("group:").unwrap_or(who);
            if bare.is_empty() {
                return Err(at(
                    text,
                    &g.who,
                    &format!("grants[{i}].who"),
                    "must be a principal's name or group:<name>",
                ));
            }
            grants.push(Grant {
                who: who.to_owned(),
                namespace: (g.namespace != "*").then_some(g.namespace),
                role: g.role,
            });
        }
        Ok(AuthConfig {
            principals,
            trusted_header,
            grants,
        })
    }

    /// What `runledger auth check-config` prints: principals and grants, one per line.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for p in &self.principals {
            out.push_str(&format!(
                "principal {} (token: {}, groups: [{}])\n",
                p.name,
                if p.token_sha256.is_some() {
                    "yes"
                } else {
                    "no"
                },
                p.groups.join(", ")
            ));
        }
        if let Some(t) = &self.trusted_header {
            let from: Vec<String> = t.from.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "trusted header {} (prefix {:?}) from [{}]\n",
                t.name,
                t.prefix,
                from.join(", ")
            ));
        }
        for g in &self.grants {
            out.push_str(&format!(
                "grant {} {} on namespace {}\n",
                g.who,
                g.role.name(),
                g.namespace
                    .as_deref()
                    .map_or("*".to_owned(), |ns| format!("{ns:?}"))
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_full_file_parses() {
        let text = format!(
            "[[principals]]\nname = \"alice\"\ntoken_sha256 = \"{HASH}\"\ngroups = [\"ml\"]\n\
             [trusted_header]\nname = \"kubeflow-userid\"\nprefix = \"p:\"\nfrom = [\"127.0.0.1/32\", \"::1\"]\n\
             [[grants]]\nwho = \"group:ml\"\nnamespace = \"*\"\nrole = \"viewer\"\n"
        );
        let config = AuthConfig::parse(&text).unwrap();
        assert_eq!(config.principals[0].groups, vec!["ml"]);
        assert_eq!(config.grants[0].namespace, None);
        assert_eq!(config.trusted_header.unwrap().from.len(), 2);
    }

    #[test]
    fn bad_files_name_the_line_and_field() {
        let cases = [
            (
                "[[principals]]\nname = \"a\"\ntoken_sha256 = \"abc\"\n",
                "line 3: principals[0].token_sha256",
            ),
            (
                "[[grants]]\nwho = \"a\"\nnamespace = \"x\"\nrole = \"owner\"\n",
                "line 4",
            ),
            (
                "[trusted_header]\nname = \"x-user\"\nfrom = [\"nonsense\"]\n",
                "line 3: trusted_header.from[0]",
            ),
            (
                "[[principals]]\nname = \"a\"\n[[principals]]\nname = \"a\"\n",
                "line 4: principals[1].name",
            ),
            ("[[principalz]]\n", "unknown field"),
        ];
        for (text, expected) in cases {
            let err = AuthConfig::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
