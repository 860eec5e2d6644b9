//! The `sort_by` parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runledger::api::{Experiment, Run};
use runledger::query::sort::Sort;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Sort::parse::<Run>(text);
    let _ = Sort::parse::<Experiment>(text);
});
