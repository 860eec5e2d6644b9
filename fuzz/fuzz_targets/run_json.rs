//! JSON → Run decoding (the HTTP API's CreateRun body). What decodes must also serialize, and
//! survive the protobuf round trip the store does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use runledger::api::Run;

fuzz_target!(|data: &[u8]| {
    let Ok(run) = serde_json::from_slice::<Run>(data) else {
        return;
    };
    let _ = serde_json::to_vec(&run).expect("a decoded run serializes");
    let bytes = run.encode_to_vec();
    let back = Run::decode(bytes.as_slice()).expect("our own encoding decodes");
    assert_eq!(back, run);
});
