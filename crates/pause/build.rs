//! Links corral-pause as a position-dependent executable.
//!
//! There is one pause per pod, so its private pages count hundreds of times on a node. A
//! position-independent executable has its relocated data (vtables, string pointers) written
//! at start-up, which makes those pages private copies in every pause (about 20 KiB here);
//! linked at a fixed address they stay clean pages of the file, shared by every pause. The
//! pause takes no input once started (it only waits for signals), so address randomisation of
//! its own code protects nothing. (A static binary would also drop libc's and the dynamic
//! loader's private pages, but the musl target is not installable offline and cargo cannot
//! give glibc's `crt-static` to one binary only.)

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
