//! The zstd 0.9 functions sled 0.34 calls, with one compression context per thread.
//!
//! sled compresses every page update on its own with `zstd::block::compress`, and zstd 0.9
//! creates a new libzstd context for each call. Creating one runs the `cpuid` instruction three
//! times (libzstd looks up BMI2 support per context), and in a virtual machine every `cpuid`
//! traps to the hypervisor: ~5 µs each on the machine of BENCHMARKS.md, where context creation
//! took 12% of the server's CPU under CreateRun load, more than any other function outside the
//! kernel (a create changes 19 keys, each a compressed page update). Here each thread keeps its compression context and reuses it.
//! Nothing stored changes: a frame is compressed at the level sled asks for, with its content
//! size in the header, and any zstd frame decompresses with any context.
//!
//! Decompression keeps a new context per call, as before: reads run on many threads (the
//! readers, the scan and blocking pools), and a context kept by each of them would hold its
//! buffers for as long as the thread lives.
//!
//! The workspace's `[patch.crates-io]` puts this crate in place of zstd 0.9; sled is its only
//! user in the dependency tree, and this crate has exactly the functions sled calls.

use std::io;

fn error(code: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

/// Whole-buffer compression and decompression (sled's page updates and snapshots).
pub mod block {
    use std::cell::RefCell;
    use std::io;

    use zstd_safe::CCtx;

    thread_local! {
        /// This thread's compression context, created at its first compression.
        static CONTEXT: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    }

    /// Compresses `data` into one zstd frame at `level` (0: zstd's default).
    pub fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
        let mut frame = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        let reused = CONTEXT.try_with(|context| {
            context
                .try_borrow_mut()
                .map(|mut context| compress_with(&mut context, &mut frame, data, level))
        });
        match reused {
            Ok(Ok(result)) => result?,
            // The thread is exiting (its context is gone), or a compression is already under way
            // on it: a context of this call's own.
            _ => compress_with(&mut CCtx::create(), &mut frame, data, level)?,
        }
        Ok(frame)
    }

    fn compress_with(
        context: &mut CCtx<'static>,
        frame: &mut Vec<u8>,
        data: &[u8],
        level: i32,
    ) -> io::Result<()> {
        // ZSTD_compressCCtx resets every parameter but the level, as a new context would have.
        context
            .compress(frame, data, level)
            .map(drop)
            .map_err(super::error)
    }

    /// Decompresses the frame `data`, whose content is at most `capacity` bytes (more is an
    /// error).
    pub fn decompress(data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
        let mut content = Vec::with_capacity(capacity);
        zstd_safe::decompress(&mut content, data).map_err(super::error)?;
        Ok(content)
    }
}

/// Decompression of a reader's whole content (sled's page reads).
pub mod stream {
    use std::io::{self, Read};

    use zstd_safe::{DCtx, InBuffer, OutBuffer};

    /// Decompresses every zstd frame `source` holds, one after another. An incomplete last frame
    /// is an error.
    pub fn decode_all<R: Read>(mut source: R) -> io::Result<Vec<u8>> {
        let mut input = Vec::new();
        source.read_to_end(&mut input)?;
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let mut content = Vec::with_capacity(first_frame_size_hint(&input));
        let mut context = DCtx::create();
        let mut unread = InBuffer::around(&input);
        loop {
            if content.len() == content.capacity() {
                content.reserve(DCtx::out_size());
            }
            let (position, capacity) = (content.len(), content.capacity());
            let mut out = OutBuffer::around_pos(&mut content, position);
            let frame_left = context
                .decompress_stream(&mut out, &mut unread)
                .map_err(super::error)?;
            let room_left = out.pos() < capacity;
            let all_read = unread.pos == input.len();
            if frame_left == 0 && all_read {
                return Ok(content);
            }
            if frame_left != 0 && all_read && room_left {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "incomplete zstd frame",
                ));
            }
        }
    }

    /// The content size the first frame's header states, within reason (a damaged header must
    /// not make us reserve gigabytes up front; the buffer grows as content arrives).
    fn first_frame_size_hint(input: &[u8]) -> usize {
        let stated = zstd_safe::get_frame_content_size(input);
        let reasonable = (input.len() as u64).saturating_mul(64).max(4096);
        // Unknown or unreadable sizes are u64::MAX and u64::MAX - 1.
        usize::try_from(stated.min(reasonable)).unwrap_or(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::{block, stream};

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 97) as u8).collect()
    }

    #[test]
    fn a_compressed_block_decompresses_to_what_was_compressed() {
        for len in [0, 1, 100, 5_000, 300_000] {
            let data = sample(len);
            let frame = block::compress(&data, 1).unwrap();
            assert_eq!(block::decompress(&frame, len).unwrap(), data, "{len} bytes");
            assert_eq!(stream::decode_all(&frame[..]).unwrap(), data, "{len} bytes");
        }
    }

    #[test]
    fn a_reused_context_compresses_each_block_on_its_own() {
        // A large block then a small one on the same thread: the second frame must not depend on
        // the first (sled decompresses them separately, in any order).
        let large = sample(200_000);
        let small = b"a small page update".to_vec();
        let first = block::compress(&large, 5).unwrap();
        let second = block::compress(&small, 1).unwrap();
        assert_eq!(stream::decode_all(&second[..]).unwrap(), small);
        assert_eq!(stream::decode_all(&first[..]).unwrap(), large);
    }

    #[test]
    fn compression_works_on_many_threads_at_once() {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let data = sample(1_000 + t * 100 + i);
                        let frame = block::compress(&data, 1).unwrap();
                        assert_eq!(stream::decode_all(&frame[..]).unwrap(), data);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn decode_all_reads_frames_one_after_another() {
        let (a, b) = (sample(10_000), sample(3));
        let mut frames = block::compress(&a, 1).unwrap();
        frames.extend(block::compress(&b, 1).unwrap());
        assert_eq!(stream::decode_all(&frames[..]).unwrap(), [a, b].concat());
    }

    #[test]
    fn decode_all_refuses_an_incomplete_frame() {
        let frame = block::compress(&sample(10_000), 1).unwrap();
        let error = stream::decode_all(&frame[..frame.len() - 5]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn decode_all_refuses_bytes_that_are_not_zstd() {
        assert!(stream::decode_all(&b"not a zstd frame at all"[..]).is_err());
    }

    #[test]
    fn block_decompress_refuses_content_larger_than_its_capacity() {
        let frame = block::compress(&sample(1_000), 1).unwrap();
        assert!(block::decompress(&frame, 999).is_err());
    }
}
