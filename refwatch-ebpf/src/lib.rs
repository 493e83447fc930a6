#![no_std]
// The programs live in the binary target; this library only lets refwatch depend on the crate
// so cargo rebuilds it when the programs change.
