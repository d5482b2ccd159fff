//! Commands that act on the database directly, beside `assay serve`: the
//! command line's side of features whose domain lives elsewhere.

pub mod keys;
