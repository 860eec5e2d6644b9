//! Errors over gRPC: the core's errors as tonic statuses, and fix-ups of the codes tonic itself
//! gives to bad requests.

use super::Error;

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        err.log_if_internal();
        tonic::Status::new(err.grpc_code(), err.message().to_owned())
    }
}

/// The status for a request whose bytes are not the message they claim to be: the client's
/// input is wrong, not the server, so INVALID_ARGUMENT (prost's message says what is wrong).
pub fn undecodable_request(e: prost::DecodeError) -> tonic::Status {
    tonic::Status::invalid_argument(format!("cannot decode the request: {e}"))
}

/// Fixes two of tonic's codes for bad requests, on every response of the gRPC server. An
/// over-limit request comes out as OUT_OF_RANGE; gRPC's convention (grpc-go, grpc-core) and our
/// contract is RESOURCE_EXHAUSTED. A request that is not valid protobuf (garbage bytes, invalid
/// UTF-8 in a string, a Struct nested past prost's recursion limit) comes out as INTERNAL, which
/// tells the client the server is broken; it is INVALID_ARGUMENT, as [`undecodable_request`].
pub fn fix_bad_request_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    // grpc-message is percent-encoded on the wire: let tonic decode it.
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    let code = match status.code() {
        tonic::Code::OutOfRange if status.message().contains("message length too large") => "8",
        tonic::Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            "3"
        }
        _ => return response,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
    response
}
