//! Stable identifiers.
//!
//! A block id is derived from its file id and its index in the file, so a block's
//! file is known from the id alone: `block = file << 24 | index`. That leaves 40 bits
//! of file ids (10^12 files) and 2^24 blocks per file (1 PiB at 64 MiB blocks).

use crate::error::{Error, Result};
use std::fmt;

/// Bits of a block id that hold the block's index in its file.
pub const BLOCK_INDEX_BITS: u32 = 24;
/// Largest file id that still fits a block id.
pub const MAX_FILE_ID: u64 = (1 << (64 - BLOCK_INDEX_BITS)) - 1;
/// Largest number of blocks in one file.
pub const MAX_BLOCKS_PER_FILE: u64 = 1 << BLOCK_INDEX_BITS;

/// Smallest block size the protocol accepts: below it, per-block costs (a file per
/// block, an RPC per block) dominate.
pub const MIN_BLOCK_SIZE: u64 = 4 << 10;
/// Largest block size the protocol accepts; a worker reserves this much tier space
/// per block being written.
pub const MAX_BLOCK_SIZE: u64 = 64 << 30;

/// Checks a block size from the wire against the protocol's bounds.
pub fn check_block_size(field: &str, size: u64) -> Result<u64> {
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
        return Err(Error::invalid_argument(
            field,
            format!("{size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE} bytes"),
        ));
    }
    Ok(size)
}

/// Id of an inode (file or directory). The root is 1; 0 means "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u64);

impl FileId {
    /// The root directory.
    pub const ROOT: FileId = FileId(1);
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Id of a block: the file's id and the block's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u64);

impl BlockId {
    /// The id of block `index` of `file`.
    pub fn new(file: FileId, index: u64) -> Result<BlockId> {
        if file.0 > MAX_FILE_ID {
            return Err(Error::internal(format!(
                "file id {} too large for block ids",
                file.0
            )));
        }
        if index >= MAX_BLOCKS_PER_FILE {
            return Err(Error::invalid_argument(
                "length",
                format!("a file may hold at most {MAX_BLOCKS_PER_FILE} blocks"),
            ));
        }
        Ok(BlockId((file.0 << BLOCK_INDEX_BITS) | index))
    }

    /// The file this block belongs to.
    pub fn file(self) -> FileId {
        FileId(self.0 >> BLOCK_INDEX_BITS)
    }

    /// The block's index in its file.
    pub fn index(self) -> u64 {
        self.0 & (MAX_BLOCKS_PER_FILE - 1)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Id the master gives a worker when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Number of blocks a file of `length` bytes has at `block_size`.
pub fn block_count(length: u64, block_size: u64) -> u64 {
    length.div_ceil(block_size.max(1))
}

/// `N` random bytes from the kernel (`/dev/urandom`): ids that must not collide
/// between clusters, journals or client instances.
pub fn random_bytes<const N: usize>() -> crate::Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| crate::Error::internal(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_id_round_trips() {
        let b = BlockId::new(FileId(12345), 77).unwrap();
        assert_eq!(b.file(), FileId(12345));
        assert_eq!(b.index(), 77);
        assert!(BlockId::new(FileId(MAX_FILE_ID + 1), 0).is_err());
        assert!(BlockId::new(FileId(1), MAX_BLOCKS_PER_FILE).is_err());
        assert_eq!(block_count(0, 10), 0);
        assert_eq!(block_count(10, 10), 1);
        assert_eq!(block_count(11, 10), 2);
    }
}
