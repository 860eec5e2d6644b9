//! `#[every_backend]`: writes an async integration test once and runs it on every store
//! backend. Re-exported by `runledger-testkit`; see its README.
//!
//! ```ignore
//! #[every_backend]
//! async fn creates_a_run() {
//!     let server = TestServer::start().await; // on the backend of this instance
//!     // ...
//! }
//! ```
//!
//! becomes a module `creates_a_run` holding the body and two `#[tokio::test]`s, `sled` and
//! `postgres`, each running the body under `crate::common::on_backend(Backend::X, "name",
//! body)`. So the test crate must have `mod common;` with `on_backend` and `Backend { Sled,
//! Postgres }` (runledger's tests/common does); `cargo test sled` or `cargo test postgres`
//! picks one backend. Plain token handling, no syn: the item must be `async fn name() { ... }`,
//! with any attributes (doc comments) before it.

use proc_macro::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};

/// The name the test's body gets inside its module.
const BODY: &str = "the_test";

#[proc_macro_attribute]
pub fn every_backend(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error("#[every_backend] takes no arguments");
    }
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let Some(fn_at) = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Ident(i) if i.to_string() == "fn"))
    else {
        return error("#[every_backend] goes on an `async fn name() { ... }`");
    };
    let is_async =
        fn_at > 0 && matches!(&tokens[fn_at - 1], TokenTree::Ident(i) if i.to_string() == "async");
    let name = match tokens.get(fn_at + 1) {
        Some(TokenTree::Ident(name)) if is_async => name.clone(),
        _ => return error("#[every_backend] goes on an `async fn name() { ... }`"),
    };
    tokens[fn_at + 1] = TokenTree::Ident(Ident::new(BODY, name.span()));
    let body: TokenStream = tokens.into_iter().collect();
    let test = name.to_string();
    let instances: String = ["Sled", "Postgres"]
        .iter()
        .map(|backend| {
            format!(
                "#[::tokio::test]\n\
                 async fn {}() {{\n\
                     crate::common::on_backend(crate::common::Backend::{backend}, {test:?}, {BODY}()).await\n\
                 }}\n",
                backend.to_lowercase()
            )
        })
        .collect();
    let module: TokenStream = format!("#[allow(unused_imports)] use super::*;\n{instances}")
        .parse()
        .expect("generated tokens parse");
    let mut inner = body;
    inner.extend(module);
    let mut out: TokenStream = "mod".parse().expect("`mod` parses");
    out.extend([
        TokenTree::Ident(name),
        TokenTree::Group(Group::new(Delimiter::Brace, inner)),
    ]);
    out
}

fn error(message: &str) -> TokenStream {
    let mut out: TokenStream = format!("::core::compile_error!({message:?});")
        .parse()
        .expect("compile_error parses");
    out = out
        .into_iter()
        .map(|mut t| {
            t.set_span(Span::call_site());
            t
        })
        .collect();
    out
}
