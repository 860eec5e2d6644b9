//! The ListRuns / ListExperiments `filter` parser, and evaluating what it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runledger::api::{Experiment, Run, RuntimeState};
use runledger::query::filter::Filter;
use runledger::wkt::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = Filter::parse::<Run>(text) {
        let run = Run {
            run_id: "r".into(),
            display_name: "name".into(),
            state: RuntimeState::Running as i32,
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            ..Default::default()
        };
        let _ = filter.matches(&run);
        let _ = filter.matches(&Run::default());
    }
    if let Ok(filter) = Filter::parse::<Experiment>(text) {
        let _ = filter.matches(&Experiment::default());
    }
});
