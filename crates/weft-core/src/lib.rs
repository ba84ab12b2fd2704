//! weft-core
